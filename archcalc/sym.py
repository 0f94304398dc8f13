"""Dimensions and counts: plain ints, or sympy expressions once a symbol exists.

sympy is imported only by ``symbol()``, i.e. only when a spec leaves a
variable unbound, so a numeric table never pays for it.
"""
from __future__ import annotations

import sys
from typing import Any, Union

Num = Union[int, Any]  # int, or a sympy expression


def symbol(name: str):
    from .errors import require
    sympy = require("sympy", "sym", f"a spec with the unbound variable {name!r} (its figures are "
                    "formulas)")
    return sympy.Symbol(name, integer=True, positive=True)


def is_symbolic(x) -> bool:
    return not isinstance(x, int)


def norm(x) -> Num:
    """A sympy expression that became a constant integer turns back into int."""
    if isinstance(x, (int, bool)):
        return int(x)
    if getattr(x, "is_Integer", False):
        return int(x)
    return x


def _sympy():
    # Only reached when an operand is already a sympy object, so it is loaded.
    return sys.modules["sympy"]


def floordiv(a: Num, b: Num) -> Num:
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return norm(_sympy().floor(a / b))


def ceildiv(a: Num, b: Num) -> Num:
    if isinstance(a, int) and isinstance(b, int):
        return -((-a) // b)
    return norm(_sympy().ceiling(a / b))


def exact_div(a: Num, b: Num) -> Num:
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return norm(a / b)


def smax(*xs: Num) -> Num:
    if all(isinstance(x, int) for x in xs):
        return max(xs)
    return norm(_sympy().Max(*xs))


def prod(xs) -> Num:
    out: Num = 1
    for x in xs:
        out = out * x
    return norm(out)


def total(xs) -> Num:
    out: Num = 0
    for x in xs:
        out = out + x
    return norm(out)


def known_positive(x: Num) -> bool | None:
    """True/False for ints; None when a symbolic sign cannot be decided."""
    if isinstance(x, int):
        return x > 0
    v = getattr(x, "is_positive", None)
    return v


def to_json(x: Num):
    x = norm(x)
    return x if isinstance(x, int) else str(_simplify(x))


def _simplify(x):
    try:
        return _sympy().factor(x)
    except Exception:  # pragma: no cover - sympy quirks; the raw form is correct
        return x


def fmt_int(x: Num) -> str:
    """1,234,567 for ints, the simplified formula otherwise."""
    x = norm(x)
    if isinstance(x, int):
        return f"{x:,}"
    return str(_simplify(x)).replace("**", "^")


def plain(x: Num) -> str:
    """An int without separators, or the formula: for arithmetic such as (3*3*64)*128."""
    x = norm(x)
    return str(x) if isinstance(x, int) else "(" + fmt_int(x) + ")"


def human(x: Num, unit: str = "") -> str:
    """15.2M, 138M, 1.5G: decimal prefixes (K = 10^3, M = 10^6, G = 10^9)."""
    x = norm(x)
    if not isinstance(x, int):
        return fmt_int(x)
    for div, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K")):
        if abs(x) >= div:
            v = x / div
            s = f"{v:.1f}" if v < 100 else f"{v:.0f}"
            return f"{s.rstrip('0').rstrip('.') if '.' in s else s}{suffix}{unit}"
    return f"{x}{unit}"


def human_bytes(x: Num) -> str:
    """Bytes in decimal units (MB = 10^6 bytes), as the lectures write them."""
    x = norm(x)
    if not isinstance(x, int):
        return fmt_int(x) + " B"
    for div, suffix in ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB")):
        if abs(x) >= div:
            v = x / div
            return (f"{v:.1f}" if v < 100 else f"{v:.0f}") + " " + suffix
    return f"{x} B"
