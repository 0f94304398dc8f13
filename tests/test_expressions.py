"""The safe evaluator and symbolic figures."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    "__import__('os').system('true')", "C.__class__", "[1, 2]", "lambda: 1", "C < 2 < 'x'",
    "open('x')", "1.5", "'a'", "C; 1", "2**100", "C > 1", "make_divisible(C, 0)",
    "ceil_div(C)", "min()", "C is C", "C in C", "f'{C}'", "C[0]", "{C: 1}", "C @ C",
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


@pytest.mark.parametrize("text, value", [
    ("C if C > 32 else 1", 64), ("1 if C < 32 else 2", 2), ("(C == 64) + 0", None),
    ("0 if not C else 3", 3), ("5 if 1 < C <= 64 else 6", 5), ("7 if C > 8 and C < 9 else 8", 8),
    ("7 if C > 8 or C < 9 else 8", 7), ("make_divisible(C * 0.75, 8)", 48),
    ("make_divisible(32 * 1.1, 8)", 32), ("make_divisible(16 * 0.25, 8)", 8),
    ("ceil(3 * 1.1)", 4), ("floor(C * 0.3)", 19), ("round(2.5)", 2), ("int(C * 1.5)", 96),
    ("max(C, 100) // 2", 50),
])
def test_conditions_and_multipliers(text, value):
    if value is None:
        with pytest.raises(SpecError, match="arithmetic on true/false"):
            evaluate(text, {"C": 64})
    else:
        assert evaluate(text, {"C": 64}) == value


@given(st.integers(1, 2000), st.sampled_from([1.0, 0.25, 0.5, 0.75, 1.1, 1.2, 1.4, 1.6, 1.8,
                                             2.0, 2.2, 3.1]),
       st.sampled_from([1, 2, 4, 8, 16]))
def test_make_divisible_is_torchvisions(c, width, divisor):
    tv = pytest.importorskip("torchvision.models._utils")
    assert evaluate(f"make_divisible({c} * {width}, {divisor})", {}) == \
        tv._make_divisible(c * width, divisor)


def test_conditions_on_unbound_variables_need_a_binding():
    import sympy
    C = sympy.Symbol("C", integer=True, positive=True)
    assert evaluate("1 if C + 1 > C else 2", {"C": C}) == 1   # decidable
    with pytest.raises(SpecError, match="unbound variable"):
        evaluate("1 if C > 4 else 2", {"C": C})


WHEN = """
[vars]
S = 1
C = 8

[blocks.inverted]
args = ["out", "stride=1"]
shortcut_when = "stride == 1 and C == out"
residual = [
  {conv = "C * 4", kernel = 1, batch_norm = true, activation = "relu"},
  {conv = "C * 4", kernel = 3, stride = "stride", padding = 1, groups = "C * 4", batch_norm = true},
  {conv = "out", kernel = 1, batch_norm = true},
]

[model]
name = "when"
input = [8, 16, 16]
layers = [
  {block = "inverted", name = "same", with = {out = 8}},
  {block = "inverted", name = "down", with = {out = 8, stride = 2}},
  {name = "extra", relu = true, when = "S > 1"},
  {name = "kept", relu = true, when = "S == 1"},
  {name = "mix", concat = [[{conv = 4, kernel = 1}], {layers = [{conv = 4, kernel = 1}], when = "S > 1"}]},
]
"""


def test_when_includes_or_leaves_out_layers_blocks_and_branches():
    report = analyze(loads(WHEN))
    paths = [r.name for r in report.rows]
    assert "same.add" in paths               # stride 1, 8 -> 8: a residual
    assert not any(p.startswith("down.add") for p in paths)  # stride 2: the body alone
    assert "kept" in paths and "extra" not in paths
    assert report.rows[-1].output_shape == (4, 8, 8)       # one branch left
    both = analyze(loads(WHEN), variables={"S": 2})
    assert "extra" in [r.name for r in both.rows]
    assert both.rows[-1].output_shape == (8, 8, 8)


def test_when_compiles_to_the_same_model():
    torch = pytest.importorskip("torch")
    spec = loads(WHEN)
    model = spec.build()
    y = model(torch.zeros(2, 8, 16, 16))
    assert tuple(y.shape) == (2, 4, 8, 8)
    assert sum(p.numel() for p in model.parameters()) == analyze(spec).totals["params"]


@pytest.mark.parametrize("when, fragment", [
    ("3", None), ("'x'", "not a number"), ("C >", "cannot read"), ("Q > 1", "unknown variable"),
])
def test_when_errors(when, fragment):
    text = f'[vars]\nC = 2\n[model]\ninput = [3, 8, 8]\nlayers = [{{relu = true, when = "{when}"}}]\n'
    if fragment is None:
        assert len(analyze(loads(text)).rows) == 2
        return
    with pytest.raises(SpecError, match=fragment):
        analyze(loads(text))


REPEATED = """
[blocks.grow]
args = ["c"]
layers = [{conv = "c", kernel = 1}]

[model]
input = [3, 4, 4]
layers = [{block = "grow", name = "g", with = {c = "8 + 4 * repeat_index"}, repeat = N}]
"""


@pytest.mark.parametrize("n", [1, 2, 5])
def test_repeat_index_numbers_the_copies_of_a_block_call(n):
    """Each copy's `with` sees its own 0-based index: c = 8, 12, 16, ...;
    params follow from the chain 3 -> 8 -> 12 -> ... of 1x1 convs."""
    report = analyze(loads(REPEATED.replace("N", str(n))))
    widths = [8 + 4 * i for i in range(n)]
    assert [r.output_shape[0] for r in report.rows[1:]] == widths
    ins = [3] + widths[:-1]
    assert report.totals["params"] == sum(i * o + o for i, o in zip(ins, widths))
    names = [r.name for r in report.rows[1:]]
    assert names == (["g.conv1"] if n == 1 else [f"g_{i + 1}.conv1" for i in range(n)])


def test_repeat_index_is_not_an_argument_name():
    text = REPEATED.replace('args = ["c"]', 'args = ["c", "repeat_index=0"]').replace("N", "2")
    with pytest.raises(SpecError, match="repeat_index.*index of a repeated block call"):
        analyze(loads(text))


def test_float_variables_and_set():
    text = ('[vars]\nwidth = 1.0\n[model]\ninput = [3, 8, 8]\n'
            'layers = [{conv = "make_divisible(32 * width, 8)", kernel = 1}]\n')
    assert analyze(loads(text)).rows[1].output_shape[0] == 32
    assert analyze(loads(text), variables={"width": 1.4}).rows[1].output_shape[0] == 48
    with pytest.raises(SpecError, match="not an integer"):
        analyze(loads(text.replace("make_divisible(32 * width, 8)", "32 * width")),
                variables={"width": 1.1})
