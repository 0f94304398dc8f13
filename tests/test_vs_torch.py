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
from archcalc.torch.modules import (LocallyConnected2d, Maxout, PartialConv2d,  # noqa: E402
                                    SqueezeExcitation, Subsample)


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
    ({"local": 30, "kernel": 5}, lambda c: LocallyConnected2d(c, 30, (5, 3), (5, 5))),
    ({"upsample": 2}, lambda c: nn.Upsample(scale_factor=2.0)),
    ({"upsample": True, "size": [20, 21], "mode": "bilinear"},
     lambda c: nn.Upsample(size=(20, 21), mode="bilinear")),
    ({"se": 2}, lambda c: SqueezeExcitation(c, c // 2)),
    ({"maxout": 3}, lambda c: Maxout(3)),
    ({"conv": 6, "kernel": [1, 7], "padding": [0, 3]}, lambda c: nn.Conv2d(c, 6, (1, 7), padding=(0, 3))),
    ({"conv": 6, "kernel": 3, "depthwise": True, "bias": False},
     lambda c: nn.Conv2d(c, 6, 3, groups=c, bias=False)),
    ({"batch_norm": True}, lambda c: nn.BatchNorm2d(c)),
    ({"prelu": True, "per_channel": True}, lambda c: nn.PReLU(c)),
    ({"lrn": 5}, lambda c: nn.LocalResponseNorm(5)),
    ({"global_avgpool": True}, lambda c: nn.AdaptiveAvgPool2d(1)),
    ({"flatten": True}, lambda c: nn.Flatten()),
    ({"subsample": 2}, lambda c: Subsample(c, (2, 2), (2, 2))),
    ({"conv_table": [[0, 1], [2, 3, 4], [5]], "kernel": 3},
     lambda c: PartialConv2d([[0, 1], [2, 3, 4], [5]], (3, 3))),
    ({"softmax": True}, lambda c: nn.Softmax(1)),
    ({"gelu": True}, lambda c: nn.GELU()),
    ({"dropout": 0.3}, lambda c: nn.Dropout(0.3)),
])
def test_other_kinds_match_torch(layer, module):
    shape = (6, 9, 7)
    assert_same(shape, layer, module(shape[0]))
