"""Values the command line and the Python API read alike, with one rule each:
--set bindings (NAME=VALUE), the MODULE:FACTORY form of an import target, and
"fp16 needs a GPU". Pure Python: nothing here imports torch, so `archcalc
table` can tell a spec path from an import target without loading it."""
from __future__ import annotations

import math
import os
import re

from .errors import SpecError

_INTEGER = re.compile(r"[+-]?\d+")
_ATTRIBUTE = re.compile(r"[A-Za-z_][\w.]*")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def parse_sets(values) -> dict:
    """--set NAME=VALUE: an integer (0 and up: a size, a count, a 0/1 switch for
    `when`), or a finite positive float (a width multiplier such as 1.1)."""
    from .limits import parse_int
    from .spec.expr import check_identifier
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.isidentifier():
            raise SpecError(f"--set takes NAME=VALUE, e.g. --set C=256. Received: {item[:60]!r}")
        check_identifier(name, "--set: the name")
        try:
            number = parse_int(value, f"--set {name}") if _INTEGER.fullmatch(value) \
                else float(value)
        except ValueError:
            raise SpecError(f"--set {name}: the value must be a number. "
                            f"Received: {value[:60]!r}") from None
        check_value(name, number, "--set", shown=repr(value[:60]))
        out[name] = number
    return out


def check_variables(variables: dict, where: str) -> dict:
    """Bindings given as Python values (archcalc.load(path, C=64)): the same
    rules as --set, each name an identifier and each value a number."""
    from .spec.expr import check_identifier
    for name, number in variables.items():
        check_identifier(name, f"{where}: the name")
        if not isinstance(number, (int, float)):
            raise SpecError(f"{where} {name}: the value must be a number. "
                            f"Received: {repr(number)[:60]}")
        check_value(name, number, where)
    return variables


def check_value(name: str, number, where: str, shown: str | None = None) -> None:
    """A variable's value: an integer of 0 and up (a size, a count, a 0/1
    switch), or a finite positive float (a width multiplier)."""
    if isinstance(number, float) and not (math.isfinite(number) and number > 0):
        raise SpecError(f"{where} {name}: a float must be finite and positive. "
                        f"Received: {repr(number) if shown is None else shown}")
    if number < 0:
        raise SpecError(f"{where} {name}: the value must not be negative. Received: {number}")


def is_import_target(text: str) -> bool:
    """MODULE:FACTORY or FILE.py:NAME (not a spec file that exists)."""
    if not isinstance(text, str) or ":" not in text or os.path.exists(text):
        return False
    where, _, attr = text.rpartition(":")
    return bool(where) and bool(_ATTRIBUTE.fullmatch(attr)) and (
        where.endswith(".py") or bool(_MODULE.fullmatch(where)))


def refuse_fp16_on_cpu(option: str, dtypes, on_cpu: bool, needs: str = "a GPU",
                       instead: str = "bf16") -> None:
    """fp16 is a GPU dtype (a CPU's fp16 kernels are emulated): bench --amp,
    predict --amp (with a CPU profile) and calibrate --tables refuse it alike."""
    if on_cpu and any(d and d.startswith("fp16") for d in dtypes):
        raise SpecError(f"{option} fp16 needs {needs}; on the CPU use {instead}")
