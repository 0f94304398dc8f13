"""The safe evaluator and symbolic figures."""
import pytest

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.spec.expr import evaluate
from archcalc.spec.loader import loads


@pytest.mark.parametrize("text, value", [
    ("2*C", 128), ("C // 3", 21), ("C / 4", 16), ("(C + 2) * 3 - 1", 197), ("2**3", 8),
    ("max(C, 100)", 100), ("min(C, 100)", 64), ("ceil_div(C, 10)", 7), ("-C + 65", 1),
    ("C % 5", 4),
])
def test_integer_expressions(text, value):
    assert evaluate(text, {"C": 64}) == value


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "C.__class__", "[1, 2]", "lambda: 1", "C if C else 1",
    "open('x')", "1.5", "'a'", "C; 1", "2**100",
])
def test_anything_else_is_refused(text):
    with pytest.raises(SpecError):
        evaluate(text, {"C": 64})


SYMBOLIC = '''
[vars]
C = "?"
H = "?"

[model]
name = "sym"
input = [3, "H", "H"]
layers = [
  {name = "a", conv = "C", kernel = 3, padding = 1},
  {name = "b", conv = "2*C", kernel = 3, padding = 1},
]
'''


def test_unbound_variables_give_formulas_and_binding_gives_numbers():
    import sympy
    spec = loads(SYMBOLIC)
    r = analyze(spec)
    C, H = sympy.symbols("C H", integer=True, positive=True)
    assert sympy.expand(r.totals["params"] - ((27 * C + C) + (9 * C * 2 * C + 2 * C))) == 0
    assert sympy.expand(r.totals["macs"] - (27 * C * H**2 + 18 * C**2 * H**2)) == 0
    bound = analyze(spec, variables={"C": 64, "H": 56})
    assert bound.totals["params"] == 28 * 64 + 18 * 64 * 64 + 128
    assert bound.rows[2].output_shape == (128, 56, 56)


def test_vars_may_use_earlier_vars():
    spec = loads('[vars]\nC = 16\nD = "4*C"\n[model]\ninput = [3, 8, 8]\n'
                 'layers = [{conv = "D", kernel = 1}]\n')
    assert analyze(spec).rows[1].output_shape == (64, 8, 8)
