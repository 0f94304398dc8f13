"""Hostile inputs, second round (issue 18, families 2-4): work bounded by what
a spec expands to, no silent wrong number, no traceback in disguise.

CLI cases run as a user runs them (tests/test_hostile_specs.py's helpers: a
subprocess with 1.5 GB of address space and a CPU-time cap, so a runaway is a
failure, not a slow pass); the rest run in-process, table-driven or with
hypothesis over many inputs, so each family is fixed, not each example.
"""
import json
import math
import os
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archcalc import limits
from archcalc.errors import SpecError
from archcalc.graph import build_graph
from archcalc.inputs import parse_json
from archcalc.spec.expr import evaluate_value
from archcalc.spec.loader import loads
from archcalc.usercode import parse_timeout, running_user_code
from test_hostile_specs import HEADER, layer, refused, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def block_called(rows: list[str], calls: int) -> str:
    """A block of `rows` (inline tables) called `calls` times, then one real row."""
    return (HEADER + "[blocks.b]\nlayers = [" + ", ".join(rows) + "]\n"
            f'[[layers]]\nblock = "b"\nrepeat = {calls}\n[[layers]]\nrelu = true\n')


# -- family 2: every expansion step counts, refused as the expansion proceeds --

OFF_ROWS = {
    "when false": '{conv = 3, kernel = 1, when = "0 == 1"}',
    "when false literal": "{conv = 3, kernel = 1, when = false}",
    "repeat 0": "{conv = 3, kernel = 1, repeat = 0}",
    "off block call": '{block = "leaf", when = "1 > 2"}',
    "off branch": '{concat = [{layers = [{relu = true}], when = "0 == 1"}, [{relu = true}]]}',
}


@pytest.mark.parametrize("kind", sorted(OFF_ROWS))
@pytest.mark.parametrize("rows, calls", [(100, 99_000), (200, 49_000), (3, 10 ** 9)])
def test_rows_that_make_nothing_still_cost_work(tmp_path, kind, rows, calls):
    text = block_called([OFF_ROWS[kind]] * rows, calls) + \
        '[blocks.leaf]\nlayers = [{relu = true}]\n'
    refused(tmp_path, text, "spec.toml:", "ARCHCALC_MAX_")


@pytest.mark.parametrize("levels, fanout", [(8, 10), (4, 100), (2, 20_000), (16, 4)])
def test_block_fan_out_with_switched_off_leaves(tmp_path, levels, fanout):
    text = HEADER + "".join(
        f'[blocks.l{d}]\nlayers = [{{block = "l{d + 1}", repeat = {fanout}}}]\n'
        for d in range(levels)) + \
        f'[blocks.l{levels}]\nlayers = [{{relu = true, when = "0 == 1"}}]\n' + \
        '[[layers]]\nblock = "l0"\n[[layers]]\nrelu = true\n'
    refused(tmp_path, text, "spec.toml:", "ARCHCALC_MAX_")


def test_include_fan_out_with_switched_off_leaves(tmp_path):
    files = {f"p{d}.toml": "layers = [" + ", ".join([f'{{include = "p{d + 1}.toml"}}'] * 10)
             + "]\n" for d in range(6)}
    files["p6.toml"] = 'layers = [{relu = true, when = "0 == 1"}]\n'
    refused(tmp_path, HEADER + 'layers = [{include = "p0.toml"}, {relu = true}]\n',
            "ARCHCALC_MAX_INCLUDES", files=files)


@pytest.mark.parametrize("branches", [50_000, 120_000])
def test_many_empty_branches(tmp_path, branches):
    text = HEADER + "[blocks.b]\nconcat = [" + ", ".join(["[]"] * branches) + "]\n" + \
        '[[layers]]\nblock = "b"\nrepeat = 1000\n'
    refused(tmp_path, text, "ARCHCALC_MAX_")


def test_switched_off_heads_count(tmp_path):
    heads = ", ".join(f'{{name = "h{i}", layers = [{{relu = true}}], when = false}}'
                      for i in range(5_000))
    refused(tmp_path, HEADER + f'[blocks.b]\nheads = [{heads}, {{name = "on", layers = '
            '[{relu = true}]}]\n[[layers]]\nrelu = true\n[[layers]]\nblock = "b"\n'
            'repeat = 2000\n', "ARCHCALC_MAX_EXPANSION")


def test_block_arguments_are_read_at_every_call(tmp_path):
    args = ", ".join(f'"a{i}=1"' for i in range(10_000))
    refused(tmp_path, HEADER + f'[blocks.b]\nargs = [{args}]\nlayers = [{{relu = true, '
            'repeat = 0}]\n[[layers]]\nrelu = true\n[[layers]]\nblock = "b"\n'
            'repeat = 90000\n', "ARCHCALC_MAX_EXPANSION")


def test_long_conditions_count_their_operations(tmp_path):
    cond = " and ".join(["1 == 1"] * 90) + " and 0 == 1"     # ~900 characters
    refused(tmp_path, block_called([f'{{relu = true, when = "{cond}"}}'] * 20, 2_000),
            "ARCHCALC_MAX_EXPANSION")


def count_steps(spec, cap: int, monkeypatch) -> tuple[int, str | None]:
    """(most steps charged, the refusal or None) of building `spec` (TOML text
    or a loaded Spec) under `cap`."""
    monkeypatch.setenv("ARCHCALC_MAX_EXPANSION", str(cap))
    seen = [0]
    charge = limits.Work.charge

    def counting(self, steps, detail):
        seen[0] = max(seen[0], self.steps + steps)
        return charge(self, steps, detail)
    monkeypatch.setattr(limits.Work, "charge", counting)
    try:
        build_graph(loads(spec, "spec.toml") if isinstance(spec, str) else spec)
        return seen[0], None
    except SpecError as e:
        return seen[0], str(e)


@settings(max_examples=40)
@given(rows=st.integers(0, 40), calls=st.integers(0, 10 ** 7),
       kind=st.sampled_from(sorted(OFF_ROWS)))
def test_work_never_passes_the_budget(rows, calls, kind):
    """Whatever the block and the repeat, the steps done stay within the
    budget (plus one expression's operations), and a refusal names a limit."""
    cap = 5_000
    text = block_called([OFF_ROWS[kind]] * rows or ["{relu = true}"], calls) + \
        '[blocks.leaf]\nlayers = [{relu = true}]\n'
    with pytest.MonkeyPatch.context() as mp:
        steps, error = count_steps(text, cap, mp)
    assert steps <= cap + limits.MAX_EXPR_CHARS.default
    if error is not None:
        assert "ARCHCALC_MAX_EXPANSION" in error or "ARCHCALC_MAX_ROWS" in error, error
    else:
        assert calls * max(rows, 1) <= cap


def test_work_scales_with_the_spec_not_the_budget(monkeypatch):
    """The bundled specs fit the default budget many times over: ResNet-1001,
    the deepest, takes about 10,000 steps (one per row and call, one per
    expression operation)."""
    from archcalc.spec.loader import load
    for name, most in (("preact_resnet1001_cifar", 12_000), ("efficientnet_b0", 4_000),
                       ("vgg16", 200)):
        steps, error = count_steps(load(os.path.join(ROOT, "specs", f"{name}.toml")),
                                   limits.MAX_EXPANSION.default, monkeypatch)
        assert error is None and 0 < steps <= most, (name, steps, error)


@pytest.mark.parametrize("option", [
    ",".join(["1"] * 60_000), ",".join(["8"] * 65), "9" * 4000, "1," + "9" * 4000,
    "1,,x", "0", "-3", "1e3",
])
def test_batch_lists(tmp_path, option):
    refused(tmp_path, layer("{conv = 4, kernel = 1}"), "--batch",
            args=["--batch", option], cmd="predict")


@pytest.mark.parametrize("option", ["9" * 4000, "9" * 19, "0", "x"])
def test_single_batch(tmp_path, option):
    refused(tmp_path, layer("{conv = 4, kernel = 1}"), "--batch", args=["--batch", option])


def test_plot_of_ten_thousand_rows_is_bounded(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "spec.toml").write_text(
        HEADER + "[[layers]]\nconv = 3\nkernel = 3\npadding = 1\nrepeat = 5000\n"
        "[[layers]]\nrelu = true\nrepeat = 5000\n")
    proc, _ = run_cli(["plot", "spec.toml", "-o", "deep.png"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "deep.png").stat().st_size < 5_000_000


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("what", ["fifo", "/dev/zero", "directory"])
def test_spec_files_are_checked_before_they_are_opened(tmp_path, what):
    target = {"fifo": "pipe.toml", "/dev/zero": "/dev/zero", "directory": "folder"}[what]
    if what == "fifo":
        os.mkfifo(tmp_path / "pipe.toml")
    elif what == "directory":
        (tmp_path / "folder").mkdir()
    proc, _ = run_cli(["table", target], tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert target in proc.stderr and "Traceback" not in proc.stderr


# -- family 3: no silent wrong numbers: names are ASCII, look-alikes refused --

def _confusables() -> list[str]:
    """Characters Python's parser folds (NFKC) into ASCII identifier text."""
    found = []
    for cp in range(0x80, 0x20000):
        ch = chr(cp)
        folded = unicodedata.normalize("NFKC", ch)
        if folded != ch and folded.isascii() and ("X" + folded).isidentifier() \
                and ("X" + ch).isidentifier():
            found.append(ch)
    return found


CONFUSABLES = _confusables()


def test_there_are_many_confusables():
    assert len(CONFUSABLES) > 500   # ligatures, full-width and mathematical letters


@given(ch=st.sampled_from(CONFUSABLES))
def test_a_variable_named_with_a_look_alike_is_refused(ch):
    folded = unicodedata.normalize("NFKC", ch)
    text = (HEADER + f'[vars]\n"X{ch}" = 8\nX{folded} = 4096\n'
            f'[[layers]]\nconv = "X{ch}"\nkernel = 1\n')
    with pytest.raises(SpecError) as e:
        build_graph(loads(text, "spec.toml"))
    assert "spec.toml" in str(e.value) and "ASCII" in str(e.value)


@given(ch=st.sampled_from(CONFUSABLES))
def test_an_expression_with_a_look_alike_is_refused(ch):
    """Only the ASCII variable exists: Python would read the look-alike as it."""
    folded = unicodedata.normalize("NFKC", ch)
    text = HEADER + f'[vars]\nX{folded} = 4096\n[[layers]]\nconv = "X{ch}"\nkernel = 1\n'
    with pytest.raises(SpecError) as e:
        build_graph(loads(text, "spec.toml"))
    assert "not ASCII" in str(e.value) and "spec.toml" in str(e.value)


@given(ch=st.sampled_from(CONFUSABLES))
def test_block_arguments_with_a_look_alike_are_refused(ch):
    text = (HEADER + f'[blocks.b]\nargs = ["C{ch}"]\nlayers = [{{conv = 4, kernel = 1}}]\n'
            f'[[layers]]\nblock = "b"\nwith = {{"C{ch}" = 3}}\n')
    with pytest.raises(SpecError) as e:
        build_graph(loads(text, "spec.toml"))
    assert "ASCII" in str(e.value)


def test_set_with_a_look_alike_is_refused(tmp_path):
    refused(tmp_path, "[vars]\nXfi = 4\n" + layer('{conv = "Xfi", kernel = 1}'),
            "ASCII", args=["--set", "X\ufb01=8"])


# -- family 3 and 4: the user's code in `import` -----------------------------

@pytest.mark.parametrize("raise_, fragment", [
    (lambda: exec("raise SystemExit(0)"), "sys.exit(0)"),
    (lambda: exec("import sys; sys.exit(3)"), "sys.exit(3)"),
    (lambda: exec("raise SystemExit('bye')"), "sys.exit('bye')"),
    (lambda: exec("raise GeneratorExit('x')"), "GeneratorExit"),
])
def test_exits_from_the_users_code_are_one_spec_error(raise_, fragment):
    with pytest.raises(SpecError) as e:
        with running_user_code("net.py:Net", 60):
            raise_()
    assert fragment in str(e.value) and "net.py:Net" in str(e.value)


def test_a_forward_that_never_returns_is_stopped():
    """A loop that even swallows Exception is stopped (bounded by the timer:
    the loop's count is a hang guard, never reached)."""
    with pytest.raises(SpecError) as e:
        with running_user_code("net.py:Net", 0.2):
            for _ in range(10 ** 10):
                try:
                    pass
                except Exception:
                    pass
    assert "--timeout" in str(e.value) and "ARCHCALC_IMPORT_TIMEOUT_S" in str(e.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "x", "1e400"])
def test_timeout_values(value):
    with pytest.raises(SpecError, match="--timeout"):
        parse_timeout(value)


def test_timeout_default_is_the_limit(monkeypatch):
    assert parse_timeout(None) == 120
    monkeypatch.setenv("ARCHCALC_IMPORT_TIMEOUT_S", "300")
    assert parse_timeout(None) == 300


def run_torch_cli(args, cwd):
    """The CLI under the pass rules of commands that load torch: 6 GB, and a
    CPU-time cap as the hang guard."""
    import resource
    import subprocess
    import sys

    def caps():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (120, 120))
    return subprocess.run([sys.executable, "-m", "archcalc", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, preexec_fn=caps)


def test_import_of_a_module_that_exits(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "net.py").write_text("import sys\nsys.exit(3)\n")
    proc = run_torch_cli(["import", "net.py:Net", "-o", "out.toml"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "sys.exit(3)" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.toml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("body, args, fragment", [
    ("raise SystemExit(0)\n", [], "sys.exit(0)"),
    ("import torch.nn as nn\nclass Net(nn.Module):\n    def forward(self, x):\n"
     "        while True:\n            pass\n", ["--timeout", "2"], "--timeout"),
    ("import torch.nn as nn\nNet = nn.ReLU\n", ["--kwargs", "{\"a\": " + "9" * 5000 + "}"],
     "--kwargs"),
    # 120,000 characters: one argument is at most 128 KiB on Linux
    ("import torch.nn as nn\nNet = nn.ReLU\n", ["--kwargs", "[" * 60_000 + "]" * 60_000],
     "ARCHCALC_MAX_JSON_DEPTH"),
])
def test_import_cli(tmp_path, body, args, fragment):
    pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(body)
    proc = run_torch_cli(["import", "net.py:Net", *args], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# -- family 4: no traceback in disguise --------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ("[" * 100_000 + "]" * 100_000, "ARCHCALC_MAX_JSON_DEPTH"),
    ('{"a": ' + "[" * 40 + "]" * 40 + "}", "ARCHCALC_MAX_JSON_DEPTH"),
    ('{"n": ' + "9" * 5000 + "}", "--kwargs"),
    ('{"n": ' + "9" * 4000 + "}", "digits"),
    ('{"n": NaN}', "finite"), ('{"n": -Infinity}', "finite"), ('{"n": 1e999}', "finite"),
    ('{"n": ', "invalid JSON"), ("", "invalid JSON"),
    ('{"s": "' + "x" * (2 << 20) + '"}', "ARCHCALC_MAX_JSON_BYTES"),
])
def test_json_texts(text, fragment):
    with pytest.raises(SpecError) as e:
        parse_json(text, "--kwargs")
    assert fragment in str(e.value) and "--kwargs" in str(e.value)


@given(st.text(alphabet='[]{}":,0123456789.eE+-nulltrueNaInfiy \\x', max_size=300))
def test_any_json_text_is_a_value_or_one_spec_error(text):
    try:
        value = parse_json(text, "--kwargs")
    except SpecError as e:
        assert "\n" not in str(e)
        return
    assert "Infinity" not in json.dumps(value) and "NaN" not in json.dumps(value)


@given(st.recursive(st.none() | st.booleans() | st.integers(-10 ** 17, 10 ** 17)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=30))
def test_valid_json_round_trips(value):
    text = json.dumps(value)
    if json.loads(text) != json.loads(text):  # pragma: no cover - no NaN drawn
        return
    depth = _depth(value)
    if depth > limits.MAX_JSON_DEPTH.default:
        return
    assert parse_json(text, "--kwargs") == json.loads(text)


def _depth(v) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


EXTREMES = ["1e-300", "1e308", "1e17", "-1e17", "0.5", "0.0", "1e-17", "3", "0", "-2",
            "10**18", "999999999999999999", "C"]
FUNCS = ["ceil_div({}, {})", "floor({})", "ceil({})", "round({})", "int({})",
         "make_divisible({}, {})", "min({}, {})", "max({}, {})", "({}) / ({})",
         "({}) // ({})", "({}) % ({})", "({}) ** ({})", "({}) * ({})", "-({})",
         "({}) + ({})", "({}) if ({}) else 1", "({}) < ({})"]


@st.composite
def extreme_expressions(draw, depth=3):
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(EXTREMES))
    template = draw(st.sampled_from(FUNCS))
    return template.format(*[draw(extreme_expressions(depth=depth - 1))
                             for _ in range(template.count("{}"))])


@settings(max_examples=300)
@given(extreme_expressions())
def test_extreme_operands_give_a_finite_value_or_one_line(text):
    import sympy
    for env in ({}, {"C": 7}, {"C": sympy.Symbol("C", positive=True, integer=True)}):
        try:
            value = evaluate_value(text, env)
        except SpecError as e:
            assert "\n" not in str(e)
            continue
        if isinstance(value, float):
            assert math.isfinite(value) and abs(value) < 1e18, (text, value)
        elif isinstance(value, int) and not isinstance(value, bool):
            assert abs(value) < 10 ** 18, (text, value)


@pytest.mark.parametrize("expr", [
    "ceil_div(1e17, 1e-300)", "ceil_div(1e-300, 1e-300) * 1e308", "floor(1e17 / 1e-300)",
    "int(1e17 // 1e-300)", "round(1e308 * 10)", "make_divisible(1e17 * 10, 8)",
    "ceil(1e308)", "int(0.1 ** 64 * 1e308)",
])
def test_extreme_floats_in_a_spec(tmp_path, expr):
    refused(tmp_path, layer(f'{{name = "c", conv = "{expr}", kernel = 1}}'),
            "spec.toml:4", "layer c")


@pytest.mark.parametrize("include, fragment", [
    ('"a\\u0000b.toml"', "NUL"), ('""', "empty"), ('"  "', "empty"),
    ('"."', "directory"), ('"/dev/zero"', "not a regular file"),
    ('"missing.toml"', "no such file"),
])
@pytest.mark.parametrize("where", ["top", "layer"])
def test_bad_include_paths_name_the_spec(tmp_path, include, fragment, where):
    text = (f"include = [{include}]\n" + layer("{relu = true}")) if where == "top" else \
        HEADER + f"layers = [{{include = {include}}}]\n"
    line = refused(tmp_path, text, "spec.toml", fragment)
    assert "Error" not in line.split("error:", 1)[1]   # no Python exception name


@settings(max_examples=200)
@given(name=st.text(min_size=0, max_size=40), where=st.sampled_from(["top", "layer"]))
def test_any_include_name_is_a_file_or_one_line_naming_the_spec(tmp_path_factory, name, where):
    """Random include names (NUL bytes, separators, '..', controls, empty): the
    spec loads or one SpecError names the spec file; never another exception."""
    from archcalc.spec.loader import load
    folder = tmp_path_factory.mktemp("inc")
    quoted = json.dumps(name)   # a TOML basic string is JSON's, for these characters
    text = (f"include = [{quoted}]\n" + layer("{relu = true}")) if where == "top" else \
        HEADER + f"layers = [{{include = {quoted}}}]\n"
    (folder / "spec.toml").write_text(text, encoding="utf-8")
    try:
        load(str(folder / "spec.toml"))
    except SpecError as e:
        assert "spec.toml" in str(e) or "ARCHCALC_" in str(e), str(e)
        assert "\n" not in str(e)


@pytest.mark.parametrize("where", ["top", "layer"])
def test_an_error_inside_an_included_file_names_it_and_the_spec(tmp_path, where):
    """Found by the property above with include = "/proc/self/status": the
    included file's own error says where it was included from."""
    from archcalc.spec.loader import load
    (tmp_path / "bad.toml").write_text("Name:\tpython\n", encoding="utf-8")
    text = ('include = ["bad.toml"]\n' + layer("{relu = true}")) if where == "top" else \
        HEADER + 'layers = [{include = "bad.toml"}]\n'
    (tmp_path / "spec.toml").write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as e:
        load(str(tmp_path / "spec.toml"))
    line = str(e.value)
    assert "bad.toml:1: invalid TOML" in line and "(included from " in line
    assert line.rstrip(")").endswith(("spec.toml", "spec.toml:4", "spec.toml:5", "spec.toml:3"))


def test_every_limit_is_documented():
    """docs/limits.md carries limits.table_markdown() as generated, so a limit
    added without its documentation fails here."""
    with open(os.path.join(ROOT, "docs", "limits.md"), encoding="utf-8") as fh:
        page = fh.read()
    assert limits.table_markdown() in page
    for limit in limits.all_limits():
        assert limit.env in page
