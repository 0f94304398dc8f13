"""archcalc: architecture analyzer and shape/FLOP calculator for CNNs.

    >>> import archcalc
    >>> spec = archcalc.load("specs/vgg16.toml")
    >>> report = spec.analyze(batch=32, dtype="bf16")
    >>> report.totals["params"]
    138357544

The analysis core is pure Python; torch, pandas and sympy load only where a
command or a method needs them.
"""
from .errors import SpecError  # noqa: F401

__version__ = "0.1.0"


def load(path: str, **variables):
    """Read a spec; keyword arguments bind its variables (``C=64``)."""
    from .spec.loader import load as _load
    spec = _load(path)
    if variables:
        from dataclasses import replace
        from types import MappingProxyType
        spec = replace(spec, vars=MappingProxyType({**spec.vars, **variables}))
    return spec
