"""timm's MViTv2 (mvitv2.py): its pooling attention, MultiScaleAttention, is one
multiscale_attention row called with the tokens and their map's size;
MultiScaleBlock's forward traces around it (the shortcut's max pool, the class
token set apart). params == sum(p.numel()), MACs == FlopCounterMode / 2 on the
meta device (``imported`` checks both), and the spec's model loads timm's
state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OnMap(nn.Module):
    """A 1x1 conv to `width`, its map read as tokens (a class token first
    where `cls`), then the attention called with the map's size."""

    def __init__(self, attn, width, cls=False):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if cls else None
        self.attn = attn

    def forward(self, x):
        x = self.stem(x)
        size = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.attn(x, size)[0]


def attention(dim, dim_out, heads, **kwargs):
    from functools import partial

    from timm.models.mvitv2 import MultiScaleAttention
    kwargs = {"feat_size": (4, 4), "kernel_q": (3, 3), "kernel_kv": (3, 3),
              "has_cls_token": False, "norm_layer": partial(nn.LayerNorm, eps=1e-6), **kwargs}
    return MultiScaleAttention(dim, dim_out, num_heads=heads, **kwargs)


def test_pooled_attention_is_one_row_and_computes_the_same():
    """16 tokens of a 4 x 4 map, 2 heads of 8, q, k and v pooled at stride 2
    to 2 x 2. Params: qkv 16*48 + 48 = 816, proj 16*16 + 16 = 272, three pools
    and norms 3*(8*9 + 2*8) = 264, the tables 2 x (2*2 - 1) x 8 = 48: 1400.
    MACs: qkv 3*16*16*16 = 12288, q's conv 16*4*9 = 576, k's and v's 1152,
    scores and weighted values 2*4*4*16 = 512, the position bias 4*16*(2 + 2)
    = 256, proj 4*16*16 = 1024: 15808."""
    model = OnMap(attention(16, 16, 2, stride_q=(2, 2), stride_kv=(2, 2)), 16)
    done, report = imported(model, (3, 4, 4))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "attn": "multiscale_attention"}
    row = report.rows[-1]
    assert row.output_shape == (4, 16)
    assert (row.params, row.macs) == (1400, 15808)
    same_function(model, (3, 4, 4), done)


def test_a_class_token_is_not_pooled_and_the_width_grows():
    """17 tokens (a class token first), 1 head, 16 -> 32; q pooled at stride 1
    (4 x 4, 17 tokens), k and v at stride 2 (2 x 2, 5 tokens), tables of
    2*4 - 1 = 7 rows of 32. Params: qkv 16*96 + 96 = 1632, proj 32*32 + 32 =
    1056, pools and norms 3*(32*9 + 64) = 1056, tables 2*7*32 = 448: 4192.
    MACs: qkv 3*17*16*32 = 26112, q's conv 32*16*9 = 4608, k's and v's
    2*32*4*9 = 2304, scores and values 2*17*5*32 = 5440, the position bias
    (the map's 16 queries only) 16*32*(2 + 2) = 2048, proj 17*32*32 = 17408:
    57920."""
    model = OnMap(attention(16, 32, 1, stride_kv=(2, 2), has_cls_token=True), 16, cls=True)
    done, report = imported(model, (3, 4, 4))
    assert rows(report)["attn"] == "multiscale_attention"
    row = report.rows[-1]
    assert row.output_shape == (17, 32)
    assert (row.params, row.macs) == (4192, 57920)
    same_function(model, (3, 4, 4), done)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pools_without_position_bias_or_residual(mode):
    """Max or avg pools (no weights, no norm), no tables, no q added back, no
    qkv bias: params 16*48 + 272 = 1040; MACs 12288 + 512 + 1024 = 13824
    (the pools count nothing)."""
    model = OnMap(attention(16, 16, 2, stride_q=(2, 2), stride_kv=(2, 2), mode=mode,
                            rel_pos_type="none", residual_pooling=False, qkv_bias=False), 16)
    done, report = imported(model, (3, 4, 4))
    row = report.rows[-1]
    assert (row.type, row.params, row.macs) == ("multiscale_attention", 1040, 13824)
    assert f'pool = "{mode}"' in done.text and "rel_pos = false" in done.text
    same_function(model, (3, 4, 4), done)


def test_unshared_conv_pools_have_no_kind():
    model = OnMap(attention(16, 16, 1, stride_q=(2, 2), mode="conv_unshared"), 16).eval()
    with pytest.raises(importer.Unsupported, match="conv_unshared"):
        importer.import_module(model, (3, 4, 4), strict=True)


def test_tables_built_for_another_map_have_no_kind():
    """Built for an 8 x 8 map (tables of 15 rows), called on 4 x 4 (the kind's
    7): timm indexes the larger table; the kind would hold other weights."""
    model = OnMap(attention(16, 16, 2, feat_size=(8, 8)), 16).eval()
    with pytest.raises(importer.Unsupported, match="rel_pos_h"):
        importer.import_module(model, (3, 4, 4), strict=True)


@pytest.mark.parametrize("cls, expand", [(False, True), (True, False)])
def test_a_small_mvitv2_imports_with_no_opaque_row_and_computes_the_same(cls, expand):
    """Two stages (the second's first block pools q at stride 2 and widens the
    tokens: its shortcut a Linear (expand_attn) or the MLP's, then a max
    pool, the class token set apart), the attention one row per block."""
    from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg
    cfg = MultiScaleVitCfg(depths=(1, 2), embed_dim=8, num_heads=1, use_cls_token=cls,
                           expand_attn=expand, stride_kv_adaptive=(2, 2))
    model = MultiScaleVit(cfg, img_size=(32, 32), num_classes=10).eval()
    done, report = imported(model, (3, 32, 32))
    kinds = list(rows(report).values())
    assert "opaque" not in kinds and kinds.count("multiscale_attention") == 3
    assert ("class_token" in kinds) == cls
    same_function(model, (3, 32, 32), done)
