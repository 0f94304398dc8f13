"""timm models that did not import before (issue #20), each checked against
PyTorch itself: params == sum(p.numel()), MACs == FlopCounterMode / 2 on the
meta device, no opaque row, and the spec's built module loads timm's
state_dict (strict) and computes its logits.

- DLA-60 and larger: a root reads the trees of two levels above, each hidden
  by an inner level's tree1; the wiring reads the outer ones by a longer path
  to the same tensor (the level's last entry: "tree1.tree2.root").
- GhostNet-V3 (slow: 13 s on a quiet CPU) and MobileOne-S0 (5 s): a
  sum started at 0, a level that reads beside itself inside a block's body, a
  chain of adds whose paths hold one ModuleList several times.
- NaFlexViT: with a MAP head fx cannot trace its forward (torch.finfo of a
  traced dtype), so torch.export traces the whole of it, the modules fx could
  not trace included (it kept NaFlexEmbeds, which returns a tuple, a leaf).
"""
import pytest

from archcalc.analysis import analyze
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.torch import importer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def meta_macs(name: str, shape) -> int:
    with importer.empty_weights():
        model = timm.create_model(name, pretrained=False).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape, device="meta"))
    return counter.get_total_flops() // 2


def check_timm(name: str, shape, atol=1e-5, build=True) -> str:
    """Import timm's ``name`` at ``shape``; its figures are PyTorch's, it has no
    opaque row, and (``build``) the built spec computes timm's logits with
    timm's state_dict. Returns the spec's text."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    done = importer.import_module(model, shape, label=name)
    assert done.opaque == []
    spec = loads(done.text, file=name)
    report = analyze(spec)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == meta_macs(name, shape)
    if build:
        built = spec.build().eval()
        built.load_state_dict(model.state_dict(), strict=True)
        x = torch.randn(2, *shape)
        with torch.no_grad():
            expected, got = model(x), built(x)
        assert expected.shape == got.shape
        assert expected.abs().max().item() > 0
        assert (expected - got).abs().max().item() <= atol
    return done.text


def test_dla60_root_reads_the_trees_of_two_levels_above():
    """level4 (3 levels deep): tree2.tree2's root concatenates tree2.tree1's
    output and tree1's, both hidden by its own tree1: read as "tree1.root" and
    "tree1.tree2.root" (22,036,632 params, timm's)."""
    text = check_timm("dla60", (3, 64, 64))
    assert '"tree1.tree2.root"' in text and '"tree1.root"' in text


@pytest.mark.slow
def test_ghostnetv3_cheap_branch_reads_the_sum_of_its_enclosing_list():
    """GhostNet-V3's re-parameterizable branches: a sum started at 0 (``x1 = 0;
    x1 += conv(x)``: the 0 adds nothing) and cheap_rpr_conv's first add reading
    the scale branch's sum beside it; the level that reads outside itself stays
    out of blocks inside a block's body too."""
    text = check_timm("ghostnetv3_050", (3, 64, 64))
    assert "opaque" not in text


def test_mobileone_s0_sums_its_four_kxk_branches_and_the_scale_branch():
    """MobileOne-S0's block: conv_scale(x) + conv_kxk.0(x) + ... + conv_kxk.3(x),
    a chain of adds whose paths hold conv_kxk several times: written as its paths
    and merge entries (5,293,272 params, timm's)."""
    check_timm("mobileone_s0", (3, 64, 64))


@pytest.mark.parametrize("name, why, params", [
    ("naflexvit_base_patch16_map", "finfo", 280_936)])
def test_naflexvit_imports_through_torch_export(name, why, params):
    """A 2-block NaFlexViT with timm's MAP head: fx cannot trace the forward
    (torch.finfo of a traced dtype). torch.export's graph, inside the embeds fx
    kept whole too: exact params and MACs and no opaque row (the embeds'
    patches as tokens are patchify, its resampled position embedding a
    position_embedding row)."""
    kwargs = dict(depth=2, embed_dim=64, num_heads=2)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    done = importer.import_module(model, (3, 64, 64), label=name)
    assert done.tracer == "torch.export" and why in done.fx_error
    assert not done.whole and not done.opaque
    report = analyze(loads(done.text))
    assert report.totals["params"] == sum(p.numel() for p in model.parameters()) == params
    with importer.empty_weights():
        meta = timm.create_model(name, pretrained=False, **kwargs)
    for p in meta.parameters():   # FlopCounterMode's module tracker and timm's MAP head
        p.requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta.eval()(torch.zeros(1, 3, 64, 64, device="meta"))
    assert report.totals["macs"] == counter.get_total_flops() // 2
