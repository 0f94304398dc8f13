"""timm's GCViT: each GlobalContextVitStage (whose blocks read the map and the
global query, and fold the windows into the batch) one gcvit_stage row;
params == sum(p.numel()), MACs == FlopCounterMode / 2 on the meta device
(``imported`` checks both), and the spec's model loads timm's state_dict
strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stage(**kwargs):
    from functools import partial
    from timm.layers import LayerNorm2d
    from timm.models.gcvit import GlobalContextVitStage
    # as GlobalContextVit builds it: LayerNorm2d in the downsample, LayerNorm in the blocks
    args = dict(dim=8, depth=2, num_heads=2, feat_size=(8, 8), window_size=2, downsample=True,
                mlp_ratio=4.0, norm_layer=partial(LayerNorm2d, eps=1e-5),
                norm_layer_cl=nn.LayerNorm)
    return GlobalContextVitStage(**{**args, **kwargs})


def test_a_stage_is_one_row_and_computes_the_same():
    """8 x 8 x 8 in: the downsample to 16 x 4 x 4, one level of the global
    query generator (4 x 4 -> 2 x 2, one window), a local then a global block."""
    model = nn.Sequential(nn.Conv2d(3, 8, 1), stage())
    done, report = imported(model, (3, 8, 8))
    assert rows(report) == {"0": "conv", "1": "gcvit_stage"}
    row = report.rows[-1]
    assert row.output_shape == (16, 4, 4)
    # downsample: norm1 16, MBConv(8) 72 + 64 + 64 + 64 (SE width 8), reduction
    # 16*8*9, norm2 32; global MBConv(16): 144 + 128 + 128 + 256; blocks: norms
    # 2*32 each, MLP 16*64 + 64 + 64*16 + 16, proj 16*16 + 16, bias table 3*3*2,
    # qkv 16*48 + 48 (local) and 16*32 + 32 (global: keys and values only)
    mlp, attn = 2128, 16 * 16 + 16 + 18
    assert row.params == (16 + 264 + 1152 + 32) + 656 + 2 * (64 + mlp + attn) + 816 + 544
    # downsample: dwconv 64*8*9, SE 2*8*8, pwconv 64*8*8, reduction 16*16*72;
    # global MBConv: 16*16*9 + 2*16*8 + 16*16*16; per block: 2*N*T*C = 2*16*4*16
    # (scores, weighted values), proj 16*16*16, MLP 2*16*16*64; qkv 16*16*48, kv 16*16*32
    block = 2048 + 4096 + 32768
    assert row.macs == (4608 + 128 + 4096 + 18432) + (2304 + 256 + 4096) + 2 * block \
        + 12288 + 8192
    same_function(model, (3, 8, 8), done)


def test_a_stage_without_downsample_or_levels_with_layer_scales():
    """The first stage's form (no downsample) at a map of one window (levels
    0: one MBConv, no pool), layer scales and the stage norm."""
    model = nn.Sequential(nn.Conv2d(3, 8, 1), stage(downsample=False, feat_size=(3, 3),
                                                    window_size=3, depth=3, layer_scale=1e-5,
                                                    stage_norm=True))
    done, report = imported(model, (3, 3, 3))
    assert rows(report)["1"] == "gcvit_stage" and "init = 1e-05" in done.text
    same_function(model, (3, 3, 3), done)


def test_a_stage_with_stochastic_depth_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), stage(drop_path=0.1)).eval()
    with pytest.raises(importer.Unsupported, match="stochastic depth"):
        importer.import_module(model, (3, 8, 8), strict=True)


def test_a_small_gcvit_imports_with_no_opaque_row_and_computes_the_same():
    """At 64 x 64: stages on maps of 16, 8, 4 and 2 with windows of 2, 2, 4, 2
    (timm's window ratios), the global query generators 3, 2, 0 and 0 levels."""
    from timm.models.gcvit import GlobalContextVit
    model = GlobalContextVit(img_size=64, depths=(1, 2, 1, 1), embed_dim=16,
                             num_heads=(1, 2, 2, 4), num_classes=10)
    done, report = imported(model, (3, 64, 64))
    assert "opaque" not in done.text
    assert list(rows(report).values()).count("gcvit_stage") == 4
    same_function(model, (3, 64, 64), done)
