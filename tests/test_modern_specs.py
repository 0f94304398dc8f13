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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# -- the same function, with torchvision's weights -----------------------------

def randomize(model, size):
    """torchvision's init makes a poor witness: its batch norms are identities
    at inference (weight 1, bias 0, running mean 0, variance 1), ConvNeXt's
    layer scale is 1e-6, ViT's head is zero, and the signal fades through the
    depth, so that the output is nearly the fc bias whatever the input. Draw
    every weight with variance 1 / fan_in, every norm's scale and shift and
    every bias around their neutral values, then set the batch norms' running
    statistics to those of random inputs (a cumulative average over one
    training-mode batch of 8): at inference every batch norm normalizes, and
    the outputs depend on the input (checked in the test)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.dtype.is_floating_point or "running_" in key:
                continue
            if key.endswith("layer_scale"):
                value.uniform_(0.5, 1.0)
            elif key.endswith("bias"):
                value.uniform_(-0.2, 0.2)
            elif value.ndim == 1:  # norm scales
                value.uniform_(0.5, 1.5)
            elif key.endswith(("class_token", "pos_embedding")):
                value.normal_(0, 0.5)
            else:  # conv, linear and attention weights: fan_in = the rest of a row
                value.normal_(0, value[0].numel() ** -0.5)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: this batch's statistics
        model.train()(torch.randn(8, 3, size, size))
    return model.eval()


def move_after(keys, moved, owner):
    """keys in order, each key for which moved(k) holds placed after the last
    key of its owner(k) group (torchvision registers it first)."""
    out, held, group = [], [], None
    for k in keys:
        if owner(k) != group:
            out += held
            held, group = [], owner(k)
        (held if moved(k) else out).append(k)
    return out + held


def convnext_order(keys):
    # CNBlock registers layer_scale (a parameter of its own) before its layers
    return move_after(keys, lambda k: k.endswith(".layer_scale"),
                      lambda k: ".".join(k.split(".")[:3]) if k.startswith("features.") else k)


def regnet_order(keys):
    # ResBottleneckBlock registers its projection (proj) before its branch (f)
    return move_after(keys, lambda k: ".proj." in k,
                      lambda k: ".".join(k.split(".")[:3]) if k.startswith("trunk_output.") else k)


def vit_order(keys):
    # VisionTransformer registers its class token before the patch conv
    head = ["conv_proj.weight", "conv_proj.bias", "class_token"]
    return head + [k for k in keys if k not in head]


REORDER = {"convnext_tiny": convnext_order, "regnet_y_400mf": regnet_order,
           "vit_b_16": vit_order}


def copy_weights(ours, theirs, order=None):
    """theirs' parameters and buffers into ours, in (re)registration order,
    pairing equal shapes; ConvNeXt's Linear layers on channels-last are 1x1
    convs here: the same numbers, reshaped (out, in) -> (out, in, 1, 1)."""
    source = theirs.state_dict()
    keys = (order or list)(list(source))
    target = ours.state_dict()
    assert len(keys) == len(target)
    loaded = {}
    for (k, v), theirs_key in zip(target.items(), keys):
        w = source[theirs_key]
        if w.shape != v.shape:
            assert w.ndim == 2 and v.shape == (*w.shape, 1, 1), (k, theirs_key, v.shape, w.shape)
            w = w.reshape(v.shape)
        loaded[k] = w
    ours.load_state_dict(loaded)


@pytest.mark.parametrize("name", TWINS)
def test_the_same_function_as_torchvision_with_its_weights(name):
    builder, _, _, size = TWINS[name]
    kw = {"image_size": size} if name == "vit_b_16" else {}  # ViT's input size is fixed
    theirs = randomize(torchvision_model(builder, **kw), size)
    ours = spec(name).build(input=(3, size, size)).eval()
    copy_weights(ours, theirs, REORDER.get(name))
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        y = theirs(x)
        diff = (ours(x) - y).abs().max().item()
    assert diff <= 1e-5, diff
    assert (y[0] - y[1]).abs().max() > 0.5  # the output depends on the input


# -- check: calculated vs measured -------------------------------------------------

@pytest.mark.parametrize("name", TWINS)
@pytest.mark.parametrize("batch", [1, 2])
def test_check_passes(name, batch):
    """Shapes, params, MACs (fvcore, FlopCounterMode) and memory row by row, at
    32 x 32 (every one of these networks takes it: stride 32 ends at 1 x 1,
    ViT-B/16 makes 2 x 2 patches plus its class token)."""
    from archcalc.torch.check import run_check
    result = run_check(spec(name), batch=batch, input=(3, 32, 32))
    bad = [(r.name, c.what, c.calculated, c.measured) for r in result.rows for c in r.checks
           if c.ok is False] + [(c.what, c.calculated, c.measured) for c in result.totals
                                if c.ok is False]
    assert result.ok and not bad, bad


# -- EfficientNet B1..B7 from the B0 spec ----------------------------------------------

def efficientnet_variables(variant):
    width, depth, dropout, eps, _ = EFFICIENTNET[variant]
    return {"width": width, "depth": depth, "dropout": dropout, "bn_eps": eps,
            "bn_momentum": 0.01 if eps == 1e-3 else 0.1}


@pytest.mark.parametrize("variant", ["b1", "b3", "b7"])
def test_efficientnet_variants_equal_torchvision_on_the_meta_device(variant):
    size = EFFICIENTNET[variant][-1]
    report = analyze(spec("efficientnet_b0"), variables=efficientnet_variables(variant),
                     input=(3, size, size))
    assert (report.totals["params"], report.totals["macs"]) == \
        meta_counts("efficientnet_" + variant, size)


def test_efficientnet_b7_from_the_command_line():
    """--set and --input, as the spec's header says; B7's counts as torchvision's."""
    import json

    from click.testing import CliRunner

    from archcalc.cli import main
    result = CliRunner().invoke(main, [
        "table", spec_path("efficientnet_b0.toml"), "--set", "width=2.0", "--set", "depth=3.1",
        "--set", "dropout=0.5", "--set", "bn_eps=0.001", "--set", "bn_momentum=0.01",
        "--input", "3x600x600", "--format", "json"])
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout)["totals"]
    assert (totals["params"], totals["macs"]) == (66_347_960, 37_745_884_192)


def test_efficientnet_variants_build_torchvisions_layers():
    """B5: torchvision's batch norm (eps 1e-3, momentum 0.01), dropout 0.4,
    ceil(L * 2.2) blocks per stage, and each residual block's own
    stochastic-depth probability (0.2 * j / blocks for block j, through
    `repeat_index`), read from torchvision's model itself."""
    import math
    from torchvision.models.efficientnet import MBConv
    ours = spec("efficientnet_b0").build(variables=efficientnet_variables("b5"),
                                         input=(3, 32, 32))
    norms = [m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.01)}
    assert [m.p for m in ours.modules() if isinstance(m, torch.nn.Dropout)] == [0.4]
    layers = [math.ceil(n * 2.2) for n in (1, 2, 2, 3, 3, 4, 1)]
    with torch.device("meta"):
        reference = tv.models.efficientnet_b5()
    assert [len(stage) for stage in reference.features[1:-1]] == layers
    expected = [b.stochastic_depth.p for b in reference.modules()
                if isinstance(b, MBConv) and b.use_res_connect]
    got = [m.p for m in ours.modules() if type(m).__name__ == "StochasticDepth"]
    assert len(got) == sum(layers) - len(layers) and got == pytest.approx(expected, abs=1e-12)
    assert len(set(got)) == len(got)   # no two blocks share one probability


def test_convnext_blocks_each_have_torchvisions_drop_probability():
    from torchvision.models.convnext import CNBlock
    ours = spec("convnext_tiny").build(input=(3, 32, 32))
    with torch.device("meta"):
        reference = tv.models.convnext_tiny()
    expected = [b.stochastic_depth.p for b in reference.modules() if isinstance(b, CNBlock)]
    got = [m.p for m in ours.modules() if type(m).__name__ == "StochasticDepth"]
    assert len(got) == 18 and got == pytest.approx(expected, abs=1e-12)


# -- width multipliers ----------------------------------------------------------------

@pytest.mark.parametrize("name, builder, width", [
    ("mobilenet_v2", "mobilenet_v2", 0.5), ("mobilenet_v2", "mobilenet_v2", 1.4),
    ("mobilenet_v3_large", "mobilenet_v3_large", 0.75),
    ("mobilenet_v3_small", "mobilenet_v3_small", 0.75)])
def test_width_multiplier_equals_torchvisions_width_mult(name, builder, width):
    report = analyze(spec(name), variables={"width": width})
    assert (report.totals["params"], report.totals["macs"]) == \
        meta_counts(builder, 224, width_mult=width)


@pytest.mark.parametrize("variables, builder", [
    ({"C2": 48, "C3": 96, "C4": 192, "C5": 1024}, "shufflenet_v2_x0_5"),
    ({"C2": 244, "C3": 488, "C4": 976, "C5": 2048}, "shufflenet_v2_x2_0"),
    ({"B3": 27, "sd": 0.4}, "convnext_small"),
])
def test_other_sizes_through_the_variables(variables, builder):
    name = "convnext_tiny" if builder.startswith("convnext") else "shufflenet_v2_x1_0"
    report = analyze(spec(name), variables=variables)
    assert (report.totals["params"], report.totals["macs"]) == meta_counts(builder, 224)


# -- the language fix these specs needed --------------------------------------------------

def test_float_arguments_take_expressions_of_the_variables():
    """dropout p, drop_path p, batch-norm eps and momentum, layer scale's init:
    a number or an expression ("sd * i / blocks", "bn_eps"), refused when it
    depends on an unbound variable or leaves the argument's range."""
    from archcalc.errors import SpecError
    from archcalc.spec.loader import loads
    text = """
[vars]
sd = 0.2
blocks = 16
eps = 0.001
p = {p}
[defaults.batch_norm]
eps = "eps"
[model]
name = "floats"
input = [8, 4, 4]
layers = [
  {{conv = 8, kernel = 1, batch_norm = true}},
  {{drop_path = "sd * 3 / blocks"}},
  {{dropout = "p"}},
  {{layer_scale = "eps / 10"}},
]
"""
    model = loads(text.format(p=0.5)).build()
    assert [m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [0.001]
    assert [m.p for m in model.modules() if type(m).__name__ == "StochasticDepth"] == \
        [pytest.approx(0.0375)]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]
    with pytest.raises(SpecError, match=r"must lie in \[0.0, 1.0\]"):
        analyze(loads(text.format(p=1.5)))
    with pytest.raises(SpecError, match="unbound"):
        analyze(loads(text.format(p='"?"')))
    with pytest.raises(SpecError, match="unknown variable 'q'"):
        analyze(loads(text.format(p=0.5).replace('dropout = "p"', 'dropout = "q"')))
