"""The specs that need the general graph (``from``, merge entries, ``[model]
outputs``), each against an independent PyTorch twin:

- U-Net (Ronneberger et al. 2015, unpadded, 1 channel in, 2 classes): a plain
  PyTorch U-Net written here; params = sum(numel), MACs = FlopCounterMode / 2
  on the meta device, the output shape of a real forward, and the same outputs
  with its weights copied in;
- FPN on ResNet-50: torchvision's resnet_fpn_backbone("resnet50"); its
  state_dict loads into the built spec under the same keys (strict), and the
  five outputs are torchvision's;
- HRNet-W18-small: timm's hrnet_w18_small (pretrained=False), the classifier;
  its state_dict loads strictly and the logits are timm's;
- every spec: `archcalc check` at batch 1 and 2 at a reduced input (full size
  in the slow run).

and the two kinds they brought: crop (U-Net's copy and crop) and
frozen_batch_norm (torchvision's FrozenBatchNorm2d).
"""
import json
import os

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from archcalc.analysis import analyze
from archcalc.cli import main
from archcalc.spec.loader import load, loads
from conftest import spec_path

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

# checked here at batch 1 and 2 (at a reduced input), so test_build's sweep of
# every spec leaves them out
CHECKED_HERE = {"unet", "fpn_resnet50", "hrnet_w18_small"}

UNET_PARAMS = 31_030_658                # the 2015 net: no batch norm
UNET_MACS = 150_428_424_448             # at 1 x 572 x 572, FlopCounterMode / 2
UNET_SMALL = 188                        # the smallest input it takes: 4 x 4 out
FPN_PARAMS = 26_799_296                 # torchvision's sum(p.numel())
FPN_BUFFERS = 106_240                   # 26,560 frozen channels x 4
FPN_MACS = 36_201_037_824               # at 3 x 512 x 512
FPN_OUTPUTS = [(256, 128, 128), (256, 64, 64), (256, 32, 32), (256, 16, 16), (256, 8, 8)]
HRNET_PARAMS = 13_187_464               # timm's sum(p.numel())
HRNET_MACS = 1_601_508_352              # at 3 x 224 x 224


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def spec(name):
    return load(spec_path(name + ".toml"))


def table_json(name, *args):
    result = CliRunner().invoke(main, ["table", spec_path(name + ".toml"), "--format", "json",
                                       *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def meta_counts(model, shape):
    """sum(numel), FlopCounterMode / 2 and the output(s) of ``model`` on the
    meta device at one sample of ``shape``."""
    model = model.to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(torch.empty(1, *shape, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2, out


def check_passes(name, batch, input):
    from archcalc.torch.check import run_check
    result = run_check(spec(name), batch=batch, input=input)
    bad = [(r.name, c.what, c.calculated, c.measured) for r in result.rows for c in r.checks
           if c.ok is False] + [(c.what, c.calculated, c.measured) for c in result.totals
                                if c.ok is False]
    assert result.ok and not bad, bad
    assert not result.measured.meta, result.measured.meta_reason


def copy_in_order(ours, theirs):
    """theirs' state_dict into ours, in registration order, pairing equal shapes."""
    source, target = theirs.state_dict(), ours.state_dict()
    assert len(source) == len(target)
    pairs = list(zip(target.items(), source.values()))
    assert all(v.shape == w.shape for (_, v), w in pairs)
    ours.load_state_dict({k: w for (k, _), w in pairs})


def single(out):
    """The tensor of a model of one output (a dict of one where outputs are named)."""
    if isinstance(out, dict):
        (out,) = out.values()
    return out


# -- U-Net ---------------------------------------------------------------------

def double_conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3), nn.ReLU(inplace=True))


def center_crop(x, h, w):
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


class UNet(nn.Module):
    """Figure 1 of the paper in plain PyTorch, written without the spec:
    unpadded 3x3 convs, 2x2 max pools, 2x2 up-convolutions halving the
    channels, the skip cropped to the upsampled map and concatenated before
    it, a 1x1 conv to the classes. Modules registered in the spec's order
    (down1..down4, bottom, then up and dec per level, head) so that the
    weights copy across in order."""

    def __init__(self, channels=1, classes=2):
        super().__init__()
        widths = [64, 128, 256, 512]
        c = channels
        for i, w in enumerate(widths, 1):
            setattr(self, f"down{i}", double_conv(c, w))
            c = w
        self.bottom = double_conv(512, 1024)
        c = 1024
        for i, w in reversed(list(enumerate(widths, 1))):
            setattr(self, f"up{i}", nn.ConvTranspose2d(c, w, 2, stride=2))
            setattr(self, f"dec{i}", double_conv(2 * w, w))
            c = w
        self.head = nn.Conv2d(64, classes, 1)

    def forward(self, x):
        skips = []
        for i in range(1, 5):
            x = getattr(self, f"down{i}")(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for i in range(4, 0, -1):
            x = getattr(self, f"up{i}")(x)
            x = torch.cat([center_crop(skips[i - 1], *x.shape[-2:]), x], 1)
            x = getattr(self, f"dec{i}")(x)
        return self.head(x)


def test_unet_figures_equal_the_plain_pytorch_unet():
    params, macs, out = meta_counts(UNet(), (1, 572, 572))
    assert (params, macs, tuple(out.shape[1:])) == (UNET_PARAMS, UNET_MACS, (2, 388, 388))
    data = table_json("unet")
    assert (data["totals"]["params"], data["totals"]["macs"]) == (UNET_PARAMS, UNET_MACS)
    assert [o["shape"] for o in data["outputs"]] == [[2, 388, 388]]


def test_unet_sizes_and_crops_follow_figure_1():
    """572 -> 570 -> 568, the pools halve to 284, 140, 68, 32; the bottom ends
    at 28; the crops cut 64 -> 56, 136 -> 104, 280 -> 200, 568 -> 392."""
    shapes = {r.name: tuple(r.output_shape) for r in analyze(spec("unet")).rows}
    assert [shapes[f"down{i}.conv2"][1] for i in range(1, 5)] == [568, 280, 136, 64]
    assert shapes["bottom.conv2"] == (1024, 28, 28)
    assert [shapes[f"crop{i}"] for i in range(4, 0, -1)] == \
        [(512, 56, 56), (256, 104, 104), (128, 200, 200), (64, 392, 392)]
    assert [shapes[f"cat{i}"][0] for i in range(4, 0, -1)] == [1024, 512, 256, 128]
    assert shapes["head"] == (2, 388, 388)


def test_unet_the_same_function_as_the_plain_unet_at_its_smallest_input():
    """Weights copied in, a real forward at 188 x 188 (4 x 4 out): the same
    numbers, so the crops take the centre and the skip comes first."""
    theirs = UNet().eval()
    ours = spec("unet").build(input=(1, UNET_SMALL, UNET_SMALL)).eval()
    copy_in_order(ours, theirs)
    torch.manual_seed(1)
    x = torch.randn(2, 1, UNET_SMALL, UNET_SMALL)
    with torch.no_grad():
        y, mine = theirs(x), single(ours(x))
    assert tuple(y.shape) == tuple(mine.shape) == (2, 2, 4, 4)
    assert (mine - y).abs().max().item() <= 1e-5
    assert (y[0] - y[1]).abs().max() > 1e-3   # the output depends on the input
    params, macs, _ = meta_counts(UNet(), (1, UNET_SMALL, UNET_SMALL))
    small = analyze(spec("unet"), input=(1, UNET_SMALL, UNET_SMALL)).totals
    assert (small["params"], small["macs"]) == (params, macs) == (UNET_PARAMS, 6_098_393_344)


@pytest.mark.parametrize("batch", [1, 2])
def test_unet_check_passes_at_its_smallest_input(batch):
    check_passes("unet", batch, (1, UNET_SMALL, UNET_SMALL))


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_unet_check_passes_at_572(batch):
    check_passes("unet", batch, None)


@pytest.mark.slow
def test_unet_real_forward_at_572_gives_388():
    """One real forward at full size (5 s on one core: slow for the suite's
    budget; the default run's real forward is at 188, its shape at 572 on meta)."""
    ours = spec("unet").build().eval()
    with torch.no_grad():
        out = single(ours(torch.randn(1, 1, 572, 572)))
    assert tuple(out.shape) == (1, 2, 388, 388)


@settings(max_examples=15, deadline=None, database=None)
@given(st.integers(4, 60), st.integers(1, 15))
def test_unet_takes_every_16b_plus_124_and_refuses_the_others(b, off):
    """Any input 16*b + 124 (b >= 4) gives 16*b - 60 out with the same
    params (the crops' borders hold at every valid input); the 15 sizes
    between two valid ones are refused (a SpecError, exit 2 at the CLI):
    a pool floors an odd map and a crop no longer meets its upsampled map."""
    from archcalc.errors import SpecError
    size = 16 * b + 124
    report = analyze(spec("unet"), input=(1, size, size))
    assert tuple(report.rows[-1].output_shape) == (2, 16 * b - 60, 16 * b - 60)
    assert report.totals["params"] == UNET_PARAMS
    with pytest.raises(SpecError):
        analyze(spec("unet"), input=(1, size + off, size + off))


@pytest.mark.parametrize("size", [
    570,    # not 16*b + 124: a pool floors an odd map, a crop and its upsampled map differ
    100,    # too small: the bottom's convs have nothing left
])
def test_unet_at_an_input_it_cannot_take_exits_2_with_one_line(size):
    result = CliRunner().invoke(main, ["table", spec_path("unet.toml"), "--input",
                                       f"1x{size}x{size}"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unet.toml" in lines[0] and "Traceback" not in result.output, lines


# -- FPN on ResNet-50 ----------------------------------------------------------------

def torchvision_fpn():
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    return resnet_fpn_backbone(backbone_name="resnet50", weights=None).eval()


def test_fpn_figures_equal_torchvision():
    params, macs, out = meta_counts(torchvision_fpn(), (3, 512, 512))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[1:]) for v in out.values()] == FPN_OUTPUTS
    assert (params, macs) == (FPN_PARAMS, FPN_MACS)
    data = table_json("fpn_resnet50")
    totals = data["totals"]
    assert (totals["params"], totals["macs"], totals["buffers"]) == \
        (FPN_PARAMS, FPN_MACS, FPN_BUFFERS)
    assert [tuple(o["shape"]) for o in data["outputs"]] == FPN_OUTPUTS
    assert [o["name"] for o in data["outputs"]] == [
        "fpn.layer_blocks.0", "fpn.layer_blocks.1", "fpn.layer_blocks.2", "fpn.layer_blocks.3",
        "fpn.pool"]


def randomize_frozen(model):
    """Every weight, bias and (frozen or running) statistic drawn (the norms
    start as identities), scaled so that the signal neither fades nor
    explodes through the depth."""
    torch.manual_seed(0)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.dtype.is_floating_point:   # num_batches_tracked
                continue
            if key.endswith("running_var") or (value.ndim == 1 and key.endswith("weight")):
                value.uniform_(0.5, 1.5)
            elif value.ndim == 1:              # biases and running means
                value.uniform_(-0.2, 0.2)
            else:
                value.normal_(0, value[0].numel() ** -0.5)
    return model


def test_fpn_loads_torchvisions_state_dict_and_gives_its_five_outputs():
    """The spec's names are torchvision's module paths: its state_dict loads
    strictly (the frozen batch norms' buffers included), and the five maps
    are torchvision's at 64 x 64 (16, 8, 4, 2, 1)."""
    theirs = randomize_frozen(torchvision_fpn())
    ours = spec("fpn_resnet50").build(input=(3, 64, 64)).eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert list(got) == ["fpn.layer_blocks.0", "fpn.layer_blocks.1", "fpn.layer_blocks.2",
                         "fpn.layer_blocks.3", "fpn.pool"]
    for (key, y), mine in zip(want.items(), got.values()):
        assert mine.shape == y.shape, key
        assert (mine - y).abs().max().item() <= 1e-4 * max(1.0, y.abs().max().item()), key
    assert (want["0"][0] - want["0"][1]).abs().max() > 1e-3


def test_fpn_imported_from_torchvision_gives_the_specs_figures():
    """archcalc import of torchvision's module (its FrozenBatchNorm2d maps to
    frozen_batch_norm, strict: no opaque row) agrees with the hand-written
    spec: params, buffers, MACs and the five output shapes."""
    import archcalc
    imported = analyze(archcalc.from_module(torchvision_fpn(), input=(3, 64, 64), strict=True))
    ours = analyze(spec("fpn_resnet50"), input=(3, 64, 64))
    assert [imported.totals[k] for k in ("params", "buffers", "macs")] == \
        [ours.totals[k] for k in ("params", "buffers", "macs")] == \
        [FPN_PARAMS, FPN_BUFFERS, 565_641_216]
    assert [shape for _, shape in imported.outputs] == [shape for _, shape in ours.outputs] == \
        [(256, 16, 16), (256, 8, 8), (256, 4, 4), (256, 2, 2), (256, 1, 1)]


@pytest.mark.parametrize("batch", [1, 2])
def test_fpn_check_passes_at_64(batch):
    check_passes("fpn_resnet50", batch, (3, 64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fpn_resnet50", "hrnet_w18_small"])
def test_check_passes_at_full_size(name):
    """At 512 (FPN) and 224 (HRNet): 12 s and 8 s on one core."""
    check_passes(name, 1, None)


# -- HRNet-W18-small ---------------------------------------------------------------

def timm_hrnet():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        return timm.create_model("hrnet_w18_small", pretrained=False).eval()


def test_hrnet_figures_equal_timm():
    params, macs, out = meta_counts(timm_hrnet(), (3, 224, 224))
    assert (params, macs, tuple(out.shape[1:])) == (HRNET_PARAMS, HRNET_MACS, (1000,))
    data = table_json("hrnet_w18_small")
    assert (data["totals"]["params"], data["totals"]["macs"]) == (HRNET_PARAMS, HRNET_MACS)
    assert [o["shape"] for o in data["outputs"]] == [[1000]]


def test_hrnet_branches_and_fusions_have_timms_shapes():
    """Four branches at 56, 28, 14 and 7 (16, 32, 64, 128 channels); every
    fused output of a stage keeps its branch's shape; the head widens them to
    128 .. 1024 and sums them down to 1024 x 7 x 7."""
    shapes = {r.name: tuple(r.output_shape) for r in analyze(spec("hrnet_w18_small")).rows}
    branch = [(16, 56, 56), (32, 28, 28), (64, 14, 14), (128, 7, 7)]
    for stage, n in (("stage2", 2), ("stage3", 3), ("stage4", 4)):
        assert [shapes[f"{stage}.0.fuse_layers.{i}.sum"] for i in range(n)] == branch[:n]
    assert [shapes[f"incre_modules.{i}.0.add"] for i in range(4)] == \
        [(128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)]
    assert shapes["downsamp_modules.sum3"] == (1024, 7, 7)
    assert shapes["final_layer.2"] == (2048, 7, 7)


def test_hrnet_loads_timms_state_dict_and_gives_its_logits():
    """The spec's names are timm's module paths: timm's state_dict (weights
    drawn, batch norms not identities) loads strictly and the logits agree at
    64 x 64 (branches at 16, 8, 4 and 2)."""
    timm = pytest.importorskip("timm")
    theirs = randomize_frozen(timm.create_model("hrnet_w18_small", pretrained=False)).eval()
    ours = spec("hrnet_w18_small").build(input=(3, 64, 64)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y, mine = theirs(x), single(ours(x))
    assert tuple(mine.shape) == tuple(y.shape) == (2, 1000)
    assert (mine - y).abs().max().item() <= 1e-4 * max(1.0, y.abs().max().item())
    assert (y[0] - y[1]).abs().max() > 1e-3


@pytest.mark.parametrize("batch", [1, 2])
def test_hrnet_check_passes_at_64(batch):
    check_passes("hrnet_w18_small", batch, (3, 64, 64))


# -- the kinds: crop, frozen_batch_norm ---------------------------------------------

CROP = '''
[model]
name = "crop"
input = [2, 10, 12]
layers = [ {{name = "c", crop = {border}}} ]
'''


@pytest.mark.parametrize("border, shape", [(0, (2, 10, 12)), (3, (2, 4, 6)),
                                            ("[1, 4]", (2, 8, 4))])
def test_crop_cuts_the_border_as_a_slice_does(border, shape):
    report = analyze(loads(CROP.format(border=border)))
    assert tuple(report.rows[-1].output_shape) == shape
    assert report.totals["params"] == report.totals["macs"] == report.totals["flops"] == 0
    module = load_spec_module(CROP.format(border=border))
    x = torch.randn(1, 2, 10, 12)
    bh, bw = ((border, border) if isinstance(border, int) else (1, 4))
    assert torch.equal(module(x), x[:, :, bh:10 - bh, bw:12 - bw])


def load_spec_module(text):
    return loads(text).build().eval()


@pytest.mark.parametrize("border, message", [
    (5, "crop: border 5 leaves nothing of a 2 x 10 x 12 input"),
    (-1, "border must be at least 0"),
    ('"x"', "unknown variable 'x'"),
])
def test_a_bad_crop_exits_2_with_one_line(tmp_path, border, message):
    path = tmp_path / "bad.toml"
    path.write_text(CROP.format(border=border))
    result = CliRunner().invoke(main, ["table", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.toml" in lines[0] and message in lines[0], lines


def test_frozen_batch_norm_is_torchvisions():
    """The same buffers (0 params, 4*C buffers) and, with them loaded, the same
    output as torchvision.ops.misc.FrozenBatchNorm2d."""
    from torchvision.ops.misc import FrozenBatchNorm2d
    report = analyze(loads('''
[model]
name = "f"
input = [8, 5, 5]
layers = [ {name = "bn", frozen_batch_norm = true, eps = 1e-3} ]
'''))
    assert (report.totals["params"], report.totals["buffers"]) == (0, 32)
    assert report.totals["flops"] == 2 * 8 * 5 * 5
    theirs = FrozenBatchNorm2d(8, eps=1e-3)
    randomize_frozen(theirs)
    from archcalc.layers import lookup
    kind = lookup("frozen_batch_norm")
    ours = kind.build(kind.read_args({"eps": 1e-3}, {}), (8, 5, 5))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == 0
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


def test_the_specs_say_where_they_come_from():
    for name, cited in [("unet", "Ronneberger"), ("fpn_resnet50", "resnet_fpn_backbone"),
                        ("hrnet_w18_small", "hrnet_w18_small")]:
        assert cited in spec(name).source
    assert os.path.exists(spec_path("lib/resnet_frozen_bn.toml"))
