"""A small safe evaluator for integer expressions in specs (``"2*C"``).

The text is parsed with ``ast.parse`` and walked over a whitelist of nodes:
integer literals, variable names, + - * / // % **, unary minus, parentheses
and ``min``/``max``/``ceil_div``. Nothing is executed. Names are looked up in
the spec's variables; a variable declared unbound (``C = "?"``) is a sympy
symbol there, so every figure depending on it is a formula. Any other name is
an error: a typo never turns silently into a symbol.
"""
from __future__ import annotations

import ast
import operator
from typing import Mapping

from .. import sym
from ..errors import SpecError

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: sym.floordiv,
    ast.Mod: operator.mod,
}
_FUNCS = {
    "min": lambda *a: min(a) if all(isinstance(x, int) for x in a) else _sym_min(*a),
    "max": sym.smax,
    "ceil_div": sym.ceildiv,
}


def _sym_min(*a):
    import sympy
    return sym.norm(sympy.Min(*a))


UNBOUND = "?"


def evaluate(text: str, env: Mapping[str, sym.Num]) -> sym.Num:
    """Evaluate ``text`` with the variables of ``env`` (ints or sympy symbols)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise SpecError(f"cannot read the expression {text!r}: it is not a valid "
                        "integer expression (use numbers, names, + - * / // % ** and parentheses)")
    return sym.norm(_eval(tree.body, env, text))


def _eval(node, env, text):
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in _FUNCS:
            raise SpecError(f"in {text!r}: {node.id} is a function; call it as {node.id}(a, b)")
        known = ", ".join(sorted(env)) or "none"
        raise SpecError(f"in {text!r}: unknown variable {node.id!r} (variables: {known}); "
                        f"declare it under [vars]: {node.id} = 64, or {node.id} = \"?\" "
                        "to leave it unbound and get formulas")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(node.operand, env, text)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env, text), _eval(node.right, env, text)
        if isinstance(node.op, ast.Div):
            return _exact_div(a, b, text)
        if isinstance(node.op, ast.Pow):
            if isinstance(b, int) and (b < 0 or b > 64):
                raise SpecError(f"in {text!r}: exponent {b} is out of range (0..64)")
            return a ** b
        op = _BINOPS.get(type(node.op))
        if op is not None:
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and b == 0:
                raise SpecError(f"in {text!r}: division by zero")
            return sym.norm(op(a, b))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in _FUNCS and not node.keywords:
        args = [_eval(a, env, text) for a in node.args]
        if not args:
            raise SpecError(f"in {text!r}: {node.func.id}() needs arguments")
        return _FUNCS[node.func.id](*args)
    if isinstance(node, ast.Constant):
        raise SpecError(f"in {text!r}: {node.value!r} is not an integer")
    raise SpecError(f"in {text!r}: {ast.unparse(node)!r} is not allowed in a spec "
                    "expression (only integers, names, + - * / // % **, min, max, ceil_div)")


def _exact_div(a, b, text):
    if b == 0:
        raise SpecError(f"in {text!r}: division by zero")
    if isinstance(a, int) and isinstance(b, int):
        if a % b:
            raise SpecError(f"in {text!r}: {a}/{b} is not an integer; use // to round down")
        return a // b
    return sym.exact_div(a, b)


def resolve(value, env: Mapping[str, sym.Num]):
    """A spec value: strings are expressions, lists are resolved item by item."""
    if isinstance(value, str):
        return evaluate(value, env)
    if isinstance(value, list):
        return [resolve(v, env) for v in value]
    return value
