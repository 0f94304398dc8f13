"""The general-graph syntax: ``from = "NAME"``, merge entries and ``[model]
outputs``, through the whole pipeline: names resolved with one-line errors,
the engine's rows (shapes, params, MACs, receptive field, liveness), the
built module (against plain PyTorch written by hand here), check at batch 1
and 2, the Python export, the spec text written back, and compare's depth."""
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archcalc.analysis import analyze
from archcalc.compare import depth
from archcalc.errors import SpecError
from archcalc.graph import build_graph
from archcalc.spec.loader import loads
from archcalc.spec.writer import to_toml

HEAD = '[model]\nname = "g"\ninput = [3, 16, 16]\n'

# a small feature pyramid: two levels, a top-down add with a fused relu, two outputs
FPN = HEAD + '''outputs = ["p1", "p2"]
layers = [
  {name = "c1", conv = 8, kernel = 3, padding = 1, activation = "relu"},
  {name = "c2", conv = 16, kernel = 3, stride = 2, padding = 1, activation = "relu"},
  {name = "lat2", conv = 8, kernel = 1},
  {name = "p2", conv = 8, kernel = 3, padding = 1},
  {name = "up2", from = "lat2", upsample = 2},
  {name = "lat1", from = "c1", conv = 8, kernel = 1},
  {name = "sum1", merge = "add", from = ["lat1", "up2"], activation = "relu"},
  {name = "p1", conv = 8, kernel = 3, padding = 1},
]
'''


def report_of(text, **kw):
    return analyze(loads(text, file="g.toml"), **kw)


def rows(report):
    return {r.name: r for r in report.rows}


# -- names: one clear line per mistake ----------------------------------------

ERRORS = [
    # an unknown name, with the names it could have been
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {conv = 4, kernel = 1, from = "zz"}]',
     "g.toml:4: layer #2: from = 'zz' names no earlier entry of this list or an enclosing "
     "one (earlier: a;"),
    # a later name: the graph is written in order (a DAG by construction)
    ('layers = [{conv = 4, kernel = 1, name = "a", from = "b"}, '
     '{conv = 4, kernel = 1, name = "b"}]',
     "layer a: from = 'b' names this entry or a later one"),
    # a name inside a named level, without its path
    ('layers = [{name = "blk", layers = [{conv = 4, kernel = 1, name = "x"}, '
     '{conv = 4, kernel = 1, name = "y"}]}, {conv = 4, kernel = 1, from = "x"}]',
     "from = 'x': 'x' is inside 'blk'; write its path, from = \"blk.x\""),
    # a dotted path into a level that holds no such entry
    ('layers = [{name = "blk", layers = [{conv = 4, kernel = 1, name = "x"}]}, '
     '{conv = 4, kernel = 1, from = "blk.q"}]',
     "from = 'blk.q': 'blk' holds no entry 'q' (it holds: x)"),
    # several inputs without merge
    ('layers = [{conv = 4, kernel = 1, name = "a"}, '
     '{conv = 4, kernel = 1, from = ["input", "a"]}]',
     "names several outputs; only a merge combines them"),
    # an output nobody reads
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {conv = 4, kernel = 1, name = "b"}, '
     '{conv = 4, kernel = 1, from = "a"}]',
     "layer b: the output of 'b' is never used: no later entry reads it"),
    # inside a structure too, named by its path
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {name = "r", residual = ['
     '{conv = 4, kernel = 1, name = "c"}, {conv = 4, kernel = 1, from = "a"}]}]',
     "layer r.c: the output of 'c' is never used"),
    # merge shapes that disagree, with the shapes
    ('layers = [{conv = 4, kernel = 1, name = "a"}, '
     '{conv = 4, kernel = 1, stride = 2, name = "b"}, {merge = "add", from = ["a", "b"]}]',
     'layer add1: merge "add": a gives 4 x 16 x 16, b gives 4 x 8 x 8; add needs equal shapes'),
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {conv = 4, kernel = 1, stride = 2, '
     'name = "b"}, {merge = "concat", from = ["a", "b"]}]',
     'merge "concat": a gives 4 x 16 x 16, b gives 4 x 8 x 8; concat needs C x H x W outputs '
     'of equal H and W'),
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {conv = 3, kernel = 1, name = "b"}, '
     '{merge = "multiply", from = ["a", "b"]}]',
     "multiply needs equal shapes (or a C x 1 x 1 gate of the same C)"),
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {merge = "max", from = ["a", "input"]}]',
     "merge takes 'add', 'concat', 'multiply', 'subtract'. Received: merge='max'"),
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {merge = "add", from = ["a"]}]',
     "a merge reads at least two named outputs"),
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {merge = "add", from = ["a", "a"]}]',
     "merge reads 'a' twice"),
    # bad values: one line, never a traceback
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {merge = ["add"], from = ["a", "input"]}]',
     "merge takes 'add', 'concat', 'multiply', 'subtract'. Received: merge=['add']"),
    ('layers = [{conv = 4, kernel = 1, name = "a"}, {conv = 4, kernel = 1, from = 3}]',
     "from takes the name of an earlier entry (or \"input\"). Received: from=3"),
    # [model] outputs
    ('outputs = ["a", "nope"]\nlayers = [{conv = 4, kernel = 1, name = "a"}, '
     '{conv = 4, kernel = 1, name = "b"}]',
     "g.toml: [model] outputs = 'nope' names no earlier entry"),
    ('outputs = ["a"]\nlayers = [{conv = 4, kernel = 1, name = "a"}, '
     '{conv = 4, kernel = 1, name = "b"}]',
     "layer b: the output of 'b' (the last entry) is never used: [model] outputs does not "
     "name it"),
    ('outputs = "a"\nlayers = [{conv = 4, kernel = 1, name = "a"}]',
     "[model] outputs takes a list of entry names"),
]


@pytest.mark.parametrize("body,message", ERRORS)
def test_a_wrong_name_or_merge_is_one_clear_error(body, message):
    with pytest.raises(SpecError) as caught:
        report_of(HEAD + body)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text and text.startswith("g.toml")


def test_a_switched_off_entry_names_nothing():
    # the projection exists only when stride == 2; so does the entry that reads it
    text = HEAD + '''
[blocks.down]
args = ["stride=1"]
layers = [
  {name = "proj", conv = 4, kernel = 1, stride = "stride", when = "stride == 2"},
  {name = "main", from = "input", conv = 4, kernel = 3, padding = 1, stride = "stride"},
  {name = "sum", merge = "add", from = ["main", "proj"], when = "stride == 2"},
]

[[layers]]
block = "down"
name = "same"

[[layers]]
block = "down"
name = "down2"
with = {stride = 2}
'''
    r = rows(report_of(text))
    assert "same.proj" not in r and "same.sum" not in r
    assert r["down2.sum"].output_shape == (4, 8, 8) and r["down2.main"].inputs == ("same.main",)


def test_a_block_body_sees_only_its_own_entries_and_input():
    text = HEAD + '''
[blocks.b]
layers = [{conv = 4, kernel = 1, name = "x"}, {conv = 4, kernel = 1, from = "stem"}]

[[layers]]
conv = 4
kernel = 1
name = "stem"

[[layers]]
block = "b"
'''
    with pytest.raises(SpecError, match="names an entry outside this block; a block's body "
                                        "sees only its own entries and \"input\""):
        report_of(text)


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(HEAD + ERRORS[5][0] + "\n")
    done = subprocess.run([sys.executable, "-m", "archcalc", "table", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert "the output of 'b' is never used" in done.stderr and "Traceback" not in done.stderr


# -- the engine -----------------------------------------------------------------

def test_rows_read_their_named_source_and_merge_rows_cost_n_minus_1_adds():
    report = report_of(FPN)
    r = rows(report)
    assert r["up2"].output_shape == (8, 16, 16) and r["up2"].inputs == ("lat2",)
    assert r["lat1"].input_shape == (8, 16, 16) and r["lat1"].inputs == ("c1",)
    # lat1 reads c1 (8 channels): 8*8 + 8 params, not c2's 16
    assert r["lat1"].params == 72
    # the add of 2 maps of 8 x 16 x 16 is 2048 adds, its relu 2048 more
    assert r["sum1"].flops == 2048 + 2048 and r["sum1"].inputs == ("lat1", "up2")
    assert r["sum1"].type == "add+relu"
    # rows that read the row before them carry no inputs field: the JSON stays as it was
    layers = json.loads(report.to_json())["layers"]
    assert [row["name"] for row in layers if "inputs" in row] == ["up2", "lat1", "sum1"]
    assert report.outputs == [("p1", (8, 16, 16)), ("p2", (8, 8, 8))]
    assert report.multi_output and report.totals["outputs"] == 2


def test_the_receptive_field_through_a_dag_is_the_max_over_paths():
    r = rows(report_of(FPN))
    # c1 (3), c2 stride 2 (3 + 2 = 5, jump 2), up2 keeps lat2's 5; lat1 keeps c1's 3
    assert r["up2"].receptive_field == (5, 5) and r["lat1"].receptive_field == (3, 3)
    assert r["sum1"].receptive_field == (5, 5)      # max(3, 5)
    # nearest upsampling by 2 halves the jump (2 -> 1): three neighbours of the sum
    # reach two lat2 pixels, 2 input pixels apart: p1 sees 5 + (3 - 1) * 1
    assert r["up2"].jump == (1, 1) and r["sum1"].jump == (1, 1)
    assert r["p1"].receptive_field == (7, 7)


def test_a_named_output_stays_alive_until_its_last_reader():
    # a (4 x 16 x 16) is read by the merge at the end: it is alive while b and c run
    text = HEAD + '''layers = [
  {name = "a", conv = 4, kernel = 3, padding = 1},
  {name = "b", conv = 4, kernel = 3, padding = 1},
  {name = "c", conv = 4, kernel = 3, padding = 1},
  {name = "sum", merge = "add", from = ["a", "c"]},
]
'''
    report = report_of(text)
    params = (3 * 9 * 4 + 4) + 2 * (4 * 9 * 4 + 4)
    assert report.totals["params"] == params
    # the most alive at once: while c runs, a (kept), b (its input) and c: 3 maps of 1024
    assert report.totals["inference_peak_bytes"] == params * 4 + 3 * 1024 * 4
    # the same three convs in a chain keep two maps at once
    chain = report_of(HEAD + 'layers = [{conv = 4, kernel = 3, padding = 1, repeat = 3}]')
    assert chain.totals["inference_peak_bytes"] == params * 4 + 2 * 1024 * 4


def test_a_spec_without_from_is_analyzed_as_before():
    text = HEAD + 'layers = [{conv = 4, kernel = 3}, {name = "r", residual = [{conv = 4, ' \
        'kernel = 3, padding = 1}]}]'
    model = build_graph(loads(text))
    assert model.refs == () and model.outputs == ()
    assert all("inputs" not in row for row in json.loads(analyze(model).to_json())["layers"])


def test_input_a_dotted_path_and_a_gate():
    text = HEAD + '''layers = [
  {name = "stem", conv = 8, kernel = 3, padding = 1},
  {name = "blk", layers = [
    {name = "a", conv = 8, kernel = 3, padding = 1},
    {name = "b", conv = 8, kernel = 1, from = "input"},
    {name = "cat", merge = "concat", from = ["a", "b"]},
  ]},
  {name = "gate", from = "stem", global_avgpool = true},
  {name = "g1", conv = 16, kernel = 1, activation = "sigmoid"},
  {name = "gated", merge = "multiply", from = ["blk", "g1"]},
  {name = "tail", merge = "add", from = ["gated", "blk.cat"]},
]
'''
    r = rows(report_of(text))
    assert r["blk.b"].input_shape == (8, 16, 16) and r["blk.b"].inputs == ("stem",)
    assert r["blk.cat"].output_shape == (16, 16, 16) and r["blk.cat"].flops == 0
    assert r["g1"].output_shape == (16, 1, 1)
    # the gate broadcasts: 16 x 16 x 16 products
    assert r["gated"].output_shape == (16, 16, 16) and r["gated"].flops == 16 * 16 * 16
    assert r["tail"].inputs == ("gated", "blk.cat")
    # measured: a multiply keeps both inputs for backward, a concat nothing
    pytest.importorskip("torch")
    from archcalc.torch.check import run_check
    for batch in (1, 2):
        assert run_check(loads(text), batch=batch).ok


TOKENS = HEAD + '''layers = [
  {name = "stem", conv = 12, kernel = 4, stride = 4},
  {name = "tokens", tokens = true},
  {name = "cls", class_token = true},
  {name = "first", first_tokens = true},
  {name = "proj", fc = 12, activation = "gelu"},
  {name = "sum", merge = "add", from = ["first", "proj"]},
  {name = "rest", skip_tokens = 1, from = "cls"},
  {name = "cat", merge = "concat", from = ["sum", "rest"]},
  {name = "attn", attention = 3},
  {name = "pool", token_pool = true},
]
'''


def test_tokens_concatenate_along_the_tokens_and_check_out():
    """As CaiT's class-attention blocks: the class token read back
    (first_tokens), added to, and put before the patch tokens again (a concat of N x D
    tokens: torch.cat(..., 1) along the tokens)."""
    r = rows(report_of(TOKENS))
    assert r["first"].output_shape == (1, 12) and r["rest"].output_shape == (16, 12)
    assert r["sum"].output_shape == (1, 12)
    assert r["cat"].output_shape == (17, 12) and r["cat"].flops == 0
    pytest.importorskip("torch")
    from archcalc.torch.check import run_check
    for batch in (1, 2):
        result = run_check(loads(TOKENS), batch=batch)
        assert result.ok, [(c.what, c.calculated, c.measured) for c in result.totals if not c.ok]


def test_tokens_of_other_widths_do_not_concatenate():
    text = TOKENS.replace('{name = "rest", skip_tokens = 1, from = "cls"}',
                          '{name = "rest", fc = 8, from = "cls"}')
    with pytest.raises(SpecError, match=r"rest gives 17 x 8; concat needs C x H x W outputs "
                                        r"of equal H and W \(or N x D tokens of equal D"):
        report_of(text)


SUBTRACT = HEAD + '''layers = [
  {name = "stem", conv = 8, kernel = 3, padding = 1},
  {name = "mixer", conv = 8, kernel = 3, padding = 1, depthwise = true},
  {name = "norm", batch_norm = true, from = "stem"},
  {name = "diff", merge = "subtract", from = ["mixer", "norm"], activation = "relu"},
  {name = "sum", merge = "add", from = ["stem", "diff"]},
]
'''


def test_subtract_takes_the_second_from_the_first_and_checks_out():
    """FastViT's RepMixer: x + (mixer(x) - norm(x)): one op per element, no
    tensor kept for backward; the built module, the export and check agree."""
    torch = pytest.importorskip("torch")
    from archcalc.torch.build import build_model
    from archcalc.torch.check import run_check
    from archcalc.torch.export import to_python
    r = rows(report_of(SUBTRACT))
    assert r["diff"].output_shape == (8, 16, 16) and r["diff"].inputs == ("mixer", "norm")
    assert r["diff"].flops == 2 * 8 * 16 * 16     # the subtraction and the fused relu
    model = build_model(loads(SUBTRACT)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        stem = model.stem(x)
        want = stem + torch.relu(model.mixer(stem) - model.norm(stem))
        torch.testing.assert_close(model(x), want)
    namespace = {}
    exec(compile(to_python(model, "Exported"), "exported.py", "exec"), namespace)
    exported = namespace["Exported"]().eval()
    exported.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(exported(x), want)
    for batch in (1, 2):
        result = run_check(loads(SUBTRACT), batch=batch)
        assert result.ok, [(c.what, c.calculated, c.measured) for c in result.totals if not c.ok]


def test_subtract_reads_exactly_two():
    text = SUBTRACT.replace('from = ["mixer", "norm"]', 'from = ["mixer", "norm", "stem"]')
    with pytest.raises(SpecError, match=r'merge "subtract" reads two named outputs'):
        report_of(text)


def test_outputs_and_heads_do_not_mix():
    text = HEAD + '''outputs = ["output"]
layers = [
  {name = "a", conv = 4, kernel = 1},
  {heads = [{name = "h", layers = [{conv = 2, kernel = 1}]}]},
  {name = "output", conv = 4, kernel = 1},
]
'''
    with pytest.raises(SpecError, match="outputs and heads: a spec with heads returns them"):
        report_of(text)


# -- built in PyTorch, against plain PyTorch ------------------------------------

def _reference_fpn():
    """The FPN spec written by hand in plain PyTorch: the same module names."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn import functional as F

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.c2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.lat2 = nn.Conv2d(16, 8, 1)
            self.p2 = nn.Conv2d(8, 8, 3, padding=1)
            self.lat1 = nn.Conv2d(8, 8, 1)
            self.p1 = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            c1 = self.c1(x)
            lat2 = self.lat2(self.c2(c1))
            p2 = self.p2(lat2)
            s = F.relu(self.lat1(c1) + F.interpolate(lat2, scale_factor=2, mode="nearest"))
            return {"p1": self.p1(s), "p2": p2}
    return torch, Reference()


@pytest.mark.parametrize("batch", [1, 2])
def test_the_built_module_computes_what_plain_pytorch_does(batch):
    torch, reference = _reference_fpn()
    from torch.utils.flop_counter import FlopCounterMode

    from archcalc.torch.build import build_model
    from archcalc.torch.check import run_check
    model = build_model(loads(FPN)).eval()
    # module paths are the table's names: the reference loads its state_dict strictly
    reference.load_state_dict(model.state_dict())
    reference.eval()
    x = torch.randn(batch, 3, 16, 16)
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert list(got) == ["p1", "p2"]
    for name in want:
        assert got[name].shape == want[name].shape
        torch.testing.assert_close(got[name], want[name])
    report = report_of(FPN, batch=batch)
    assert report.totals["params"] == sum(p.numel() for p in reference.parameters()) == 2768
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        reference.to("meta")(torch.empty(batch, 3, 16, 16))
    assert report.totals["macs"] * batch == counter.get_total_flops() // 2
    # check: shapes, params, MACs, activation and saved bytes, measured
    result = run_check(loads(FPN), batch=batch)
    assert result.ok, [(c.name, c.calculated, c.measured) for c in result.totals if not c.ok]


def test_no_in_place_op_overwrites_a_value_a_later_entry_reads():
    torch = pytest.importorskip("torch")
    from archcalc.torch.build import build_model
    from archcalc.torch.check import run_check
    # relu reads a (the previous row) in place unless a later `from` still needs a
    text = HEAD + '''layers = [
  {name = "a", conv = 4, kernel = 1},
  {name = "act", relu = true},
  {name = "b", from = "a", conv = 4, kernel = 1},
  {name = "sum", merge = "add", from = ["act", "b"]},
]
'''
    model = build_model(loads(text)).eval()
    assert model.act.inplace is False
    x = torch.randn(2, 3, 16, 16)
    a = model.a(x)
    with torch.no_grad():
        assert torch.equal(model(x), torch.relu(a) + model.b(a))
    assert run_check(loads(text), batch=2).ok


def test_no_in_place_op_writes_into_a_view_of_a_value_a_later_entry_reads():
    torch = pytest.importorskip("torch")
    from archcalc.torch.build import build_model
    from archcalc.torch.check import run_check
    # fl is a view of a (its storage): relu on it in place would change what f reads
    text = HEAD + '''layers = [
  {name = "a", conv = 4, kernel = 1},
  {name = "fl", flatten = true},
  {name = "act", relu = true},
  {name = "f", from = "a", flatten = true},
  {name = "sum", merge = "add", from = ["act", "f"]},
]
'''
    model = build_model(loads(text)).eval()
    assert model.act.inplace is False
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a = model.a(x).flatten(1)
        assert torch.equal(model(x), torch.relu(a) + a)
    assert run_check(loads(text), batch=2).ok


@pytest.mark.parametrize("batch", [1, 2])
def test_merges_of_three_cost_two_ops_and_keep_what_autograd_keeps(batch):
    torch = pytest.importorskip("torch")
    from archcalc.torch.build import build_model
    from archcalc.torch.check import run_check
    text = HEAD + '''layers = [
  {name = "a", conv = 4, kernel = 3, padding = 1},
  {name = "b", from = "input", conv = 4, kernel = 3, padding = 1},
  {name = "c", from = "input", conv = 4, kernel = 3, padding = 1},
  {name = "s", merge = "add", from = ["a", "b", "c"]},
  {name = "d", conv = 4, kernel = 1},
  {name = "e", from = "s", conv = 4, kernel = 1},
  {name = "f", from = "s", conv = 4, kernel = 1},
  {name = "m", merge = "multiply", from = ["d", "e", "f"]},
]
'''
    r = rows(report_of(text))
    assert r["s"].flops == 2 * 4 * 16 * 16 and r["m"].flops == 2 * 4 * 16 * 16
    model = build_model(loads(text)).eval()
    x = torch.randn(batch, 3, 16, 16)
    with torch.no_grad():
        s = model.a(x) + model.b(x) + model.c(x)
        torch.testing.assert_close(model(x), model.d(s) * model.e(s) * model.f(s))
    result = run_check(loads(text), batch=batch)
    assert result.ok
    # (d * e) * f keeps d, e, the partial product d * e and f: measured to the byte
    saved = next(c for c in result.totals if c.what.startswith("saved for backward"))
    assert saved.calculated == saved.measured


def test_structures_read_outer_names_and_are_read_into():
    torch = pytest.importorskip("torch")
    from archcalc.torch.build import build_model
    from archcalc.torch.check import run_check
    from archcalc.torch.export import to_python
    # a residual body and a concat branch read stem (outside them); sum reads res.c
    text = HEAD + '''layers = [
  {name = "stem", conv = 4, kernel = 3, padding = 1},
  {name = "x", conv = 4, kernel = 3, padding = 1, activation = "relu"},
  {name = "res", residual = [
    {name = "c", conv = 4, kernel = 1},
    {name = "d", merge = "add", from = ["c", "stem"]},
  ], activation = "relu"},
  {name = "cat", concat = [[{conv = 2, kernel = 1}], [{from = "stem", conv = 2, kernel = 1}]]},
  {name = "sum", merge = "add", from = ["cat", "res.c"]},
]
'''
    r = rows(report_of(text))
    assert r["res.d"].inputs == ("res.c", "stem") and r["cat.b2.conv1"].inputs == ("stem",)
    assert r["sum"].inputs == ("cat.concat", "res.c")
    model = build_model(loads(text)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        stem = model.stem(x)
        h = model.x(stem)
        c = model.res.c(h)
        res = torch.relu(h + (c + stem))
        want = torch.cat([model.cat.b1.conv1(res), model.cat.b2.conv1(stem)], 1) + c
        torch.testing.assert_close(model(x), want)
        namespace: dict = {}
        exec(compile(to_python(model), "exported.py", "exec"), namespace)
        exported = namespace["G"]().eval()
        exported.load_state_dict(model.state_dict())
        torch.testing.assert_close(exported(x), want)
    assert run_check(loads(text), batch=2).ok


def test_export_writes_the_graph_as_python_that_computes_the_same():
    torch = pytest.importorskip("torch")
    from archcalc.torch.build import build_model
    from archcalc.torch.export import to_python
    model = build_model(loads(FPN)).eval()
    source = to_python(model)
    assert "x7 = self.sum1['post'](x6 + x5)" in source
    assert "return {'p1': x8, 'p2': x4}" in source
    namespace: dict = {}
    exec(compile(source, "exported.py", "exec"), namespace)
    exported = namespace["G"]().eval()
    exported.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        got, want = exported(x), model(x)
    assert all(torch.equal(got[k], want[k]) for k in want)


# -- written back, and random DAGs ----------------------------------------------

@st.composite
def dags(draw):
    """A random DAG of convs, relus and merges on 8 x 8 maps: each entry reads
    the previous one or a named earlier one; every output is read (a last
    concat takes the ones left)."""
    entries, tensors, unread = [], [("input", 3)], set()
    for i in range(draw(st.integers(1, 7))):
        name = f"n{i}"
        merge = draw(st.sampled_from(["add", "multiply", "concat"])) \
            if len(tensors) >= 3 and draw(st.booleans()) else None
        if merge:
            pool = tensors[1:] if merge == "concat" else \
                [t for t in tensors[1:] if t[1] == tensors[-1][1]]
            if len(pool) < 2:
                merge = None
        if merge:
            picked = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=3,
                                   unique=True))
            entry = {"name": name, "merge": merge, "from": [p[0] for p in picked]}
            if draw(st.booleans()):
                entry["activation"] = "relu"
            channels = sum(p[1] for p in picked) if merge == "concat" else picked[0][1]
            unread -= {p[0] for p in picked}
        elif i and draw(st.integers(0, 3)) == 0:
            # a relu row, in place unless its input is read later; not on the input,
            # which needs no gradient (the relu would keep nothing)
            source = draw(st.sampled_from(tensors[1:]))
            entry, channels = {"name": name, "relu": True}, source[1]
            if source is not tensors[-1]:
                entry["from"] = source[0]
            unread.discard(source[0])
        else:
            channels = draw(st.sampled_from([2, 4]))
            kernel = draw(st.sampled_from([1, 3]))
            entry = {"name": name, "conv": channels, "kernel": kernel, "padding": kernel // 2}
            source = draw(st.sampled_from(tensors))
            if source is not tensors[-1]:
                entry["from"] = source[0]
            unread.discard(source[0])
        if entries and entries[-1]["name"] in unread and "from" not in entry and not merge:
            unread.discard(entries[-1]["name"])
        unread.add(name)
        entries.append(entry)
        tensors.append((name, channels))
    left = [e["name"] for e in entries[:-1] if e["name"] in unread]
    if left:
        entries.append({"name": "tail", "merge": "concat",
                        "from": left + [entries[-1]["name"]]})
    return entries


def _spec(entries) -> str:
    from archcalc.spec.writer import inline
    return '[model]\nname = "dag"\ninput = [3, 8, 8]\nlayers = [\n' + \
        "".join(f"  {inline(e)},\n" for e in entries) + "]\n"


@settings(max_examples=25)
@given(dags())
def test_random_dags_write_back_and_agree_with_the_built_module(entries):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from archcalc.torch.build import build_model
    text = _spec(entries)
    report = analyze(loads(text))
    # spec text -> load -> write -> load: the same table
    again = analyze(loads(to_toml(loads(text))))
    assert again.to_json() == report.to_json()
    with torch.device("meta"):
        model = build_model(loads(text))
    assert sum(p.numel() for p in model.parameters()) == report.totals["params"]
    with FlopCounterMode(display=False) as counter:
        out = model(torch.empty(2, 3, 8, 8, device="meta"))
    assert tuple(out.shape) == (2, *report.rows[-1].output_shape)
    assert counter.get_total_flops() // 2 == 2 * report.totals["macs"]


@settings(max_examples=10)
@given(dags(), st.sampled_from([1, 2]))
def test_random_dags_check_out_measured(entries, batch):
    """Shapes, params, MACs, activation and saved bytes measured on the CPU."""
    pytest.importorskip("torch")
    from archcalc.torch.check import run_check
    result = run_check(loads(_spec(entries)), batch=batch)
    assert result.ok, [(c.what, c.calculated, c.measured) for c in result.totals if not c.ok]


def test_depth_is_the_longest_path_through_the_dag():
    model = build_graph(loads(FPN))
    # c1, c2, lat2, (up2), (sum1), p1: 4 weighted layers on the longest path
    assert depth(model.body, model.outputs) == 4
    text = HEAD + '''outputs = ["deep", "flat"]
layers = [
  {name = "a", conv = 4, kernel = 1},
  {name = "b", conv = 4, kernel = 1},
  {name = "c", conv = 4, kernel = 1},
  {name = "deep", conv = 4, kernel = 1},
  {name = "flat", from = "input", conv = 4, kernel = 1},
]
'''
    model = build_graph(loads(text))
    assert depth(model.body, model.outputs) == 4


def test_the_shipped_graph_specs_check_out():
    from conftest import SPECS
    path = os.path.join(SPECS, "fpn_resnet50.toml")
    if not os.path.exists(path):
        pytest.skip("fpn_resnet50.toml is not shipped here")
    from archcalc.spec.loader import load
    report = analyze(load(path))
    # torchvision's resnet_fpn_backbone("resnet50"): sum(p.numel()) (the spec's notes)
    assert report.totals["params"] == 26_799_296
    assert [name for name, _ in report.outputs] == [
        "fpn.layer_blocks.0", "fpn.layer_blocks.1", "fpn.layer_blocks.2",
        "fpn.layer_blocks.3", "fpn.pool"]


def test_lint_and_the_html_graph_walk_a_dag():
    from archcalc.lint import lint
    from archcalc.render.report import fragment
    report = report_of(FPN)
    assert lint(report) == []
    html = fragment([report])
    # the merge entry is drawn with what it reads; so are the rows that read by name
    assert 'class="ac-from">from lat1, up2</div>' in html
    assert 'class="ac-from">from c1</div>' in html
    assert report.row_tree is report.tree
    assert [r.name for r in report.tree.rows()] == [r.name for r in report.rows[1:]]


def test_a_merge_of_many_names_is_read_in_linear_time():
    # 100,000 names in one merge (a hostile file): one pass, one line
    names = ", ".join(['"a"', '"b"'] + ['"b"'] * 100_000)
    text = HEAD + 'layers = [{conv = 4, kernel = 1, name = "a"}, {conv = 4, kernel = 1, ' \
        'name = "b"}, {merge = "add", from = [' + names + ']}]'
    with pytest.raises(SpecError, match="merge reads 'b' twice; name each output once"):
        report_of(text)
