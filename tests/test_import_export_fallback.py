"""Issue 11: the torch.export fallback of `archcalc import`.

Models torch.fx cannot trace symbolically (a loop or a branch on a shape,
int()/len()/math on a size) import through torch.export at the probe's
input: params = sum(p.numel()), MACs = FlopCounterMode / 2 on the meta
device, the built spec loads the original's state_dict strictly and gives
its outputs within 1e-5, and the spec and the command line say which tracer
read the model. A model neither can trace (a branch on a tensor's value) is
one line naming both failures, exit 2. And on models fx can trace, the
export path gives the very same spec.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.spec.loader import load, loads
from conftest import ROOT

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.torch import importer  # noqa: E402

MODELS = '''
import math

import torch
from torch import nn
from torch.nn import functional as F


class ShapeLoop(nn.Module):
    """Downsamples as often as the input's size allows: a loop over a count
    computed from the shape (fx: int() of a Proxy)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.downs = nn.ModuleList(nn.Conv2d(8, 8, 3, stride=2, padding=1) for _ in range(4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.relu(self.bn(self.stem(x)))
        for i in range(int(math.log2(x.shape[-1])) - 2):
            x = self.relu(self.downs[i](x))
        return self.fc(torch.flatten(self.pool(x), 1))


class ShapeBranch(nn.Module):
    """A residual only where the shapes agree, a split sized by int(), an
    identity module (fx: a Proxy in an if)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.skip = nn.Identity()
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        y = self.conv2(x)
        if y.shape == x.shape:
            y = y + self.skip(x)
        half = int(y.shape[1]) // 2
        a, b = torch.split(y, [half, half], dim=1)
        y = torch.cat([a, F.relu(self.conv3(b))], dim=1)
        y = F.max_pool2d(y, 2)
        return self.fc(y.view(y.size(0), -1))


class Tokens(nn.Module):
    """Tokens through self-attention called as attn(h, h, h), behind a test
    with len() and math.sqrt() of a size (fx: len of a Proxy)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        if len(t.shape) == 3 and math.sqrt(t.shape[-1]) == 4.0:
            h = self.norm(t)
            t = t + self.attn(h, h, h, need_weights=False)[0]
        return self.head(t[:, 0])


class DataDependent(nn.Module):
    """Branches on a tensor's value: neither fx nor export can trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.conv(x)
'''

SHAPES = {"ShapeLoop": (3, 32, 32), "ShapeBranch": (3, 8, 8), "Tokens": (3, 16, 16)}


@pytest.fixture(scope="module")
def models_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fallback") / "fallback_nets.py"
    path.write_text(MODELS)
    return path


@pytest.fixture(scope="module")
def nets(models_file):
    spec = importlib.util.spec_from_file_location("fallback_nets", models_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def meta_macs(model, shape) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape, device="meta"))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_fx_cannot_trace_these(nets, name):
    with pytest.raises(importer.TraceFailure):
        importer.trace(getattr(nets, name)().eval())


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_export_fallback_counts_and_computes_what_the_model_does(nets, name):
    shape = SHAPES[name]
    torch.manual_seed(0)
    original = getattr(nets, name)().eval()
    done = importer.import_module(original, shape, label=name)
    assert done.tracer == "torch.export" and done.fx_error
    assert "Traced with torch.export" in done.text
    spec = loads(done.text, file=name)
    report = analyze(spec)
    total = sum(p.numel() for p in original.parameters())
    assert report.totals["params"] == done.params == total - sum(done.unused.values())
    with importer.empty_weights():
        on_meta = getattr(nets, name)().eval()
    assert report.totals["macs"] == meta_macs(on_meta, shape)
    assert not report.free_symbols
    built = spec.build().eval()
    state = {k: v for k, v in original.state_dict().items()
             if not any(k.startswith(u + ".") for u in done.unused)}
    built.load_state_dict(state, strict=True)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert (built(x) - original(x)).abs().max().item() <= 1e-5


def test_the_loop_is_fixed_to_the_input(nets):
    """ShapeLoop at 32x32 runs three of its four downsamples: the fourth is
    left out (and said), as a module the forward never calls."""
    done = importer.import_module(nets.ShapeLoop().eval(), (3, 32, 32), label="ShapeLoop")
    assert set(done.unused) == {"downs.3"}
    assert "fixed to that input" in done.text


def test_export_path_gives_fx_s_spec(monkeypatch):
    """On models fx can trace, the export path (forced) writes the same spec."""
    tv = pytest.importorskip("torchvision")
    for name in ("resnet18", "mobilenet_v3_small", "vit_b_16"):
        with importer.empty_weights():
            model = tv.models.get_model(name, weights=None).eval()
        shape = (3, 224, 224) if name == "vit_b_16" else (3, 64, 64)
        by_fx = importer.import_module(model, shape, label=name)
        with monkeypatch.context() as m:
            def fail(*args, **kwargs):
                raise importer.TraceFailure("forced")
            m.setattr(importer.tracing, "trace", fail)
            by_export = importer.import_module(model, shape, label=name)
        assert (by_fx.tracer, by_export.tracer) == ("torch.fx", "torch.export")

        def body(text):
            return [line for line in text.splitlines() if not line.startswith("notes")]
        assert body(by_fx.text) == body(by_export.text), name


def test_neither_tracer_is_one_line(nets):
    with pytest.raises(SpecError) as e:
        importer.import_module(nets.DataDependent().eval(), (3, 8, 8), label="DataDependent")
    text = str(e.value)
    assert len(text.splitlines()) == 1
    assert "torch.fx cannot trace DataDependent (TraceError" in text
    assert "nor can torch.export (GuardOnDataDependentSymNode" in text


def run(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}   # this checkout's archcalc
    return subprocess.run([sys.executable, "-m", "archcalc", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env)


def test_command_line_says_the_tracer_and_fails_in_one_line(models_file, tmp_path):
    from click.testing import CliRunner

    from archcalc.cli import main
    out = tmp_path / "branch.toml"
    done = CliRunner().invoke(main, ["import", f"{models_file}:ShapeBranch", "--input",
                                     "3x8x8", "-o", str(out)])
    assert done.exit_code == 0, done.stderr
    assert "note: traced with torch.export: torch.fx cannot trace" in done.stderr
    assert analyze(load(str(out))).totals["params"] == 4125
    # a real process: nothing else reaches stderr (no traceback, no partial graph)
    done = run("import", f"{models_file}:DataDependent", "--input", "3x8x8", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: torch.fx cannot trace") and \
        "nor can torch.export" in done.stderr
