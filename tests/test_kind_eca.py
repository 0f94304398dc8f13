"""ECA (Wang et al. 2020) against timm's EcaModule, an independent
implementation: the same output with copied weights, the same state dict
keys, and the figures of the kind (k params, C*k MACs) against PyTorch's own
counts. The registry-driven tests cover its schema-drawn arguments."""
import math

import pytest
import torch

from archcalc.analysis import analyze
from archcalc.spec.loader import loads

timm_layers = pytest.importorskip("timm.layers")


def eca_spec(channels: int, size: int, kernel: int) -> str:
    return (f'[model]\nname = "eca"\ninput = [{channels}, {size}, {size}]\n'
            f'layers = [{{name = "eca", eca = {kernel}}}]\n')


@pytest.mark.parametrize("channels,size,kernel", [(64, 8, 3), (256, 7, 5), (3, 5, 1), (512, 2, 7)])
def test_eca_computes_what_timm_computes(channels, size, kernel):
    from archcalc.torch.build import build_model
    report = analyze(loads(eca_spec(channels, size, kernel)))
    ours = build_model(report.model).eval()
    theirs = timm_layers.EcaModule(None, kernel_size=kernel).eval()
    state = theirs.state_dict()
    assert set(state) == {"conv.weight"}
    ours.eca.load_state_dict(state, strict=True)
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    row = report.rows[-1]
    assert row.params == sum(p.numel() for p in theirs.parameters()) == kernel
    assert row.macs == channels * kernel   # one tap per channel and kernel position


def test_eca_kernel_from_the_papers_rule_for_resnet_widths():
    """The paper's adaptive k = |log2(C)/2 + 1/2|, made odd: 256..2048 channels
    give 5 (timm's rule, gamma 2, beta 1); the spec states k, and timm agrees."""
    for channels in (256, 512, 1024, 2048):
        t = int(abs((math.log(channels, 2) + 1) / 2))
        k = t if t % 2 else t + 1
        module = timm_layers.EcaModule(channels)
        assert module.conv.kernel_size == (k,)
        report = analyze(loads(eca_spec(channels, 7, k)))
        assert report.totals["params"] == k


def test_even_kernel_is_one_line():
    from archcalc.errors import SpecError
    with pytest.raises(SpecError, match="kernel must be odd"):
        analyze(loads(eca_spec(64, 8, 4)))
