"""archcalc: architecture analyzer and shape/FLOP calculator for CNNs.

    >>> import archcalc
    >>> spec = archcalc.load("specs/vgg16.toml")
    >>> report = spec.analyze(batch=32, dtype="bf16")
    >>> report.totals["params"]
    138357544

A PyTorch model imports into a spec (torch needed)::

    >>> import torchvision
    >>> spec = archcalc.from_module(torchvision.models.resnet50(), input=(3, 224, 224))
    >>> print(spec.to_toml())          # the spec's text, blocks and all

The analysis core is pure Python; torch, pandas and sympy load only where a
command or a method needs them.
"""
from .errors import SpecError  # noqa: F401

__version__ = "0.1.0"


def load(path: str, **variables):
    """Read a spec; keyword arguments bind its variables (``C=64``). A path
    that does not exist names a shipped spec as on the command line:
    ``archcalc.load("vgg16")`` or ``"specs/vgg16.toml"`` from any folder."""
    from .bundled import resolve
    from .spec.loader import load as _load
    spec = _load(resolve(path) if isinstance(path, str) else path)
    if variables:
        from dataclasses import replace
        from types import MappingProxyType

        from .options import check_variables
        check_variables(variables, "archcalc.load")
        spec = replace(spec, vars=MappingProxyType({**spec.vars, **variables}))
    return spec


def from_module(module, input=(3, 224, 224), *, name: str | None = None,
                source: str | None = None, strict: bool = False,
                allow_opaque: bool | None = None):
    """The spec of a ``torch.nn.Module`` (what ``archcalc import`` writes): traced
    with torch.fx at ``input`` (C, H, W), each call mapped to a kind, rows named
    by module paths (the built spec loads the module's state_dict), repeated
    structure folded into blocks. An operation without a kind becomes an opaque
    row (output shape, params and MACs measured on the module: the totals stay
    exact); ``strict=True`` raises ``archcalc.torch.importer.Unsupported``
    naming each instead. ``allow_opaque``: accepted, no effect (the default)."""
    from .errors import require
    require("torch", "torch", "archcalc.from_module")
    from .torch.importer import from_module as _from_module
    return _from_module(module, input, name=name, source=source, strict=strict)
