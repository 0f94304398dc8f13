"""Issue 10's building blocks against real torch (and torchvision) modules, on
random configurations: output shape, parameters (sum of numel), MACs
(FlopCounterMode / 2), the bytes autograd saves (saved_tensors_hooks, each
storage once, parameters left out) and refusals (torch raises <=> the engine
raises a SpecError). Every case is also compiled from its spec and measured
the same way, and where torchvision has the module, the compiled one computes
the same function with the same weights."""
import pytest
from hypothesis import event as hypothesis_event, given, note as hypothesis_note, settings
from hypothesis.errors import InvalidArgument

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.spec.loader import loads
from strategies import (activation_chains, as_pair, channel_shuffle_layers, drop_path_layers, group_norm_layers,
                        instance_norm_layers, layer_norm_layers, layer_scale_layers,
                        modern_activation_layers, modern_pool_layers, network_text,
                        padded_conv_layers, se_layers, split_layers)

torch = pytest.importorskip("torch")
nn = torch.nn
tv = pytest.importorskip("torchvision")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.torch.measure import SavedBytes  # noqa: E402

EXAMPLES = 40


# -- the harness ---------------------------------------------------------------

def note(message):
    """hypothesis.note inside a property; nothing in a plain test."""
    try:
        hypothesis_note(message)
    except InvalidArgument:
        pass


def event(label):
    """hypothesis.event (pytest --hypothesis-show-statistics counts them)."""
    try:
        hypothesis_event(label)
    except InvalidArgument:
        pass


def measure(make, shape, batch):
    """Run a module once in training mode on an input that needs a gradient (as
    a layer's input inside a network does): per-sample output shape, params,
    FlopCounterMode's total and the bytes of the distinct storages autograd
    saved. Returns (figures, None) or (None, torch's error)."""
    try:
        module = make()
        module.train()
        torch.manual_seed(0)
        x = torch.randn(batch, *shape, requires_grad=True) * 1  # not a leaf: may be written in place
        counter = FlopCounterMode(display=False)
        with counter, SavedBytes(module) as saved:
            y = module(x)
    except (RuntimeError, ValueError) as e:
        return None, str(e)
    if 0 in y.shape:
        return None, f"empty output {tuple(y.shape)}"
    return {"shape": tuple(y.shape[1:]), "params": sum(p.numel() for p in module.parameters()),
            "flops": counter.get_total_flops(), "saved": saved.total}, None


def agree(shape, layers, make, batch=1, saved=True):
    """The engine, the reference torch module and the compiled spec agree."""
    text = network_text(shape, layers)
    note("repro spec:\n" + text)
    try:
        report, engine_error = analyze(loads(text), batch=batch), None
    except SpecError as e:
        report, engine_error = None, str(e)
    got, torch_error = measure(make, shape, batch)
    note(f"engine error: {engine_error}\ntorch error: {torch_error}")
    if torch_error:
        assert engine_error, f"torch rejects this layer ({torch_error}); the engine must too"
        event("refused by both")
        return None
    assert engine_error is None, engine_error
    event("accepted by both")
    t = report.totals
    calculated = {"shape": tuple(report.rows[-1].output_shape), "params": t["params"],
                  "flops": 2 * t["macs"] * batch, "saved": t["saved_activation_bytes"]}
    if not saved:
        del calculated["saved"], got["saved"]
    assert calculated == got, ("reference", calculated, got)
    compiled = loads(text).build()
    built, error = measure(lambda: compiled, shape, batch)
    assert error is None, error
    if not saved:
        del built["saved"]
    assert calculated == built, ("compiled", calculated, built)
    return compiled


def same_function(compiled, reference, shape, batch=2, train=False):
    """Copy the reference's weights and buffers into the compiled model (in
    order) and compare outputs."""
    ours, theirs = compiled.state_dict(), reference.state_dict()
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
    compiled.load_state_dict(dict(zip(ours, theirs.values())))
    same_outputs(compiled, reference, torch.randn(batch, *shape), train, seed=1)


def same_outputs(compiled, reference, x, train, seed):
    """Both in train or eval mode, the same random draws (dropout, drop path):
    the same outputs."""
    compiled.train(train), reference.train(train)
    with torch.no_grad():
        torch.manual_seed(seed)
        a = compiled(x)
        torch.manual_seed(seed)
        b = reference(x)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


# -- activations -----------------------------------------------------------------

# spec activation name -> torch module (the SE tests below use it too)
TORCH_ACTIVATIONS = {"relu6": nn.ReLU6, "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid,
                     "silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "relu": nn.ReLU,
                     "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@settings(max_examples=EXAMPLES)
@given(modern_activation_layers())
def test_activations_match_torch(case):
    shape, layer = case
    kind = next(iter(layer))
    if kind == "gelu":
        make = lambda: nn.GELU(approximate=layer["approximate"])  # noqa: E731
    else:
        make = TORCH_ACTIVATIONS[kind]  # the model's first layer is not in place
    agree(shape, [layer], make)


@settings(max_examples=EXAMPLES)
@given(modern_activation_layers(), __import__("hypothesis").strategies.booleans())
def test_fused_in_place_activations_keep_a_copy_of_their_input(case, bn):
    """conv (+ batch norm) + activation in place, as torchvision's
    Conv2dNormActivation: autograd clones the input of relu6, hardswish,
    silu, ...; the estimate counts that copy."""
    shape, layer = case
    kind = next(iter(layer))
    if len(shape) != 3 or kind == "gelu":
        return
    conv = {"conv": 4, "kernel": 3, "padding": 1, "batch_norm": bn, "activation": kind}

    def make():
        act = TORCH_ACTIVATIONS[kind](inplace=kind not in ("hardsigmoid", "mish"))
        return nn.Sequential(nn.Conv2d(shape[0], 4, 3, padding=1),
                             *([nn.BatchNorm2d(4)] if bn else []), act)
    agree(shape, [conv], make, batch=2)


@settings(max_examples=EXAMPLES)
@given(activation_chains())
def test_in_place_never_overwrites_what_backward_needs(case):
    """An activation runs in place only where no earlier op keeps its input
    for backward (a sigmoid's or a relu's output); training runs, and the
    engine's memory figures are the measured ones, exactly."""
    from archcalc.torch.measure import saved_tensor_bytes
    shape, layers = case
    text = network_text(shape, layers)
    note("repro spec:\n" + text)
    spec = loads(text)
    report = analyze(spec, batch=2)
    model = spec.build().train()
    model(torch.randn(2, *shape)).sum().backward()  # no "modified by an inplace operation"
    assert report.totals["saved_activation_bytes"] == saved_tensor_bytes(
        model, torch.randn(2, *shape))


# -- normalizations, layer scale, stochastic depth ------------------------------

@settings(max_examples=EXAMPLES)
@given(layer_norm_layers())
def test_layer_norm_matches_torchvision(case):
    shape, layer = case
    affine, bias, eps = layer["affine"], layer.get("bias", True), layer.get("eps", 1e-5)
    if len(shape) == 3:
        from torchvision.models.convnext import LayerNorm2d
        make = lambda: LayerNorm2d(shape[0], eps=eps, elementwise_affine=affine, bias=bias)  # noqa: E731
    else:
        make = lambda: nn.LayerNorm(shape[0], eps=eps, elementwise_affine=affine, bias=bias)  # noqa: E731
    compiled = agree(shape, [layer], make, batch=2)
    if compiled is not None and affine:
        reference = make()
        with torch.no_grad():
            for p in reference.parameters():
                p.uniform_(-1, 1)
        same_function(compiled, reference, shape)


@settings(max_examples=EXAMPLES)
@given(group_norm_layers())
def test_group_norm_matches_torch(case):
    shape, layer = case
    agree(shape, [layer], lambda: nn.GroupNorm(layer["group_norm"], shape[0],
                                               affine=layer["affine"]))


@settings(max_examples=EXAMPLES)
@given(instance_norm_layers())
def test_instance_norm_matches_torch(case):
    shape, layer = case
    agree(shape, [layer], lambda: nn.InstanceNorm2d(
        shape[0], affine=layer["affine"], track_running_stats=layer["track_running_stats"]),
        batch=2)


class ReferenceLayerScale(nn.Module):
    """ConvNeXt's CNBlock: self.layer_scale * x, gamma of shape (C, 1, 1)."""

    def __init__(self, shape, value):
        super().__init__()
        self.layer_scale = nn.Parameter(torch.ones(shape[0], *([1] * (len(shape) - 1))) * value)

    def forward(self, x):
        return self.layer_scale * x


@settings(max_examples=EXAMPLES)
@given(layer_scale_layers())
def test_layer_scale_matches_convnext(case):
    shape, layer = case
    make = lambda: ReferenceLayerScale(shape, layer["layer_scale"])  # noqa: E731
    compiled = agree(shape, [layer], make, batch=2)
    same_function(compiled, make(), shape)


@settings(max_examples=EXAMPLES)
@given(drop_path_layers())
def test_drop_path_behaves_as_torchvision_stochastic_depth(case):
    shape, layer = case
    make = lambda: tv.ops.StochasticDepth(layer["drop_path"], layer["mode"])  # noqa: E731
    compiled = agree(shape, [layer], make, batch=3)
    same_function(compiled, make(), shape, batch=4, train=True)   # the same noise
    same_function(compiled, make(), shape, batch=4, train=False)  # identity


# -- channel shuffle and split ----------------------------------------------------

class ReferenceShuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        from torchvision.models.shufflenetv2 import channel_shuffle
        if x.shape[1] % self.groups:  # torchvision's view would fail the same way
            raise RuntimeError("channels not divisible by groups")
        return channel_shuffle(x, self.groups)


@settings(max_examples=EXAMPLES)
@given(channel_shuffle_layers())
def test_channel_shuffle_matches_torchvision(case):
    shape, layer = case
    make = lambda: ReferenceShuffle(layer["channel_shuffle"])  # noqa: E731
    compiled = agree(shape, [layer], make, batch=2)
    if compiled is not None:
        same_function(compiled, make(), shape)


class ReferenceSplit(nn.Module):
    def __init__(self, sizes, branches):
        super().__init__()
        self.sizes = sizes
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        parts = torch.split(x, self.sizes, 1)
        return torch.cat([b(p) for b, p in zip(self.branches, parts)], 1)


def reference_branch(kind, cin, out):
    if kind == "empty":
        return nn.Sequential()
    if kind == "relu":
        return nn.ReLU()  # the first op of a branch reads a shared input: not in place
    if kind == "conv1":
        return nn.Conv2d(cin, out, 1)
    return nn.Sequential(nn.Conv2d(cin, out, 3, padding=1), nn.BatchNorm2d(out),
                         nn.ReLU(inplace=True))


@settings(max_examples=EXAMPLES)
@given(split_layers())
def test_split_matches_torch(case):
    shape, layer, branches = case
    sizes = layer["sizes"]
    make = lambda: ReferenceSplit(sizes, [reference_branch(k, c, o)  # noqa: E731
                                          for (k, o), c in zip(branches, sizes)])
    compiled = agree(shape, [layer], make, batch=2)
    if compiled is not None:
        same_function(compiled, make(), shape)


def shufflenet_block(inp, oup, stride):
    bf = oup // 2
    right = [
        {"conv": bf, "kernel": 1, "bias": False, "batch_norm": True, "activation": "relu"},
        {"conv": bf, "kernel": 3, "stride": stride, "padding": 1, "depthwise": True,
         "bias": False, "batch_norm": True},
        {"conv": bf, "kernel": 1, "bias": False, "batch_norm": True, "activation": "relu"},
    ]
    if stride == 1:
        block = {"name": "block", "split": [[], right]}
    else:
        left = [{"conv": inp, "kernel": 3, "stride": stride, "padding": 1, "depthwise": True,
                 "bias": False, "batch_norm": True},
                {"conv": bf, "kernel": 1, "bias": False, "batch_norm": True,
                 "activation": "relu"}]
        block = {"name": "block", "concat": [left, right]}
    return [block, {"channel_shuffle": 2}]


@pytest.mark.parametrize("inp, oup, stride", [(24, 48, 2), (48, 48, 1), (116, 116, 1)])
def test_shufflenet_v2_unit_equals_torchvision(inp, oup, stride):
    """x1, x2 = x.chunk(2, dim=1); cat(x1, branch2(x2)); channel_shuffle(2),
    and the downsampling unit: every figure and the function itself."""
    from torchvision.models.shufflenetv2 import InvertedResidual
    shape = (inp, 14, 14)
    make = lambda: InvertedResidual(inp, oup, stride)  # noqa: E731
    compiled = agree(shape, shufflenet_block(inp, oup, stride), make, batch=2)
    same_function(compiled, make(), shape)


def convnext_block(dim, p):
    return [{"name": "block", "residual": [
        {"conv": dim, "kernel": 7, "padding": 3, "depthwise": True},
        {"layer_norm": True, "eps": 1e-6},
        {"conv": 4 * dim, "kernel": 1, "activation": "gelu"},
        {"conv": dim, "kernel": 1},
        {"layer_scale": 1e-6},
        {"drop_path": p},
    ], "shortcut": "identity"}]


@pytest.mark.parametrize("p", [0.0, 0.1])
def test_convnext_block_equals_torchvision(p):
    """torchvision's CNBlock (dwconv 7x7, LayerNorm over channels, Linear 4C,
    GELU, Linear C, layer scale, stochastic depth, + x) and the spec with 1x1
    convs for its linears: params, FlopCounterMode, saved bytes, the function."""
    from functools import partial

    from torchvision.models.convnext import CNBlock
    dim, shape = 32, (32, 14, 14)
    make = lambda: CNBlock(dim, 1e-6, p, partial(nn.LayerNorm, eps=1e-6))  # noqa: E731
    compiled = agree(shape, convnext_block(dim, p), make, batch=2)
    reference = make()
    with torch.no_grad():
        reference.layer_scale.uniform_(-1, 1)
    theirs = list(reference.state_dict().values())
    theirs = theirs[1:] + theirs[:1]  # its layer_scale comes first, ours last
    ours = compiled.state_dict()
    compiled.load_state_dict({k: v.reshape(ours[k].shape) for k, v in zip(ours, theirs)})
    x = torch.randn(2, *shape)
    for train in (False, True):
        same_outputs(compiled, reference, x, train, seed=3)


# -- squeeze-excitation -------------------------------------------------------------

@settings(max_examples=EXAMPLES)
@given(se_layers())
def test_se_matches_torchvision_squeeze_excitation(case):
    shape, layer = case
    squeeze = layer.get("squeeze") or shape[0] // layer["reduction"]
    make = lambda: tv.ops.SqueezeExcitation(shape[0], squeeze, TORCH_ACTIVATIONS[layer["activation"]],  # noqa: E731
                                            TORCH_ACTIVATIONS[layer["gate"]])
    if squeeze == 0:  # torch builds a conv with 0 channels; the engine refuses it
        with pytest.raises(SpecError, match="squeeze"):
            analyze(loads(network_text(shape, [layer])))
        return
    compiled = agree(shape, [layer], make, batch=2)
    same_function(compiled, make(), shape)  # same submodule names: the state dict loads


def make_divisible(v, divisor=8):
    """torchvision's _make_divisible (MobileNetV3's squeeze channels)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def mobile_block(cin, k, expanded, cout, se, act, stride, kind):
    """MobileNetV3's InvertedResidual or EfficientNet's MBConv as a spec."""
    body = []
    if expanded != cin:
        body.append({"conv": expanded, "kernel": 1, "bias": False, "batch_norm": True,
                     "activation": act})
    body.append({"conv": expanded, "kernel": k, "stride": stride, "padding": (k - 1) // 2,
                 "depthwise": True, "bias": False, "batch_norm": True, "activation": act})
    if kind == "mobilenet_v3" and se:
        body.append({"se": True, "squeeze": make_divisible(expanded // 4), "gate": "hardsigmoid"})
    if kind == "efficientnet":
        body.append({"se": True, "squeeze": max(1, cin // 4), "activation": "silu"})
    body.append({"conv": cout, "kernel": 1, "bias": False, "batch_norm": True})
    if stride == 1 and cin == cout:
        if kind == "efficientnet":
            body.append({"drop_path": 0.2})
        return [{"name": "block", "residual": body, "shortcut": "identity"}]
    return [{"name": "block", "layers": body}]


@pytest.mark.parametrize("cin, k, expanded, cout, se, act, stride", [
    (16, 3, 16, 16, True, "relu", 2), (24, 3, 72, 24, False, "relu", 1),
    (40, 5, 240, 40, True, "hardswish", 1), (80, 3, 184, 80, False, "hardswish", 1)])
def test_mobilenet_v3_block_equals_torchvision(cin, k, expanded, cout, se, act, stride):
    """Conv2dNormActivation with hardswish or relu in place, SE with a
    hardsigmoid gate and make_divisible(C/4, 8) squeeze channels, += input."""
    from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
    shape = (cin, 12, 12)
    cnf = InvertedResidualConfig(cin, k, expanded, cout, se, "HS" if act == "hardswish" else "RE",
                                 stride, 1, 1.0)
    make = lambda: InvertedResidual(cnf, nn.BatchNorm2d)  # noqa: E731
    compiled = agree(shape, mobile_block(cin, k, expanded, cout, se, act, stride,
                                         "mobilenet_v3"), make, batch=2)
    same_function(compiled, make(), shape)


@pytest.mark.parametrize("ratio, k, stride, cin, cout", [(1, 3, 1, 32, 16), (6, 3, 2, 16, 24),
                                                         (6, 5, 1, 40, 40)])
def test_efficientnet_mbconv_equals_torchvision(ratio, k, stride, cin, cout):
    """SiLU in place, SE with SiLU and squeeze = input channels // 4,
    stochastic depth on the residual branch."""
    from torchvision.models.efficientnet import MBConv, MBConvConfig
    shape = (cin, 12, 12)
    make = lambda: MBConv(MBConvConfig(ratio, k, stride, cin, cout, 1), 0.2,  # noqa: E731
                          nn.BatchNorm2d)
    block = mobile_block(cin, k, cin * ratio, cout, True, "silu", stride, "efficientnet")
    compiled = agree(shape, block, make, batch=2)
    same_function(compiled, make(), shape)
    same_function(compiled, make(), shape, train=True)  # the same stochastic depth


def test_se_takes_one_width():
    with pytest.raises(SpecError, match="one of reduction or squeeze"):
        analyze(loads(network_text((16, 4, 4), [{"se": 4, "squeeze": 8}])))


# -- pools and padded convs -----------------------------------------------------------

def torch_pool(shape, layer):
    kind = next(k for k in layer if k in ("maxpool", "avgpool", "lp_pool", "adaptive_avgpool",
                                          "adaptive_maxpool"))
    if kind.startswith("adaptive"):
        size = layer[kind]
        size = tuple(None if s == "none" else s for s in (size if isinstance(size, tuple)
                                                         else (size, size)))
        cls = nn.AdaptiveAvgPool2d if kind == "adaptive_avgpool" else nn.AdaptiveMaxPool2d
        return lambda: cls(size)
    kernel = as_pair(layer[kind])
    stride = as_pair(layer["stride"]) if "stride" in layer else None
    if kind == "maxpool":
        return lambda: nn.MaxPool2d(kernel, stride, as_pair(layer["padding"]),
                                    as_pair(layer["dilation"]), ceil_mode=layer["ceil_mode"])
    if kind == "avgpool":
        return lambda: nn.AvgPool2d(kernel, stride, as_pair(layer["padding"]),
                                    ceil_mode=layer["ceil_mode"],
                                    divisor_override=layer["divisor_override"])
    return lambda: nn.LPPool2d(layer["norm_type"], kernel, stride, ceil_mode=layer["ceil_mode"])


@settings(max_examples=2 * EXAMPLES)
@given(modern_pool_layers())
def test_pools_match_torch(case):
    shape, layer = case
    agree(shape, [layer], torch_pool(shape, layer), batch=2)


@settings(max_examples=EXAMPLES)
@given(padded_conv_layers())
def test_conv_padding_modes_match_torch(case):
    shape, layer = case
    padding = layer["padding"] if isinstance(layer["padding"], str) else as_pair(layer["padding"])
    make = lambda: nn.Conv2d(shape[0], layer["conv"], as_pair(layer["kernel"]),  # noqa: E731
                             as_pair(layer.get("stride", 1)), padding,
                             as_pair(layer.get("dilation", 1)), bias=layer["bias"],
                             padding_mode=layer["padding_mode"])
    agree(shape, [layer], make, batch=2)


@pytest.mark.parametrize("kernel, size", [(3, 1), (7, 4), (5, [2, "none"])])
def test_global_pool_saves_nothing(kernel, size):
    """A global average pool (and an adaptive one to 1 x 1) is a mean in
    PyTorch: its backward needs only the shape. conv -> pool -> BN -> fc."""
    layers = [{"conv": 16, "kernel": kernel, "padding": kernel // 2, "activation": "relu"},
              {"adaptive_avgpool": size}, {"batch_norm": True}, {"fc": 10}]
    from archcalc.torch.measure import saved_tensor_bytes
    for batch in (1, 2):
        spec = loads(network_text((3, 12, 12), layers))
        report = analyze(spec, batch=batch)
        measured = saved_tensor_bytes(spec.build().train(), torch.randn(batch, 3, 12, 12))
        assert report.totals["saved_activation_bytes"] == measured


def test_pad_shortcut_refuses_to_drop_channels():
    with pytest.raises(SpecError, match="only adds zero channels"):
        analyze(loads(network_text((16, 8, 8), [{"pad_shortcut": True, "out": 8}])))
    report = analyze(loads(network_text((16, 8, 8), [{"pad_shortcut": True, "out": 32,
                                                       "stride": 2}])))
    assert report.rows[-1].output_shape == (32, 4, 4)


def test_split_refusals_and_syntax():
    def engine(shape, layer):
        return analyze(loads(network_text(shape, [layer])))
    with pytest.raises(SpecError, match="do not split into 2 equal slices"):
        engine((5, 4, 4), {"split": [[], [{"relu": True}]]})
    with pytest.raises(SpecError, match="add up to 5, but the input has 6"):
        engine((6, 4, 4), {"split": [[], []], "sizes": [2, 3]})
    with pytest.raises(SpecError, match="one channel count per branch"):
        engine((6, 4, 4), {"split": [[], []], "sizes": [6]})
    with pytest.raises(SpecError, match="at least two branches"):
        engine((6, 4, 4), {"split": [[]]})
    report = engine((6, 4, 4), {"name": "s", "split": [[], [{"conv": 5, "kernel": 1}]]})
    assert [r.name for r in report.rows] == ["input", "s.b2.conv1", "s.concat"]
    assert report.rows[-1].output_shape == (8, 4, 4)


# -- the fixes: check at batch 1, explain on se, the kinds listing -----------------------

def test_check_batch_norm_on_one_value_per_channel_at_batch_1():
    from archcalc.torch.check import run_check
    spec = loads(network_text((3, 8, 8), [
        {"conv": 16, "kernel": 3, "padding": 1, "batch_norm": True, "activation": "relu"},
        {"global_avgpool": True}, {"batch_norm": True}, {"fc": 10}, {"batch_norm": True}]))
    for batch in (1, 2):
        result = run_check(spec, batch=batch)
        assert result.ok, [(c.what, c.calculated, c.measured) for c in result.totals]


def test_explain_shows_the_macs_of_se():
    from archcalc.explain import explain
    spec = loads(network_text((32, 8, 8), [{"name": "se", "se": 4}]))
    text = "\n".join(explain(analyze(spec), "se"))
    assert "MACs: 32*8 + 8*32 = 512" in text
    assert "no multiply-accumulates" not in text


def test_every_new_kind_is_listed_with_its_rule():
    from click.testing import CliRunner

    from archcalc.cli import main
    out = CliRunner().invoke(main, ["kinds"], terminal_width=400).stdout
    for kind in ("relu6", "hardswish", "hardsigmoid", "silu", "mish", "gelu", "layer_norm",
                 "group_norm", "instance_norm", "layer_scale", "drop_path", "channel_shuffle",
                 "adaptive_maxpool", "lp_pool"):
        assert kind in out, kind
    for arg in ("approximate", "padding_mode", "divisor_override", "dilation", "squeeze",
                "gate", "norm_type"):
        assert arg in out, arg


# -- end to end ------------------------------------------------------------------------

MODERN = '''
[model]
name = "modern blocks"
input = [3, 32, 32]
layers = [
  {conv = 16, kernel = 3, stride = 2, padding = 1, batch_norm = true, activation = "hardswish"},
  {conv = 16, kernel = 3, padding = 1, padding_mode = "reflect", activation = "relu6"},
  {name = "mb", residual = [
     {conv = 32, kernel = 1, batch_norm = true, activation = "silu"},
     {conv = 32, kernel = 3, padding = 1, depthwise = true, batch_norm = true, activation = "swish"},
     {se = true, squeeze = 8, activation = "silu", gate = "hardsigmoid"},
     {conv = 16, kernel = 1, batch_norm = true},
     {drop_path = 0.2},
  ]},
  {name = "shuffle", split = [[], [
     {conv = 8, kernel = 1, batch_norm = true, activation = "relu"},
     {conv = 8, kernel = 3, padding = 1, depthwise = true, batch_norm = true},
     {conv = 8, kernel = 1, batch_norm = true, activation = "relu"},
  ]], sizes = [8, 8]},
  {channel_shuffle = 2},
  {name = "cnx", residual = [
     {conv = 16, kernel = 7, padding = 3, depthwise = true},
     {layer_norm = true, eps = 1e-6},
     {conv = 64, kernel = 1, activation = "gelu"},
     {conv = 16, kernel = 1},
     {layer_scale = 1e-6},
     {drop_path = 0.1, mode = "batch"},
  ]},
  {group_norm = 4},
  {instance_norm = true, affine = true},
  {mish = true},
  {gelu = true, approximate = "tanh"},
  {maxpool = 3, stride = 1, padding = 1, dilation = 2},
  {avgpool = 2, divisor_override = 3},
  {lp_pool = 2, norm_type = 2.0},
  {adaptive_maxpool = ["none", 3]},
  {adaptive_avgpool = 1},
  {layer_norm = true},
  {fc = 10, activation = "hardsigmoid"},
]
'''


@pytest.mark.parametrize("batch", [1, 2])
def test_a_spec_of_the_new_kinds_builds_runs_and_checks(batch):
    from archcalc.torch.check import run_check
    spec = loads(MODERN)
    model = spec.build()
    y = model.train()(torch.randn(batch, 3, 32, 32))
    y.sum().backward()  # training works: nothing in place that backward needs
    result = run_check(spec, batch=batch)
    bad = [(r.name, c.what, c.calculated, c.measured) for r in result.rows for c in r.checks
           if c.ok is False] + [(c.what, c.calculated, c.measured) for c in result.totals
                                if c.ok is False]
    assert not bad, bad
    saved = next(c for c in result.totals if c.what.startswith("saved"))
    assert saved.calculated == saved.measured  # exactly, not only within the tolerance


def test_the_new_kinds_export_to_python(tmp_path):
    import importlib.util

    from archcalc.torch.export import to_python
    compiled = loads(MODERN).build().eval()
    path = tmp_path / "modern.py"
    path.write_text(to_python(compiled))
    module_spec = importlib.util.spec_from_file_location("exported_modern", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    model = module.ModernBlocks()
    # the export keeps the compiled model's module tree: its state_dict loads as is
    model.load_state_dict(compiled.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), compiled(x), atol=1e-5)
