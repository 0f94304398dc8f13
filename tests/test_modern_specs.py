"""Issue 10's modern networks as specs, each against its torchvision twin:

- parameters: sum of numel of torchvision.models.X(weights=None), exactly;
- MACs: FlopCounterMode / 2 of torchvision's model built on the meta device
  (eval mode, no_grad, a meta input at the spec's input size), exactly;
- the same function: torchvision's parameters and buffers (randomized first,
  so that no batch norm or layer scale is an identity) copied into the
  compiled spec in order, pairing equal shapes; outputs within 1e-5 (max abs
  difference, eval mode, float32, batch 2, at a reduced input where the
  network allows);
- `check` (calculated vs measured: shapes, params, MACs, memory) passes at
  batch 1 and 2, at a reduced input.

EfficientNet-B0 is one spec for B0..B7: --set width=W depth=D bn_eps=E
dropout=P and --input 3xRxR give torchvision's efficientnet_bN."""
import pytest

from archcalc.analysis import analyze
from archcalc.spec.loader import load
from conftest import spec_path

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

# spec -> torchvision builder, its params and MACs (FlopCounterMode / 2, meta
# device) at the spec's own input, and the reduced input of the function test
TWINS = {
    "mobilenet_v2": ("mobilenet_v2", 3_504_872, 300_774_272, 64),
    "mobilenet_v3_large": ("mobilenet_v3_large", 5_483_032, 216_589_760, 64),
    "mobilenet_v3_small": ("mobilenet_v3_small", 2_542_856, 56_510_400, 64),
    "efficientnet_b0": ("efficientnet_b0", 5_288_548, 385_814_752, 64),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", 2_278_604, 144_907_992, 64),
    "convnext_tiny": ("convnext_tiny", 28_589_128, 4_455_531_264, 64),
    "regnet_y_400mf": ("regnet_y_400mf", 4_344_144, 401_842_848, 64),
    "vit_b_16": ("vit_b_16", 86_567_656, 17_563_828_224, 64),
}

# torchvision's efficientnet_bN: width_mult, depth_mult, dropout, batch-norm eps
# and the resolution of its weights' transforms (crop_size)
EFFICIENTNET = {
    "b0": (1.0, 1.0, 0.2, 1e-5, 224), "b1": (1.0, 1.1, 0.2, 1e-5, 240),
    "b2": (1.1, 1.2, 0.3, 1e-5, 288), "b3": (1.2, 1.4, 0.3, 1e-5, 300),
    "b4": (1.4, 1.8, 0.4, 1e-5, 380), "b5": (1.6, 2.2, 0.4, 1e-3, 456),
    "b6": (1.8, 2.6, 0.5, 1e-3, 528), "b7": (2.0, 3.1, 0.5, 1e-3, 600),
}


def torchvision_model(builder, **kw):
    return getattr(tv.models, builder)(weights=None, **kw).eval()


def meta_counts(builder, size, **kw):
    """params and FlopCounterMode / 2 of torchvision's model on the meta device."""
    if builder.startswith("regnet"):  # its BlockParams computes widths with torch ops
        model = torchvision_model(builder, **kw).to("meta")
    else:
        with torch.device("meta"):
            model = torchvision_model(builder, **kw)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def spec(name):
    return load(spec_path(name + ".toml"))


@pytest.mark.parametrize("name", TWINS)
def test_params_and_macs_pinned(name):
    """The README's figures, from the spec alone (no torch)."""
    report = analyze(spec(name))
    assert (report.totals["params"], report.totals["macs"]) == TWINS[name][1:3]


@pytest.mark.parametrize("name", TWINS)
def test_params_and_macs_equal_torchvision_on_the_meta_device(name):
    builder, params, macs, _ = TWINS[name]
    report = analyze(spec(name))
    size = report.rows[0].output_shape[-1]
    assert meta_counts(builder, size) == (params, macs) == (report.totals["params"],
                                                             report.totals["macs"])
