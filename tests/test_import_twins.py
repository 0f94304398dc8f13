"""Twins (Chu et al. 2021): PCPVT's global sub-sampled attention (timm's
GlobalSubSampleAttn: q from every token, k and v from the map reduced by an
sr x sr conv at stride sr and a LayerNorm) maps to PVT's ``sr_attention``
kind, called with the tokens' map size as PVT v2's Attention is. A small
PCPVT imports with --strict (no opaque row): params == sum(p.numel()), MACs
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


def _pcpvt(**kw):
    from timm.models.twins import Twins
    return Twins(img_size=32, patch_size=4, embed_dims=(16, 32), num_heads=(1, 2),
                 mlp_ratios=(2, 2), depths=(2, 2), sr_ratios=(2, 1), num_classes=5, **kw)


def test_a_small_pcpvt_imports_with_no_opaque_row():
    torch.manual_seed(0)
    model = _pcpvt().eval()
    done = importer.import_module(model, (3, 32, 32), label="pcpvt", strict=True)
    assert done.opaque == [] and "sr_attention = " in done.text
    assert '"blocks.0.1"' in done.text and '"pos_block.0"' in done.text
    spec = loads(done.text, file="pcpvt")
    report = analyze(spec)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    with importer.empty_weights():
        meta = _pcpvt().eval()
    assert report.totals["macs"] == meta_macs(meta, (3, 32, 32))
    built = spec.build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (built(x) - model(x)).abs().max().item() <= 1e-5
