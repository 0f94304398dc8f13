"""ConViT (d'Ascoli et al. 2021): its gated positional self-attention as the
``gpsa`` kind (archcalc/layers/convit.py) and its MHSA blocks as the
``attention`` kind, checked against timm itself: the kind's params and MACs
against sum(p.numel()) and FlopCounterMode / 2 of timm's GPSA, and a small
ConViT imported with --strict (no opaque row), exact, whose built spec loads
timm's state_dict strictly and computes its logits."""
import pytest

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.layers import lookup
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from archcalc.torch import importer  # noqa: E402
from test_import_dag import meta_macs  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("n, d, heads, bias", [(16, 32, 4, False), (49, 24, 3, True),
                                               (1, 8, 1, False)])
def test_gpsa_figures_are_timm_s(n, d, heads, bias):
    from timm.models.convit import GPSA
    kind = lookup("gpsa")
    a = kind.read_args({"heads": heads, "bias": bias}, {})
    with importer.empty_weights():
        timm_gpsa = GPSA(d, num_heads=heads, qkv_bias=bias)
    assert kind.params(a, (n, d)) == sum(p.numel() for p in timm_gpsa.parameters())
    assert kind.macs(a, (n, d), (n, d)) == meta_macs(_Tokens(timm_gpsa), (n, d))
    # archcalc's module computes timm's with timm's weights
    torch.manual_seed(0)
    timm_gpsa = GPSA(d, num_heads=heads, qkv_bias=bias).eval()
    with torch.no_grad():
        timm_gpsa.gating_param.uniform_(-1, 1)
    ours = kind.build(a, (n, d)).eval()
    ours.load_state_dict(timm_gpsa.state_dict(), strict=True)
    x = torch.randn(2, n, d)
    with torch.no_grad():
        assert (ours(x) - timm_gpsa(x)).abs().max().item() <= 1e-5


class _Tokens(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_gpsa_takes_a_square_grid():
    kind = lookup("gpsa")
    with pytest.raises(SpecError, match="square grid"):
        kind.output_shape(kind.read_args({"heads": 2}, {}), (197, 64))


def _convit(**kw):
    from timm.models.convit import ConVit
    return ConVit(img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2,
                  local_up_to_layer=2, num_classes=5, **kw)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_a_small_convit_imports_with_no_opaque_row(qkv_bias):
    torch.manual_seed(0)
    model = _convit(qkv_bias=qkv_bias).eval()
    done = importer.import_module(model, (3, 32, 32), label="convit", strict=True)
    assert done.opaque == [] and "gpsa = 2" in done.text and "attention = 2" in done.text
    spec = loads(done.text, file="convit")
    report = analyze(spec)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    with importer.empty_weights():
        meta = _convit(qkv_bias=qkv_bias).eval()
    assert report.totals["macs"] == meta_macs(meta, (3, 32, 32))
    built = spec.build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (built(x) - model(x)).abs().max().item() <= 1e-5
