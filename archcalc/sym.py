"""Dimensions and counts: plain ints, or sympy expressions once a symbol exists.

sympy is imported only by ``symbol()``, i.e. only when a spec leaves a
variable unbound, so a numeric table never pays for it.
"""
from __future__ import annotations

import sys
from typing import Any, Union

Num = Union[int, Any]  # int, or a sympy expression


def symbol(name: str):
    import sympy
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


def degree(x) -> int:
    """An upper bound of a formula's total degree in its symbols (C**2*H**2: 4;
    floor(C/2): 1), from its tree: cheap, unlike sympy's polynomial degree."""
    x = norm(x)
    if isinstance(x, (int, float)):
        return 0
    memo: dict = {}

    def deg(e) -> int:
        if e in memo:
            return memo[e]
        if e.is_Symbol:
            d = 1
        elif e.is_Number or not e.args:
            d = 0
        elif e.is_Pow and e.exp.is_Integer:
            d = abs(int(e.exp)) * deg(e.base)
        elif e.is_Mul:
            d = sum(deg(a) for a in e.args)
        else:  # Add, floor, ceiling, Max, Min: the largest argument
            d = max(deg(a) for a in e.args)
        memo[e] = d
        return d
    return deg(x)


def _simplify(x):
    """sympy's factored form, under a budget: factoring a large polynomial can
    take unbounded time, so large formulas (or a slow factoring, cut off after
    ARCHCALC_SIMPLIFY_MS) keep the expanded form, which is equally correct."""
    from . import limits
    if degree(x) > 16 or _size(x) > 400:
        return x
    try:
        with _deadline(limits.SIMPLIFY_MS.value / 1000):
            return _sympy().factor(x)
    except _Timeout:
        return x
    except Exception:  # pragma: no cover - sympy quirks; the raw form is correct
        return x


def _size(x) -> int:
    """Nodes in a formula's tree (stops counting past 10,000)."""
    n, stack = 0, [x]
    while stack and n < 10_000:
        e = stack.pop()
        n += 1
        stack.extend(e.args)
    return n


class _Timeout(Exception):
    pass


class _deadline:
    """Interrupts pure-Python work after ``seconds`` (SIGALRM; main thread only,
    elsewhere the size checks above are the only bound)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.armed = False

    def __enter__(self):
        import signal
        import threading
        if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
            def _raise(signum, frame):
                raise _Timeout()
            self.previous = signal.signal(signal.SIGALRM, _raise)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            self.armed = True
        return self

    def __exit__(self, *exc):
        if self.armed:
            import signal
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False


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
