"""The engine against PyTorch itself: random layer configurations, the output
shape of a real forward pass and sum(p.numel()) must equal the engine's, and
a configuration torch rejects must be rejected by the engine too."""
import pytest
from hypothesis import given, note as hypothesis_note, settings
from hypothesis.errors import InvalidArgument

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.spec.loader import loads
from strategies import (adaptive_pool_layers, as_pair, conv_layers, conv_transpose_layers,
                        fc_layers, pool_layers, spec_text)

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


# Independent references for the kinds torch.nn lacks, in plain torch code
# (never archcalc's own modules, which would check the engine against itself).

class ConvPerMapReference(nn.Module):
    """LeNet-5's C3 as the paper draws it: output map i is its own conv over
    the input maps connections[i] only."""

    def __init__(self, connections, kernel):
        super().__init__()
        self.connections = connections
        self.convs = nn.ModuleList(nn.Conv2d(len(maps), 1, kernel) for maps in connections)

    def forward(self, x):
        return torch.cat([conv(x[:, maps]) for conv, maps in zip(self.convs, self.connections)], 1)


class UnsharedConvReference(nn.Module):
    """A locally connected layer: one nn.Linear per output position, fed that
    position's receptive field (F.unfold), so no weight is shared."""

    def __init__(self, channels, out, out_size, kernel):
        super().__init__()
        self.kernel, self.out, self.out_size = kernel, out, out_size
        fan_in = channels * kernel[0] * kernel[1]
        self.positions = nn.ModuleList(nn.Linear(fan_in, out, bias=False)
                                       for _ in range(out_size[0] * out_size[1]))
        self.bias = nn.Parameter(torch.zeros(out, *out_size))  # untied: one per position

    def forward(self, x):
        fields = F.unfold(x, self.kernel)  # N, fan_in, positions
        y = torch.stack([lin(fields[:, :, i]) for i, lin in enumerate(self.positions)], 2)
        return y.reshape(x.shape[0], self.out, *self.out_size) + self.bias


def maxout_reference(pieces, channels):
    """Maxout over each run of `pieces` consecutive channels, as a 3-D max pool
    whose window spans channels only."""
    return nn.Sequential(nn.Unflatten(1, (1, channels)),
                         nn.MaxPool3d((pieces, 1, 1)), nn.Flatten(1, 2))


def subsample_reference(channels):
    """LeCun 1998's S-layer: 2x2 average, then a trainable coefficient and bias
    per map (a depthwise 1x1 conv)."""
    return nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(channels, channels, 1, groups=channels))


def squeeze_excitation_reference(channels, squeeze):
    """torchvision's own SqueezeExcitation (the block MobileNetV3 and EfficientNet use)."""
    from torchvision.ops import SqueezeExcitation
    return SqueezeExcitation(channels, squeeze)


def note(message):
    """hypothesis.note inside a property; the plain tests carry their repro in their id."""
    try:
        hypothesis_note(message)
    except InvalidArgument:
        pass


def engine(shape, layer):
    text = spec_text(shape, [layer])
    note("repro spec:\n" + text)
    try:
        report = analyze(loads(text))
    except SpecError as e:
        return None, str(e)
    return report, None


def torch_forward(module, shape):
    try:
        with torch.no_grad():
            y = module(torch.zeros(1, *shape))
    except RuntimeError as e:
        return None, str(e)
    if 0 in y.shape:  # torch returns an empty tensor; the engine rightly refuses it
        return None, f"empty output {tuple(y.shape)}"
    return tuple(y.shape[1:]), None


def assert_same(shape, layer, module):
    report, engine_error = engine(shape, layer)
    out, torch_error = torch_forward(module, shape)
    note(f"engine error: {engine_error}\ntorch error: {torch_error}")
    if torch_error:
        assert engine_error, f"torch rejects this layer ({torch_error}); the engine must too"
        return
    assert engine_error is None, engine_error
    row = report.rows[1]
    assert row.output_shape == out
    assert row.params == sum(p.numel() for p in module.parameters())


@settings(max_examples=300)
@given(conv_layers())
def test_conv_matches_torch(case):
    shape, layer = case
    padding = layer["padding"] if isinstance(layer["padding"], str) else as_pair(layer["padding"])
    module = nn.Conv2d(shape[0], layer["conv"], as_pair(layer["kernel"]),
                       as_pair(layer.get("stride", 1)), padding, as_pair(layer["dilation"]),
                       layer.get("groups", 1), layer["bias"])
    assert_same(shape, layer, module)


@settings(max_examples=200)
@given(pool_layers())
def test_pool_matches_torch(case):
    shape, layer = case
    kind = "maxpool" if "maxpool" in layer else "avgpool"
    cls = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
    kernel = as_pair(layer[kind])
    stride = as_pair(layer["stride"]) if "stride" in layer else None
    module = cls(kernel, stride, as_pair(layer["padding"]), ceil_mode=layer["ceil_mode"])
    assert_same(shape, layer, module)


@settings(max_examples=60)
@given(fc_layers())
def test_fc_matches_torch(case):
    shape, layer = case
    n = 1
    for d in shape:
        n *= d
    module = nn.Sequential(nn.Flatten(), nn.Linear(n, layer["fc"], bias=layer["bias"]))
    assert_same(shape, layer, module)


@settings(max_examples=150)
@given(conv_transpose_layers())
def test_conv_transpose_matches_torch(case):
    shape, layer = case
    module = nn.ConvTranspose2d(shape[0], layer["conv_transpose"], as_pair(layer["kernel"]),
                                as_pair(layer["stride"]), as_pair(layer["padding"]),
                                as_pair(layer["output_padding"]), layer.get("groups", 1),
                                layer["bias"], as_pair(layer["dilation"]))
    assert_same(shape, layer, module)


@settings(max_examples=60)
@given(adaptive_pool_layers())
def test_adaptive_pool_matches_torch(case):
    shape, layer = case
    assert_same(shape, layer, nn.AdaptiveAvgPool2d(as_pair(layer["adaptive_avgpool"])))


@pytest.mark.parametrize("layer, module", [
    ({"local": 30, "kernel": 5}, lambda c: UnsharedConvReference(c, 30, (5, 3), (5, 5))),
    ({"upsample": 2}, lambda c: nn.Upsample(scale_factor=2.0)),
    ({"upsample": True, "size": [20, 21], "mode": "bilinear"},
     lambda c: nn.Upsample(size=(20, 21), mode="bilinear")),
    ({"se": 2}, lambda c: squeeze_excitation_reference(c, c // 2)),
    ({"maxout": 3}, lambda c: maxout_reference(3, c)),
    ({"conv": 6, "kernel": [1, 7], "padding": [0, 3]}, lambda c: nn.Conv2d(c, 6, (1, 7), padding=(0, 3))),
    ({"conv": 6, "kernel": 3, "depthwise": True, "bias": False},
     lambda c: nn.Conv2d(c, 6, 3, groups=c, bias=False)),
    ({"batch_norm": True}, lambda c: nn.BatchNorm2d(c)),
    ({"prelu": True, "per_channel": True}, lambda c: nn.PReLU(c)),
    ({"lrn": 5}, lambda c: nn.LocalResponseNorm(5)),
    ({"global_avgpool": True}, lambda c: nn.AdaptiveAvgPool2d(1)),
    ({"flatten": True}, lambda c: nn.Flatten()),
    ({"subsample": 2}, lambda c: subsample_reference(c)),
    ({"conv_table": [[0, 1], [2, 3, 4], [5]], "kernel": 3},
     lambda c: ConvPerMapReference([[0, 1], [2, 3, 4], [5]], (3, 3))),
    ({"softmax": True}, lambda c: nn.Softmax(1)),
    ({"gelu": True}, lambda c: nn.GELU()),
    ({"dropout": 0.3}, lambda c: nn.Dropout(0.3)),
])
def test_other_kinds_match_torch(layer, module):
    shape = (6, 9, 7)
    assert_same(shape, layer, module(shape[0]))
