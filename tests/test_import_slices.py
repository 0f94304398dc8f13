"""A split whose slices are used apart (Res2Net adds slice i to the previous
branch's output; EdgeNeXt likewise), a slice left unused, and DPN's
x[:, :n] / x[:, n:]: imported as channel_slice rows that read the split
tensor with `from` (archcalc/layers/slice.py), checked against PyTorch
itself: params == sum(p.numel()), MACs == FlopCounterMode / 2 on the meta
device, the spec's built module loads the original's state_dict strictly and
computes its outputs within 1e-5. A split whose slices are concatenated again
in order stays a `split` entry."""
import tomllib

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from archcalc.analysis import analyze
from archcalc.cli import main
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from archcalc.torch.importer import targets  # noqa: E402
from test_import_dag import check_import, meta_macs  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flat_entries(entries):
    """Every entry, inside levels, residuals and branches too."""
    for e in entries:
        if not isinstance(e, dict):
            continue
        yield e
        for value in e.values():
            if isinstance(value, list):
                yield from flat_entries(value)


def slices_of(text) -> list:
    return [e["channel_slice"] for e in flat_entries(tomllib.loads(text)["model"]["layers"])
            if "channel_slice" in e]


class Res2NetLike(nn.Module):
    """Res2Net's bottleneck (Gao et al. 2019): conv1's output split in
    ``scale`` slices of ``width``; branch i convolves slice i plus branch
    i-1's output; the last slice joins the concat as it is."""

    def __init__(self, width=4, scale=4, chunk=False):
        super().__init__()
        self.width, self.scale, self.chunk = width, scale, chunk
        self.conv1 = nn.Conv2d(8, width * scale, 1)
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
                          nn.ReLU()) for _ in range(scale - 1))
        self.conv3 = nn.Conv2d(width * scale, 8, 1)
        self._init = (width, scale, chunk)

    def _factory(self):
        return Res2NetLike(*self._init)

    def forward(self, x):
        y = self.conv1(x)
        spx = y.chunk(self.scale, 1) if self.chunk else torch.split(y, self.width, 1)
        spo = []
        for i, conv in enumerate(self.convs):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = conv(sp)
            spo.append(sp)
        spo.append(spx[-1])
        return self.conv3(torch.cat(spo, 1)) + x


class Res2NetBlocks(nn.Module):
    """timm's Bottle2neck in its two forms, one shared relu module: the first
    block of a stage convolves each slice alone and pools the last (its
    split folds, but branch i holds convs.i, so convs would be a level in
    every branch: written as rows instead); the others add slice i to
    branch i-1's output."""

    def __init__(self, first=True):
        super().__init__()
        self.first = first
        self.conv1, self.bn1 = nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(3))
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.relu = nn.ReLU()
        self.conv3 = nn.Conv2d(16, 8, 1)

    def _factory(self):
        return Res2NetBlocks(self.first)

    def forward(self, x):
        spx = torch.split(self.relu(self.bn1(self.conv1(x))), 4, 1)
        spo = []
        for i, conv in enumerate(self.convs):
            sp = spx[i] if i == 0 or self.first else sp + spx[i]
            sp = self.relu(conv(sp))
            spo.append(sp)
        spo.append(self.pool(spx[-1]) if self.first else spx[-1])
        return self.relu(self.conv3(torch.cat(spo, 1)) + x)


class DualPath(nn.Module):
    """DPN's dual path: one conv's output cut in x[:, :n] (added to the
    residual path) and x[:, n:] (concatenated to the dense path)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 12, 3, padding=1)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(torch.cat([x[:, :4] + y[:, :4], y[:, 4:, :, :]], 1))


class UnusedSlice(nn.Module):
    """A chunk whose second half is never read (a slice left unused)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(4, 6, 3)

    def forward(self, x):
        a, _ = self.conv(x).chunk(2, dim=1)
        return self.head(a)


class CleanSplit(nn.Module):
    """ShuffleNet V2's unit: the slices concatenated again in order."""

    def __init__(self):
        super().__init__()
        self.branch = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return torch.cat([a, self.branch(b)], 1)


@pytest.mark.parametrize("model, slices", [
    (Res2NetLike(), [[0, 4], [4, 8], [8, 12], [12, 16]]),
    (Res2NetLike(chunk=True), [[0, 4], [4, 8], [8, 12], [12, 16]]),
    (DualPath(), [[0, 4], [0, 4], [4, 12]]),
    (UnusedSlice(), [[0, 4]]),
    (Res2NetBlocks(first=True), [[0, 4], [4, 8], [8, 12], [12, 16]]),
    (Res2NetBlocks(first=False), [[0, 4], [4, 8], [8, 12], [12, 16]]),
], ids=["res2net_split", "res2net_chunk", "dual_path", "unused_slice", "res2net_first_block",
        "res2net_block"])
def test_slices_used_apart_import_exactly(model, slices, tmp_path):
    text = check_import(model, (8, 6, 6), check_cli=True, tmp_path=tmp_path)
    assert sorted(slices_of(text)) == sorted(slices)
    assert "opaque" not in text


def test_slices_concatenated_in_order_stay_a_split():
    text = check_import(CleanSplit(), (8, 5, 5))
    assert slices_of(text) == [] and "split = " in text


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(1, 5), scale=st.integers(3, 5), chunk=st.booleans())
def test_res2net_like_blocks_of_any_width_and_scale(width, scale, chunk):
    """Any width and scale from 3 (at 2 the one branch reads its slice alone:
    a split): scale slices of width channels each, exact."""
    text = check_import(Res2NetLike(width, scale, chunk), (8, 5, 5))
    assert slices_of(text) == [[i * width, (i + 1) * width] for i in range(scale)]


def test_dpn68_imports_exactly_without_opaque_rows():
    """DPN-68's x[:, :n] and x[:, n:] are channel_slice rows (they were
    measured opaque rows that cannot be built): exact at 224 on the meta
    device, and at 64 x 64 the built spec computes timm's logits with its
    state_dict."""
    import timm
    target = targets.load("timm:dpn68", meta=True)
    done = importer.import_module(target.model, target.default_input, label=target.label)
    assert done.opaque == [] and slices_of(done.text)
    report = analyze(loads(done.text, file="dpn68"))
    assert report.totals["params"] == sum(p.numel() for p in target.model.parameters())
    assert report.totals["macs"] == meta_macs(target.model, target.default_input)
    torch.manual_seed(0)
    model = timm.create_model("dpn68", pretrained=False).eval()
    done = importer.import_module(model, (3, 64, 64), label="dpn68")
    built = loads(done.text, file="dpn68").build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (built(x) - model(x)).abs().max().item() <= 1e-5


def test_edgenext_s_split_is_channel_slices():
    """EdgeNeXt's SDTA encoder chunks its input and adds chunk i to the
    previous depthwise conv's output: one channel_slice row per chunk."""
    target = targets.load("timm:edgenext_xx_small", meta=True)
    done = importer.import_module(target.model, target.default_input, label=target.label)
    sdta = [m for m in target.model.modules() if hasattr(m, "convs") and hasattr(m, "xca")]
    # one conv: its chunk and the last concatenated in order, a split entry
    expected = sum(len(m.convs) + 1 for m in sdta if len(m.convs) > 1)
    assert len(slices_of(done.text)) == expected > 0
    assert any(len(m.convs) == 1 for m in sdta) and "split = " in done.text


@pytest.mark.parametrize("channels, why", [
    ("[4, 20]", "end <= C"), ("[6, 6]", "start < end"), ("3", "start < end")])
def test_a_bad_slice_is_one_line(tmp_path, channels, why):
    path = tmp_path / "bad.toml"
    path.write_text(f'[model]\nname = "bad"\ninput = [16, 8, 8]\nlayers = [\n'
                    f'  {{name = "cut", channel_slice = {channels}}},\n]\n')
    result = CliRunner().invoke(main, ["table", str(path)])
    assert result.exit_code == 2
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and why in lines[0] and "cut" in lines[0] and "bad.toml" in lines[0]


def test_a_slice_s_figures():
    """A view: its shape, no params, no MACs; the receptive field and jump
    of its input."""
    spec = loads('[model]\nname = "s"\ninput = [16, 8, 8]\nlayers = [\n'
                 '  {name = "c", conv = 16, kernel = 3, padding = 1},\n'
                 '  {name = "cut", channel_slice = [5, 12]},\n]\n')
    rows = {r.name: r for r in analyze(spec).rows}
    assert tuple(rows["cut"].output_shape) == (7, 8, 8)
    assert rows["cut"].params == 0 and rows["cut"].macs == 0
    assert rows["cut"].receptive_field == rows["c"].receptive_field == (3, 3)
    assert rows["cut"].jump == rows["c"].jump
