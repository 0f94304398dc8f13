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
    """A sum: ints added natively, formulas in one sympy Add (adding them one by
    one re-flattens the sum each time: quadratic over thousands of rows)."""
    whole, terms = 0, []
    for x in xs:
        if isinstance(x, int):
            whole += x
        else:
            terms.append(x)
    if not terms:
        return whole
    return norm(_sympy().Add(whole, *terms))


def known_positive(x: Num) -> bool | None:
    """True/False for ints; None when a symbolic sign cannot be decided."""
    if isinstance(x, int):
        return x > 0
    v = getattr(x, "is_positive", None)
    return v


def to_json(x: Num):
    x = norm(x)
    if isinstance(x, (int, float)):
        return x
    return _too_long(x) or str(_simplify(x))


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


_SIMPLIFY_SPENT = [0.0]   # CPU seconds spent factoring in this process


def _simplify(x):
    """sympy's factored form, under a budget: factoring can take unbounded time,
    so formulas with floors or max (nothing to factor), large ones, and any
    once ARCHCALC_SIMPLIFY_MS of CPU time has been spent in all keep the
    expanded form, which is equally correct."""
    import time

    from . import limits
    budget = limits.SIMPLIFY_MS.value / 1000
    left = budget - _SIMPLIFY_SPENT[0]
    if left <= 0 or degree(x) > 16 or size(x) > 400 or x.atoms(_sympy().Function):
        return x
    start = time.process_time()
    try:
        with deadline(left):
            return _sympy().factor(x)
    except Timeout:
        return x
    except Exception:  # pragma: no cover - sympy quirks; the raw form is correct
        return x
    finally:
        _SIMPLIFY_SPENT[0] += time.process_time() - start


def size(x, stop: int = 10_000) -> int:
    """Nodes in a formula's tree (counting stops at ``stop``)."""
    n, stack = 0, [x]
    while stack and n < stop:
        e = stack.pop()
        n += 1
        stack.extend(getattr(e, "args", ()))
    return n


def _too_long(x) -> str | None:
    """A placeholder for a formula too large to print in bounded time."""
    from . import limits
    cap = limits.MAX_FORMULA_NODES.value
    n = size(x, cap + 1)
    if n > cap:
        return (f"<formula of over {cap:,} terms: bind variables with --set, "
                f"or raise {limits.MAX_FORMULA_NODES.env}>")
    return None


class Timeout(Exception):
    """A deadline passed (see ``deadline``)."""


class deadline:
    """Interrupts pure-Python work (sympy) after ``seconds`` with Timeout.

    Counts the process's CPU time (ITIMER_PROF), so a busy machine does not
    make it fire early. Main thread only (elsewhere the size checks are the
    only bound). Nests: an inner deadline never outlives an outer one, and
    the outer one is re-armed with what is left of it on the way out."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.armed = False

    def __enter__(self):
        import signal
        import threading
        import time
        if not (hasattr(signal, "setitimer")
                and threading.current_thread() is threading.main_thread()):
            return self
        self.outer, _ = signal.getitimer(signal.ITIMER_PROF)
        self.start = time.process_time()

        def _raise(signum, frame):
            raise Timeout()
        self.previous = signal.signal(signal.SIGPROF, _raise)
        signal.setitimer(signal.ITIMER_PROF,
                         min(self.seconds, self.outer) if self.outer else self.seconds)
        self.armed = True
        return self

    def __exit__(self, *exc):
        if self.armed:
            import signal
            import time
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, self.previous)
            if self.outer:
                left = self.outer - (time.process_time() - self.start)
                signal.setitimer(signal.ITIMER_PROF, max(left, 0.001))
        return False


def fmt_int(x: Num) -> str:
    """1,234,567 for ints, the simplified formula otherwise."""
    x = norm(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.6g}"
    return _too_long(x) or str(_simplify(x)).replace("**", "^")


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
