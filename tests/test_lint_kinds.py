"""`archcalc lint` reads what the kinds declare (cancels_bias, fully_connected,
pointwise, depthwise), not their names: the rules on small specs, each
figure checked against the PyTorch module the spec builds."""
import pytest

from archcalc.lint import lint
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def _spec(layers: str, shape=(8, 16, 16)):
    return loads(f'''
[model]
name = "t"
input = {list(shape)}
layers = [
{layers}
]
''', file="<t>")


def _found(spec, rule):
    return [f for f in lint(spec.analyze()) if f.rule == rule]


def test_fc_heavy_counts_dropconnect_layers_as_fully_connected():
    """DropConnect (Wan et al. 2013) is a fully connected layer: its weights
    count towards VGG's lesson as nn.Linear's do."""
    spec = _spec('''
  {conv = 4, kernel = 3, padding = 1, name = "c"},
  {flatten = true, name = "flat"},
  {dropconnect = 64, p = 0.5, name = "fc1"},
  {fc = 10, name = "fc2"},
''')
    [found] = _found(spec, "fc-heavy")
    model = spec.build()
    total = sum(p.numel() for p in model.parameters())
    fc = sum(p.numel() for name, m in model.named_modules() if name in ("fc1", "fc2")
             for p in m.parameters())
    assert found.layer == "fc1, fc2"
    assert found.numbers == {"fc_params": fc, "params": total,
                             "largest": sum(p.numel() for p in model.fc1.parameters())}


def test_bias_before_a_fused_batch_norm_is_the_conv_s_bias():
    spec = _spec('{conv = 12, kernel = 3, padding = 1, batch_norm = true, name = "c"},')
    [found] = _found(spec, "bias-before-bn")
    conv = spec.build().c[0]
    assert isinstance(conv, nn.Conv2d)
    assert found.numbers["redundant_params"] == conv.bias.numel() == 12


def test_a_group_norm_after_a_biased_conv_cancels_nothing_lint_says():
    """Only a per-channel mean (batch norm) cancels a per-channel bias: a group
    norm's mean spans several channels, so the bias shifts channels apart."""
    spec = _spec('''
  {conv = 12, kernel = 3, padding = 1, name = "c"},
  {group_norm = 3, name = "gn"},
''')
    assert _found(spec, "bias-before-bn") == []
    model = spec.build().eval()
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        before = model(x)
        model.c.bias.add_(torch.arange(12.0))     # a different shift per channel
        assert not torch.allclose(model(x), before, atol=1e-4)


def _conv_macs(module, shape):
    counter = FlopCounterMode(display=False)
    with torch.device("meta"), counter:
        module.to("meta")(torch.empty(1, *shape))
    return counter.get_total_flops() // 2


def test_a_pointwise_expansion_before_a_strided_pool_is_found_with_torch_s_macs():
    spec = _spec('''
  {conv = 32, kernel = 1, name = "expand"},
  {maxpool = 2, name = "pool"},
''')
    [found] = _found(spec, "expand-before-reduce")
    assert found.layer == "expand"
    assert found.numbers["macs"] == _conv_macs(spec.build().expand, (8, 16, 16))
    # the same 1x1 conv at the reduced grid, as the finding proposes
    assert found.numbers["macs_after_reduction"] == _conv_macs(nn.Conv2d(8, 32, 1), (8, 8, 8))


@pytest.mark.parametrize("expand, reduce", [
    ('{conv = 32, kernel = 1, groups = 8, name = "expand"}', '{maxpool = 2, name = "pool"}'),
    ('{conv = 32, kernel = 1, name = "expand"}',
     '{conv = 32, kernel = 3, stride = 2, padding = 1, depthwise = true, name = "dw"}'),
    ('{conv = 32, kernel = 1, name = "expand"}',
     '{conv = 32, kernel = 3, stride = 2, padding = 1, groups = 32, name = "dw"}'),
])
def test_no_expand_before_reduce_for_grouped_1x1_nor_before_a_depthwise_conv(expand, reduce):
    """A grouped 1x1 is not pointwise; MobileNet-V2's expansion feeds a depthwise
    conv on purpose (a depthwise conv: one group per input channel, as built)."""
    spec = _spec(f"  {expand},\n  {reduce},")
    assert _found(spec, "expand-before-reduce") == []
    model = spec.build()
    second = getattr(model, "dw", None)
    if second is not None:
        conv = second if isinstance(second, nn.Conv2d) else second[0]
        assert conv.groups == conv.in_channels == 32
