"""Twins (Chu et al. 2021): SVT's locally-grouped attention (timm's
LocallyGroupedAttn) as the ``grouped_attention`` kind (archcalc/layers/
twins.py), and PCPVT's global sub-sampled attention (timm's
GlobalSubSampleAttn: q from every token, k and v from the map reduced by an
sr x sr conv at stride sr and a LayerNorm) maps to PVT's ``sr_attention``
kind, called with the tokens' map size as PVT v2's Attention is. A small
PCPVT and a small SVT (its map padded to multiples of the window, or not) import with --strict (no opaque row): params == sum(p.numel()), MACs
== FlopCounterMode / 2 on the meta device, and the built spec loads timm's
state_dict strictly and computes its logits. Its blocks, position blocks and
patch embeddings interleave (blocks.0.0, pos_block.0, blocks.0.1): each is
named by its path (tests/test_spec_level_parts.py)."""
import pytest

from archcalc.analysis import analyze
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from archcalc.torch import importer  # noqa: E402
from test_import_dag import meta_macs  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _twins(img, wss):
    from timm.models.twins import Twins
    return Twins(img_size=img, patch_size=4, embed_dims=(16, 32), num_heads=(1, 2),
                 mlp_ratios=(2, 2), depths=(2, 2), sr_ratios=(2, 1), num_classes=5, wss=wss)


@pytest.mark.parametrize("img, wss, kind", [
    (32, None, "sr_attention"),              # PCPVT: global sub-sampled attention only
    (32, (2, 2), "grouped_attention"),       # SVT: 8 x 8 then 4 x 4 maps, windows of 2
    (40, (3, 3), "grouped_attention"),       # 10 x 10 and 5 x 5 maps padded to 12 and 6
], ids=["pcpvt", "svt", "svt_padded"])
def test_a_small_twins_imports_with_no_opaque_row(img, wss, kind):
    torch.manual_seed(0)
    model = _twins(img, wss).eval()
    shape = (3, img, img)
    done = importer.import_module(model, shape, label="twins", strict=True)
    assert done.opaque == [] and f"{kind} = " in done.text
    assert '"blocks.0.1"' in done.text and '"pos_block.0"' in done.text
    spec = loads(done.text, file="twins")
    report = analyze(spec)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    with importer.empty_weights():
        meta = _twins(img, wss).eval()
    assert report.totals["macs"] == meta_macs(meta, shape)
    built = spec.build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert (built(x) - model(x)).abs().max().item() <= 1e-5


def test_grouped_attention_figures():
    """On a 5 x 7 map in windows of 3 (padded to 6 x 9): params 4*D^2 + 4*D,
    MACs 3*54*D^2 + 2*54*9*D + 35*D^2."""
    from archcalc.layers import lookup
    kind = lookup("grouped_attention")
    a = kind.read_args({"heads": 2, "size": [5, 7], "window": 3}, {})
    assert kind.params(a, (35, 8)) == 4 * 64 + 32
    assert kind.macs(a, (35, 8), (35, 8)) == 3 * 54 * 64 + 2 * 54 * 9 * 8 + 35 * 64
