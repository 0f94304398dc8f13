"""A small safe evaluator for the expressions in specs (``"2*C"``).

The text is parsed with ``ast.parse`` and walked over a whitelist of nodes:
numbers, variable names, + - * / // % **, unary minus, comparisons,
``and``/``or``/``not``, ``a if cond else b`` and a few functions (``min``,
``max``, ``ceil_div``, ``make_divisible``, ``floor``, ``ceil``, ``round``,
``int``). Nothing is executed. Names are looked up in the spec's variables; a
variable declared unbound (``C = "?"``) is a sympy symbol there, so every
figure depending on it is a formula. Any other name is an error: a typo never
turns silently into a symbol.

Every step is bounded (``archcalc.limits``): the text's length and nesting,
the size of every intermediate value (digits of integers, degree of
formulas), so no spec can make the evaluator hang or fill memory.

Floats exist for width and depth multipliers (EfficientNet's 1.1, 1.2, ...),
computed as PyTorch's reference code computes them (IEEE doubles); a value
that must be an integer (a channel count) has to come out integral, or go
through ``floor``, ``ceil``, ``round``, ``int`` or ``make_divisible``.
"""
from __future__ import annotations

import ast
import functools
import math
import operator
import re
import unicodedata
from typing import Mapping

from .. import limits, sym
from ..errors import SpecError

UNBOUND = "?"
SYMBOLIC_STEPS = 20   # expansion steps per operation on a formula (unbound variables)

_ARITH = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}
_COMPARE = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
ALLOWED = ("numbers, names, + - * / // % **, comparisons, and/or/not, "
           "'a if cond else b', min, max, ceil_div, make_divisible, floor, ceil, round, int")


def _sym_min(*a):
    import sympy
    return sym.norm(sympy.Min(*a))


def make_divisible(v, divisor, min_value=None):
    """torchvision's ``_make_divisible`` (MobileNet, EfficientNet, RegNet):
    the nearest multiple of ``divisor``, at least ``min_value`` (default:
    the divisor), never more than 10% below ``v``."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# name -> (function, smallest and largest number of arguments, symbolic allowed)
_FUNCS = {
    "min": (lambda *a: min(a) if all(_is_number(x) for x in a) else _sym_min(*a), 1, 64, True),
    "max": (lambda *a: max(a) if all(_is_number(x) for x in a) else sym.smax(*a), 1, 64, True),
    "ceil_div": (sym.ceildiv, 2, 2, True),
    "make_divisible": (make_divisible, 2, 3, False),
    "floor": (math.floor, 1, 1, False),
    "ceil": (math.ceil, 1, 1, False),
    "round": (round, 1, 1, False),
    "int": (int, 1, 1, False),
}


def _is_number(x) -> bool:
    return isinstance(x, (int, float))


def evaluate(text: str, env: Mapping[str, sym.Num]) -> sym.Num:
    """An integer-valued expression (a channel count, a size): an int, or a
    sympy expression when it depends on unbound variables."""
    value = evaluate_value(text, env)
    if isinstance(value, bool):
        raise SpecError(f"in {text!r}: a comparison gives true or false, not an integer")
    if isinstance(value, float):
        if value != int(value):
            raise SpecError(f"in {text!r}: {value!r} is not an integer; round it with "
                            "floor(), ceil(), round(), int() or make_divisible()")
        return int(value)
    return value


def evaluate_value(text: str, env: Mapping[str, sym.Num]):
    """Any value an expression may have: int, float, bool or a sympy formula."""
    if not isinstance(text, str):
        raise SpecError(f"an expression must be a string. Received: {text!r}")
    limits.MAX_EXPR_CHARS.check(len(text), f"the expression {_short(text)}")
    if not text.isascii():
        # Python reads 'Xﬁ' as 'Xfi' (NFKC): a look-alike would silently name another variable
        char = next(c for c in text if not c.isascii())
        raise SpecError(f"in {_short(text)}: the character {char!r} (U+{ord(char):04X}) is "
                        "not ASCII; expressions are ASCII names, numbers and operators")
    body, depth, nodes = _parsed(text)
    limits.MAX_EXPR_DEPTH.check(depth, f"the expression {_short(text)} nests {depth} levels")
    limits.charge(nodes, f"expanding the spec (at the expression {_short(text)})")
    return _Evaluator(env, text).eval(body)


@functools.lru_cache(maxsize=4096)
def _parsed(text: str):
    """(tree body, depth, node count): parsed once per text, since a block
    called a thousand times evaluates the same few expressions (the tree is
    only read, never changed)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        raise SpecError(f"cannot read the expression {_short(text)}: it is not a valid "
                        f"expression (allowed: {ALLOWED})") from None
    except (RecursionError, MemoryError):
        raise limits.MAX_EXPR_DEPTH.exceeded(f"the expression {_short(text)}") from None
    depth, nodes = _depth(tree.body)
    return tree.body, depth, nodes


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_identifier(name, what: str) -> str:
    """A variable or argument name: ASCII letters, digits and underscores.
    Non-ASCII names are refused, not NFKC-folded: Python folds 'Xﬁ' to 'Xfi',
    so a look-alike would name another variable without a word."""
    if isinstance(name, str) and _IDENTIFIER.fullmatch(name):
        return name
    if isinstance(name, str) and not name.isascii():
        folded = unicodedata.normalize("NFKC", name)
        hint = f", which Python reads as {folded[:40]!r}" if folded != name else ""
        raise SpecError(f"{what} {name[:40]!r} is not an ASCII identifier{hint}; names are "
                        "ASCII letters, digits and underscores (at most 64)")
    shown = repr(name[:60]) if isinstance(name, str) else repr(name)[:60]
    raise SpecError(f"{what} {shown} is not an identifier (ASCII letters, digits and "
                    "underscores, at most 64, not starting with a digit)")


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _depth(node) -> tuple[int, int]:
    """Nesting depth and node count of an AST, without recursion (the tree
    may be deep)."""
    deepest, count, stack = 0, 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest, count = max(deepest, d), count + 1
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))
    return deepest, count


class _Evaluator:
    def __init__(self, env, text):
        self.env, self.text = env, text

    def fail(self, message) -> SpecError:
        return SpecError(f"in {_short(self.text)}: {message}")

    def checked(self, v):
        """Every intermediate value stays within the budget."""
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return limits.check_value(v, f"in {_short(self.text)}")
        if isinstance(v, float):
            if not math.isfinite(v):
                raise self.fail(f"the value {v!r} is not a finite number")
            if abs(v) >= 10.0 ** limits.MAX_VALUE_DIGITS.value:
                raise self.fail(f"the value {v:.3g} has more than "
                                f"{limits.MAX_VALUE_DIGITS.value} digits")
            return v
        # a sympy operation costs ~100 times an integer one: it counts as SYMBOLIC_STEPS
        limits.charge(SYMBOLIC_STEPS, f"expanding the spec (at the formula {_short(self.text)})")
        v = sym.norm(v)
        if isinstance(v, int):
            return limits.check_value(v, f"in {_short(self.text)}")
        degree = sym.degree(v)
        if degree > limits.MAX_DEGREE.value:
            raise limits.MAX_DEGREE.exceeded(f"in {_short(self.text)}: a formula of degree "
                                             f"{degree}")
        return v

    def eval(self, node):
        try:
            value = self._eval(node)
        except ZeroDivisionError:
            raise self.fail(f"{_unparse(node)!r} divides by zero") from None
        except OverflowError:
            raise self.fail(f"{_unparse(node)!r} is too large to compute") from None
        except (ValueError, TypeError, ArithmeticError) as e:
            raise self.fail(f"{_unparse(node)!r} cannot be computed "
                            f"({str(e)[:80] or 'invalid operands'})") from None
        return self.checked(value)

    def _eval(self, node):
        if isinstance(node, ast.Constant):
            if type(node.value) in (int, float):
                return node.value
            raise self.fail(f"{node.value!r} is not a number")
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.UnaryOp):
            v = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not self.truth(v)
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                self.no_bool(v, node)
                return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BoolOp):
            # short-circuit, as Python: `stride == 1 and C == out`
            want = isinstance(node.op, ast.Or)
            for value in node.values:
                if self.truth(self.eval(value)) == want:
                    return want
            return not want
        if isinstance(node, ast.IfExp):
            return self.eval(node.body if self.truth(self.eval(node.test)) else node.orelse)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(f"{_unparse(node)!r} is not allowed in a spec expression "
                        f"(allowed: {ALLOWED})")

    def name(self, name):
        if name in self.env:
            value = self.env[name]
            if isinstance(value, (str, list, dict)):
                raise self.fail(f"{name} is not a number")
            return value
        if name in _FUNCS:
            raise self.fail(f"{name} is a function; call it as {name}(...)")
        if name in ("true", "false", "True", "False"):
            return name in ("true", "True")
        known = ", ".join(sorted(k for k in self.env if isinstance(k, str))) or "none"
        if len(known) > 200:
            known = known[:200] + "..."
        raise self.fail(f"unknown variable {name!r} (variables: {known}); "
                        f"declare it under [vars]: {name} = 64, or {name} = \"?\" "
                        "to leave it unbound and get formulas")

    def no_bool(self, v, node):
        if isinstance(v, bool):
            raise self.fail(f"{_unparse(node)!r}: arithmetic on true/false; "
                            "use 'a if cond else b'")

    def truth(self, v) -> bool:
        if isinstance(v, (bool, int, float)):
            return bool(v)
        free = ", ".join(sorted(str(s) for s in v.free_symbols))
        raise self.fail(f"the condition depends on the unbound variable(s) {free}; "
                        "bind them with --set NAME=VALUE")

    def binop(self, node):
        a, b = self.eval(node.left), self.eval(node.right)
        self.no_bool(a, node)
        self.no_bool(b, node)
        op = type(node.op)
        if op in _ARITH:
            return _ARITH[op](a, b)
        if op is ast.Div:
            return self.divide(a, b)
        if op in (ast.FloorDiv, ast.Mod):
            if b == 0:
                raise self.fail("division by zero")
            if _is_number(a) and _is_number(b):
                return a // b if op is ast.FloorDiv else a % b
            return sym.floordiv(a, b) if op is ast.FloorDiv else sym.norm(a % b)
        if op is ast.Pow:
            return self.power(a, b)
        raise self.fail(f"the operator in {_unparse(node)!r} is not allowed "
                        f"(allowed: {ALLOWED})")

    def divide(self, a, b):
        if b == 0:
            raise self.fail("division by zero")
        if isinstance(a, int) and isinstance(b, int):
            if a % b:
                raise self.fail(f"{a}/{b} is not an integer; use // to round down")
            return a // b
        if isinstance(a, float) or isinstance(b, float):
            if not (_is_number(a) and _is_number(b)):
                raise self.fail("a float divided with an unbound variable; bind it first")
            return a / b
        return sym.exact_div(a, b)

    def power(self, a, b):
        if not isinstance(b, int):
            raise self.fail(f"the exponent must be an integer. Received: {b}")
        if b < 0 or b > 64:
            raise self.fail(f"exponent {b} is out of range (0..64)")
        # refuse before computing: the result's size is known beforehand
        if isinstance(a, int) and abs(a) > 1:
            digits = b * math.log10(abs(a))
            if digits > limits.MAX_VALUE_DIGITS.value:
                raise limits.MAX_VALUE_DIGITS.exceeded(
                    f"in {_short(self.text)}: {a}**{b} has about {digits:.0f} digits")
        elif isinstance(a, float) and abs(a) > 1:
            if b * math.log10(abs(a)) > limits.MAX_VALUE_DIGITS.value:
                raise self.fail(f"{a}**{b} is too large")
        elif not _is_number(a):
            degree = sym.degree(a) * b
            if degree > limits.MAX_DEGREE.value:
                raise limits.MAX_DEGREE.exceeded(
                    f"in {_short(self.text)}: a formula of degree {degree}")
        return a ** b

    def compare(self, node):
        left = self.eval(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = self.eval(right_node)
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise self.fail(f"the comparison in {_unparse(node)!r} is not allowed")
            if _is_number(left) and _is_number(right):
                result = fn(left, right)
            else:
                result = self.symbolic_compare(fn, left, right)
            if not result:
                return False
            left = right
        return True

    def symbolic_compare(self, fn, left, right) -> bool:
        """Decided only where the sign of the difference is known (C + 1 > C);
        otherwise the condition needs the variables bound."""
        diff = sym.norm(left - right)
        if isinstance(diff, int):
            return fn(diff, 0)
        if fn not in (operator.eq, operator.ne):
            try:
                return bool(fn(left, right))
            except TypeError:
                pass
        free = sorted({str(s) for v in (left, right) if not _is_number(v)
                       for s in v.free_symbols})
        raise self.fail(f"the comparison depends on the unbound variable(s) "
                        f"{', '.join(free)}; bind them with --set NAME=VALUE")

    def call(self, node):
        if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS):
            name = _unparse(node.func)
            raise self.fail(f"{name}() is not allowed in a spec expression "
                            f"(functions: {', '.join(_FUNCS)})")
        name = node.func.id
        fn, least, most, symbolic = _FUNCS[name]
        if node.keywords:
            raise self.fail(f"{name}() takes positional arguments only")
        n = len(node.args)
        if not least <= n <= most:
            want = str(least) if least == most else f"{least} to {most}"
            raise self.fail(f"{name}() takes {want} argument{'s' if most > 1 else ''}, "
                            f"received {n}")
        args = [self.eval(a) for a in node.args]
        for a in args:
            self.no_bool(a, node)
        if not symbolic and not all(_is_number(a) for a in args):
            raise self.fail(f"{name}() needs numbers; bind the unbound variables with --set")
        if name == "ceil_div":
            if args[1] == 0:
                raise self.fail("ceil_div() by zero")
            if isinstance(args[0], float) or isinstance(args[1], float):
                quotient = args[0] / args[1]
                if not math.isfinite(quotient):   # ceil_div(1e17, 1e-300)
                    raise self.fail(f"{_unparse(node)!r} is too large to compute")
                return math.ceil(quotient)
        if name == "make_divisible":
            if not (isinstance(args[1], int) and args[1] > 0):
                raise self.fail(f"make_divisible(v, d): d must be a positive integer. "
                                f"Received: d={args[1]!r}")
        return fn(*args)


def _unparse(node) -> str:
    try:
        return ast.unparse(node)[:60]
    except Exception:  # pragma: no cover - unparse of a valid tree does not fail
        return type(node).__name__


def resolve(value, env: Mapping[str, sym.Num]):
    """A spec value: strings are expressions, lists are resolved item by item."""
    if isinstance(value, str):
        return evaluate(value, env)
    if isinstance(value, list):
        return [resolve(v, env) for v in value]
    return value
