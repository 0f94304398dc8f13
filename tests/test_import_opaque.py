"""Opaque rows: an operation archcalc has no kind for imports as a row whose
figures are measured on the module, never guessed, never zero by default.

Every figure here is PyTorch's: sum(p.numel()) of the model, FlopCounterMode
of the whole model (on the meta device, batch 1) and of the op alone; the
import must give the same numbers, mark the measured rows, and refuse them
under --strict with the list of ops."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import archcalc  # noqa: E402
from archcalc.analysis import analyze  # noqa: E402
from archcalc.errors import SpecError  # noqa: E402
from archcalc.spec.loader import loads  # noqa: E402
from archcalc.torch import importer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flops_of(fn, *shapes) -> int:
    """FlopCounterMode's FLOPs of fn on meta tensors of these shapes."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn(*(torch.zeros(s, device="meta") for s in shapes))
    return counter.get_total_flops()


def model_macs(model, shape) -> int:
    """The whole model's FlopCounterMode / 2 at batch 1, on the meta device."""
    return flops_of(model.to("meta").eval(), (1, *shape)) // 2


def rows_of(done):
    return analyze(loads(done.text, file="<import>")).to_dict()["layers"]


# -- the models ------------------------------------------------------------------


class Gram(nn.Module):
    """x @ x^T per channel: a matrix product of two tensors (the input and
    its transpose), which no kind has: the module is kept whole."""

    def forward(self, x):
        return x @ x.transpose(-1, -2)


class Custom(nn.Module):
    """conv, then ops without a kind: a cumulative sum, a module of its own (a
    Gram matrix), a product with a parameter the module holds, an FFT."""

    def __init__(self, c=8, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.gram = Gram()
        self.mix = nn.Parameter(torch.randn(8, 8))
        self.fc = nn.Linear(c * 8 * 8, classes)

    def forward(self, x):
        x = torch.cumsum(self.conv(x), 1)
        x = self.gram(x)
        x = torch.matmul(x, self.mix)
        x = torch.fft.fft2(x).abs()
        return self.fc(torch.flatten(x, 1))


SHAPE = (3, 8, 8)


@pytest.fixture(scope="module")
def custom():
    torch.manual_seed(0)
    model = Custom().eval()
    return model, importer.import_module(model, SHAPE, label="Custom")


def test_opaque_rows_are_measured_and_the_totals_are_pytorchs(custom):
    model, done = custom
    report = analyze(loads(done.text, file="<import>"))
    assert report.totals["params"] == done.params == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == model_macs(Custom(), SHAPE)
    assert not report.free_symbols
    rows = {r["name"]: r for r in report.to_dict()["layers"]}
    measured = [name for name, r in rows.items() if r.get("derived") is False]
    assert measured == ["cumsum", "gram", "matmul", "fft_fft2", "abs"]
    # each opaque row's MACs: FlopCounterMode of that op alone, at batch 1
    assert rows["gram"]["macs"] == flops_of(Gram(), (1, 8, 8, 8)) // 2 == 8 * 8 * 8 * 8
    assert rows["matmul"]["macs"] == flops_of(torch.matmul, (1, 8, 8, 8), (8, 8)) // 2
    assert rows["matmul"]["params"] == 64               # the parameter it reads
    assert rows["cumsum"]["macs"] == rows["fft_fft2"]["macs"] == 0   # FlopCounterMode's too
    assert all(rows[n]["output_shape"] == [8, 8, 8] for n in measured)
    assert "derived" not in rows["conv"]                # a kind's row: derived


def test_the_spec_says_its_rows_are_measured(custom):
    _, done = custom
    assert "Measured, not derived: 5 opaque row(s)" in done.text
    assert sorted(done.opaque)[0].endswith("Gram") or "Gram" in " ".join(done.opaque)
    spec = loads(done.text, file="<import>")
    with pytest.raises(SpecError, match="opaque row .* stands for code"):
        spec.build()


def test_the_table_marks_measured_rows(custom):
    from rich.console import Console

    from archcalc.render.table import MEASURED, render_markdown, render_rich
    _, done = custom
    report = analyze(loads(done.text, file="<import>"))
    text = render_markdown(report)
    assert "| 4,096† |" in text and MEASURED[:40] in text
    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    render_rich(report, console)
    shown = console.export_text()
    assert "4,096†" in shown and "† measured" in shown


def test_strict_refuses_with_the_list(custom):
    model, _ = custom
    with pytest.raises(importer.Unsupported) as e:
        importer.import_module(model, SHAPE, label="Custom", strict=True)
    text = str(e.value)
    assert "cumsum: 1 call" in text and "at gram" in text and "Without --strict" in text
    with pytest.raises(importer.Unsupported):
        archcalc.from_module(model, SHAPE, strict=True)
    spec = archcalc.from_module(model, SHAPE, allow_opaque=True)   # old keyword: no effect
    assert analyze(spec).totals["macs"] == model_macs(Custom(), SHAPE)


NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.cumsum(self.conv(x), 1).flatten(1)
'''


def test_cli_strict_exits_1_in_one_line_and_default_writes_the_spec(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from archcalc.cli import main
    (tmp_path / "net.py").write_text(NET)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    # a real process: nothing but the one line reaches stderr
    done = subprocess.run([sys.executable, "-m", "archcalc", "import", f"{tmp_path}/net.py:Net",
                           "--input", "3x4x4", "--strict"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert done.returncode == 1 and done.stderr.startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cumsum: 1 call, at the model's forward" in done.stderr
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["import", f"{tmp_path}/net.py:Net", "--input", "3x4x4",
                                     "-o", "net.toml"])
    assert done.exit_code == 0, done.stderr
    assert "1 opaque row(s), measured, not derived" in done.stderr
    table = CliRunner().invoke(main, ["table", "net.toml", "--format", "json"])
    rows = json.loads(table.stdout)["layers"]
    assert [r["name"] for r in rows if r.get("derived") is False] == ["cumsum"]


# -- any rank ------------------------------------------------------------------------


class Heads(nn.Module):
    """Channels split into heads: a rank-4 tensor per sample (heads x C/heads x
    H x W), as attention's B x heads x N x d, summed back over the heads."""

    def forward(self, x):
        b, c, h, w = x.shape
        y = x.view(b, 2, c // 2, h, w) * 2.0
        return (y @ y.transpose(-1, -2)).sum(1)


class WithHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.widen = nn.Conv2d(4, 8, 1)
        self.heads = Heads()
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        y = self.conv(x)
        b = y.shape[0]
        y = y.view(b, 2, 4, 6, 6).mul(1.0).sum(1)      # rank 4 per sample, then back
        return self.fc(torch.flatten(self.heads(self.widen(y)), 1))


def test_an_opaque_row_of_any_rank():
    model = WithHeads().eval()
    done = importer.import_module(model, (3, 6, 6), label="WithHeads")
    rows = rows_of(done)
    assert [2, 4, 6, 6] in [r["output_shape"] for r in rows if r.get("derived") is False]
    report = analyze(loads(done.text, file="<import>"))
    assert report.totals["macs"] == model_macs(WithHeads(), (3, 6, 6))
    assert report.totals["params"] == sum(p.numel() for p in WithHeads().parameters())


# -- random custom ops ------------------------------------------------------------------


# ops without a kind, each keeping a C x 8 x 8 map (C = 8): FlopCounterMode
# counts the products, nothing else. TWO_TENSORS compute on two tensors (x and
# a view of it): a row reads one input, so their module is kept whole
TWO_TENSORS = {"gram", "einsum"}
OPS = {
    "cumsum": lambda m, x: torch.cumsum(x, 2),
    "gram": lambda m, x: x @ x.transpose(-1, -2),
    "mix": lambda m, x: torch.matmul(x, m.mix),
    "roll": lambda m, x: torch.roll(x, 1, 3),
    "fft": lambda m, x: torch.fft.fft2(x).real,
    "einsum": lambda m, x: torch.einsum("bchw,bcwv->bchv", x, x),
    # a parameter expanded to the batch: measured at the probe's batch alone
    "bmm": lambda m, x: torch.bmm(x.flatten(1, 2), m.mix.expand(x.shape[0], 8, 8)
                                  ).view(x.shape),
}


class Op(nn.Module):
    """One op of OPS in a module of its own (a parameter for those that read one)."""

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.mix = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        return OPS[self.name](self, x)


class Chain(nn.Module):
    def __init__(self, names, inline):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.ops = nn.ModuleList(Op(n) for n in names)
        self.inline = inline
        self.fc = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        for op, inline in zip(self.ops, self.inline):
            inline = inline and op.name not in TWO_TENSORS
            x = OPS[op.name](op, x) if inline else op(x)
            x = torch.relu(x)
        return self.fc(torch.flatten(x, 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(OPS)), st.booleans()), min_size=1,
                max_size=4))
def test_random_custom_ops_import_with_pytorchs_totals(ops):
    names = [n for n, _ in ops]
    model = Chain(names, [inline for _, inline in ops]).eval()
    done = importer.import_module(model, (3, 8, 8), label="Chain")
    report = analyze(loads(done.text, file="<import>"))
    reachable = sum(p.numel() for p in model.parameters())
    assert report.totals["params"] + sum(done.unused.values()) == reachable
    assert done.params == report.totals["params"]
    assert report.totals["macs"] == model_macs(model, (3, 8, 8))
    assert not report.free_symbols
    assert all(r.get("derived", True) is False for r in rows_of(done) if r["type"] == "opaque")
    with pytest.raises(importer.Unsupported):
        importer.import_module(model, (3, 8, 8), label="Chain", strict=True)


# -- computed from parameters, tuples, forwards fx cannot trace -----------------------------


class Computed(nn.Module):
    """A bias computed from two parameters in the model's own forward (no
    module to keep whole: it goes, params and work, to the row that reads it),
    and the values of a max over channels (its indices never read)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.table = nn.Parameter(torch.randn(8, 16))
        self.proj = nn.Parameter(torch.randn(16, 64))
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        bias = (self.table @ self.proj).view(1, 8, 8, 8)
        x = self.conv(x) + bias
        x = x.max(1)[0]
        return self.fc(torch.flatten(x, 1))


def test_a_tensor_computed_from_parameters_goes_to_the_row_that_reads_it():
    model = Computed().eval()
    done = importer.import_module(model, SHAPE, label="Computed")
    rows = {r["name"]: r for r in rows_of(done)}
    add = next(r for r in rows.values() if r.get("derived") is False and r["params"])
    assert add["params"] == 8 * 16 + 16 * 64
    assert add["macs"] == 8 * 16 * 64            # table @ proj, once (batch 1)
    assert rows["max"]["output_shape"] == [8, 8] and rows["max"].get("derived") is False
    report = analyze(loads(done.text, file="<import>"))
    assert report.totals["params"] == sum(p.numel() for p in Computed().parameters())
    assert report.totals["macs"] == model_macs(Computed(), SHAPE)
    assert "do not scale with the batch" in done.text


class Looping(nn.Module):
    """A forward that loops on a size: fx cannot trace it (int() of a Proxy)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        for _ in range(int(math.log2(x.shape[-1])) - 1):
            x = self.conv(x)
        return x


class HasLoops(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = Looping()
        self.b = Looping()
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.b(torch.relu(self.a(self.stem(x)))), 1))


def test_a_module_fx_cannot_trace_is_kept_whole_and_fx_traces_the_rest():
    with pytest.raises(importer.TraceFailure) as e:
        importer.trace(HasLoops())
    assert e.value.module == "a"
    done = importer.import_module(HasLoops().eval(), SHAPE, label="HasLoops")
    assert done.tracer == "torch.fx" and done.fx_error is None
    assert "Kept whole, as torch.fx cannot trace their forward" in done.text
    rows = {r["name"]: r for r in rows_of(done)}
    looping = flops_of(Looping(), (1, 8, 8, 8)) // 2
    assert rows["a"]["macs"] == rows["b"]["macs"] == looping == 2 * 8 * 8 * 8 * 9 * 8
    assert rows["a"]["params"] == 8 * 8 * 9 + 8 and rows["a"].get("derived") is False
    report = analyze(loads(done.text, file="<import>"))
    assert report.totals["macs"] == model_macs(HasLoops(), SHAPE)
    assert report.totals["params"] == sum(p.numel() for p in HasLoops().parameters())


class TopGram(nn.Module):
    """A product of two tensors in the model's own forward: no module to keep
    whole, no row reads two tensors, so the forward is one opaque row."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = self.conv(x)
        return self.fc(torch.flatten(x @ x.transpose(-1, -2), 1))


def test_a_forward_that_combines_tensors_itself_is_one_measured_row():
    done = importer.import_module(TopGram().eval(), SHAPE, label="TopGram")
    assert done.whole
    (row,) = [r for r in rows_of(done) if r["name"] != "input"]
    assert (row["name"], row["output_shape"], row.get("derived")) == ("model", [10], False)
    assert row["params"] == sum(p.numel() for p in TopGram().parameters())
    assert row["macs"] == model_macs(TopGram(), SHAPE)
    assert "operator.matmul (it combines several tensors)" in done.text
    with pytest.raises(importer.Unsupported, match="matmul"):
        importer.import_module(TopGram().eval(), SHAPE, label="TopGram", strict=True)


def test_the_probe_is_on_the_nodes_meta():
    """ShapeProp-style: each node's probed output (shape, dtype) and marked
    arguments live in node.meta["archcalc"], which the measurement reads."""
    from archcalc.torch.importer import probing, tracing
    gm = tracing.trace(Custom().eval())
    found = probing.probe(gm, SHAPE, meta=True)
    conv = next(n for n in gm.graph.nodes if n.target == "conv")
    shape, (args, kwargs) = conv.meta[probing.META_KEY]
    assert tuple(shape) == (probing.PROBE_BATCH, 8, 8, 8) and shape.dtype == torch.float32
    assert found.values[conv] is shape and found.args.get(conv) == (args, kwargs)
    assert isinstance(args[0], probing._TensorArg) and args[0].node.op == "placeholder"


def test_an_opaque_row_holds_at_its_input_alone(custom):
    """Measured figures are not scaled to another input: refused in one line."""
    _, done = custom
    with pytest.raises(SpecError, match=r"measured on a 8 x 8 x 8 input; here it gets "
                                        r"8 x 16 x 16"):
        analyze(loads(done.text, file="<import>"), input=(3, 16, 16))


class _SizeEncoding(nn.Module):
    """A table made from the module's weights and the input's sizes alone (as
    EdgeNeXt's Fourier position encoding): called with ints, not tensors."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(8, dim, 1)

    def forward(self, b: int, h: int, w: int):
        grid = torch.ones(b, 8, h, w, device=self.proj.weight.device).cumsum(2)
        return self.proj(grid)


class _AddsEncoding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pos = _SizeEncoding(6)

    def forward(self, x):
        y = self.conv(x)
        b, _, h, w = y.shape
        return y + self.pos(b, h, w)


def test_a_module_computing_from_its_weights_and_sizes_is_counted_once_per_sample():
    model = _AddsEncoding().eval()
    done = importer.import_module(model, (3, 8, 8))
    totals = analyze(loads(done.text)).totals
    assert not done.unused
    assert totals["params"] == sum(p.numel() for p in model.parameters())
    assert totals["macs"] == model_macs(model, (3, 8, 8))
    with pytest.raises(importer.Unsupported):      # never a silent drop under --strict
        importer.import_module(model, (3, 8, 8), strict=True)
