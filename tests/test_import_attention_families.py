"""timm attentions written as ops (CaiT's ClassAttn and TalkingHeadAttn, XCiT's
XCA, ...) import as one derived row each: params == sum(p.numel()), MACs ==
FlopCounterMode / 2 on the meta device (``imported`` checks both), and the
spec's model loads timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import (  # noqa: E402
    imported, rows, same_function, timm_meta)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OnTokens(nn.Module):
    """A 1x1 conv to `width`, its map read as tokens, then the module."""

    def __init__(self, module, width=16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.attn = module

    def forward(self, x):
        return self.attn(self.stem(x).flatten(2).transpose(1, 2))


def kinds_of(report):
    return [kind for kind in rows(report).values()]


# -- CaiT: ClassAttn and TalkingHeadAttn -------------------------------------------


@pytest.mark.parametrize("heads, bias", [(4, True), (2, False), (1, True)])
def test_class_attn_is_one_row_and_computes_the_same(heads, bias):
    from timm.models.cait import ClassAttn
    model = OnTokens(ClassAttn(16, num_heads=heads, qkv_bias=bias))
    done, report = imported(model, (3, 2, 3))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "attn": "class_attention"}
    row = report.rows[-1]
    assert row.output_shape == (1, 16)
    # q, k, v, proj: 4*16^2 + 16 (+ 3*16 with the qkv bias); MACs: 16^2 (q on
    # one token) + 2*6*16^2 (k, v) + 2*6*16 (one query's scores, its values) + 16^2
    assert row.params == 4 * 256 + 16 + (48 if bias else 0)
    assert row.macs == 256 + 2 * 6 * 256 + 2 * 6 * 16 + 256
    same_function(model, (3, 2, 3), done)


@pytest.mark.parametrize("heads, bias", [(4, False), (2, True)])
def test_talking_head_attn_is_one_row_and_computes_the_same(heads, bias):
    from timm.models.cait import TalkingHeadAttn
    model = OnTokens(TalkingHeadAttn(16, num_heads=heads, qkv_bias=bias))
    done, report = imported(model, (3, 2, 3))
    assert rows(report)["attn"] == "talking_heads_attention"
    row = report.rows[-1]
    n, d, h = 6, 16, heads
    assert row.params == 4 * d * d + d + 2 * (h * h + h) + (3 * d if bias else 0)
    assert row.macs == 4 * n * d * d + 2 * n * n * d + 2 * n * n * h * h
    same_function(model, (3, 2, 3), done)


def test_a_class_attn_scaled_otherwise_has_no_kind():
    from timm.models.cait import ClassAttn
    module = ClassAttn(16, num_heads=4)
    module.scale = 1.0
    with pytest.raises(importer.Unsupported, match="ClassAttn"):
        importer.import_module(OnTokens(module).eval(), (3, 2, 3), strict=True)


@pytest.mark.parametrize("depth_token_only", [1, 2])
def test_a_small_cait_imports_with_no_opaque_row_and_computes_the_same(depth_token_only):
    """CaiT's first class-attention block adds the class token itself
    (cls_token.expand(...), the parameter the cat put first): it reads back as
    first_tokens of that cat, so the parameter has one row; the later blocks
    cat the class token and the patch tokens along the tokens."""
    model = timm.create_model("cait_xxs24_224", pretrained=False, depth=2, img_size=32,
                              patch_size=8, depth_token_only=depth_token_only)
    done, report = imported(model, (3, 32, 32))
    kinds = kinds_of(report)
    assert "first_tokens" in kinds and "class_attention" in kinds
    assert kinds.count("concat") == depth_token_only   # each later block's, and the last
    same_function(model, (3, 32, 32), done)


# -- XCiT: cross-covariance attention ----------------------------------------------


@pytest.mark.parametrize("heads, bias", [(4, False), (2, True), (8, True)])
def test_xca_is_one_row_and_computes_the_same(heads, bias):
    from timm.models.xcit import XCA
    model = OnTokens(XCA(16, num_heads=heads, qkv_bias=bias))
    done, report = imported(model, (3, 2, 3))
    assert rows(report)["attn"] == "xca"
    row = report.rows[-1]
    n, d = 6, 16
    # + the temperature, one per head; the channel scores are (D/h)^2 per head
    assert row.params == 4 * d * d + d + heads + (3 * d if bias else 0)
    assert row.macs == 4 * n * d * d + 2 * n * d * (d // heads)
    same_function(model, (3, 2, 3), done)


# -- PVT v2: spatial-reduction attention -------------------------------------------


class PvtBlock(nn.Module):
    """timm's pvt_v2 Attention as its blocks call it: the tokens and their map's size."""

    def __init__(self, **kwargs):
        super().__init__()
        from timm.models.pvt_v2 import Attention
        self.stem = nn.Conv2d(3, 16, 1)
        self.attn = Attention(16, **kwargs)

    def forward(self, x):
        x = self.stem(x)
        return self.attn(x.flatten(2).transpose(1, 2), x.shape[2:])


@pytest.mark.parametrize("kwargs, reduced, kernel", [
    ({"num_heads": 2}, 54, 0),                               # M = N
    ({"num_heads": 4, "sr_ratio": 2}, 3 * 4, 2),             # floor(6/2) x floor(9/2)
    ({"num_heads": 1, "sr_ratio": 3, "qkv_bias": False}, 2 * 3, 3),
    ({"num_heads": 2, "linear_attn": True}, 49, 1)])         # pooled to 7 x 7
def test_pvt_v2_attention_is_one_row_and_computes_the_same(kwargs, reduced, kernel):
    model = PvtBlock(**kwargs)
    done, report = imported(model, (3, 6, 9))
    assert rows(report)["attn"] == "sr_attention"
    row = report.rows[-1]
    n, d, m = 54, 16, reduced
    bias = kwargs.get("qkv_bias", True)
    assert row.params == 4 * d * d + d + (3 * d if bias else 0) + \
        ((d * d * kernel * kernel + 3 * d) if kernel else 0)
    assert row.macs == 2 * n * d * d + m * d * d * kernel * kernel + 2 * m * d * d + 2 * n * m * d
    same_function(model, (3, 6, 9), done)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_pvt_v2_imports_with_no_opaque_row(name):
    """Every attention an sr_attention row (b2_li: the pooled, linear form)."""
    done, report = imported(timm_meta(name), (3, 224, 224), f"timm:{name}")
    assert kinds_of(report).count("sr_attention") == (8 if name == "pvt_v2_b0" else 16)


# -- vit_relpos: attention with an MLP relative position bias ------------------------


def small_relpos(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("vit_relpos_small_patch16_224", pretrained=False,
                             img_size=(32, 48), depth=2, embed_dim=32, num_heads=4,
                             **kwargs).eval()


@pytest.mark.parametrize("kwargs", [
    {},                                                            # fc_norm, mean pool
    {"class_token": True, "global_pool": "token", "rel_pos_dim": 16},   # a prefix token
    {"block_fn": "ResPostRelPosBlock", "qkv_bias": True}])         # the rpn models' blocks
def test_relpos_attention_is_one_row_and_computes_the_same(kwargs):
    from timm.models import vision_transformer_relpos as relpos
    if "block_fn" in kwargs:
        kwargs = {**kwargs, "block_fn": getattr(relpos, kwargs["block_fn"])}
    model = small_relpos(**kwargs)
    done, report = imported(model, (3, 32, 48))      # params and MACs at batch 1
    assert kinds_of(report).count("relpos_attention") == 2
    row = next(r for r in report.rows if r.type == "relpos_attention")
    prefix = 1 if kwargs.get("class_token") else 0
    n, d, h, hidden = 6 + prefix, 32, 4, kwargs.get("rel_pos_dim", 128)
    offsets = 3 * 5                                  # (2*2 - 1) x (2*3 - 1) on a 2 x 3 grid
    assert row.params == 4 * d * d + d + (3 * d if kwargs.get("qkv_bias") else 0) + \
        3 * hidden + hidden * h + h
    assert row.macs == 4 * n * d * d + 2 * n * n * d + offsets * (2 * hidden + hidden * h)
    same_function(model, (3, 32, 48), done)


def test_a_shared_relative_position_bias_has_no_kind():
    """vit_srelpos: one RelPosMlp for the model, its bias passed to every block."""
    model = small_relpos(shared_rel_pos=True)
    with pytest.raises(importer.Unsupported, match="shared"):
        importer.import_module(model, (3, 32, 48), strict=True)


# -- iFormer: single-head modulation attention on a map ---------------------------


@pytest.mark.parametrize("kwargs, att, mid", [({}, 8, 16),
                                              ({"ratio": 2, "head_dim_reduction_ratio": 4}, 4, 32)])
def test_shma_is_one_row_and_computes_the_same(kwargs, att, mid):
    from timm.models.iformer import SHMA
    model = nn.Sequential(nn.Conv2d(3, 16, 1), SHMA(16, **kwargs))
    done, report = imported(model, (3, 4, 5))
    assert rows(report) == {"0": "conv", "1": "shma"}
    row, c, p = report.rows[-1], 16, 20
    # q, k (C -> A), v and the gate (C -> 2M), proj (M -> C), each + a batch norm's 2
    assert row.params == 2 * c * att + 2 * c * mid + mid * c + 2 * (2 * att + 2 * mid + c)
    assert row.macs == p * c * (2 * att + 2 * mid) + p * p * (att + mid) + p * mid * c
    same_function(model, (3, 4, 5), done)


def test_windowed_shma_has_no_kind():
    from timm.models.iformer import SHMA
    model = nn.Sequential(nn.Conv2d(3, 16, 1), SHMA(16, window_size=2)).eval()
    with pytest.raises(importer.Unsupported, match="SHMA"):
        importer.import_module(model, (3, 4, 4), strict=True)


@pytest.mark.slow
def test_iformer_t_imports_with_no_opaque_row():
    done, report = imported(timm_meta("iformer_t"), (3, 224, 224), "timm:iformer_t")
    assert kinds_of(report).count("shma") == 5


# -- Next-ViT: E-MHSA, keys and values pooled along the sequence -------------------


@pytest.mark.parametrize("kwargs, heads, reduced, out", [
    ({"head_dim": 4}, 4, 15, 16),
    ({"head_dim": 8, "sr_ratio": 2, "qkv_bias": False}, 2, 3, 16),   # floor(15 / 4)
    ({"head_dim": 4, "out_dim": 8, "sr_ratio": 2}, 4, 3, 8)])
def test_next_vit_efficient_attention_is_one_row_and_computes_the_same(kwargs, heads, reduced,
                                                                        out):
    from timm.models.nextvit import EfficientAttention
    model = OnTokens(EfficientAttention(16, **kwargs))
    done, report = imported(model, (3, 3, 5))
    assert rows(report)["attn"] == "pooled_attention"
    row, n, d, m = report.rows[-1], 15, 16, reduced
    bias = kwargs.get("qkv_bias", True)
    norm = 2 * d if kwargs.get("sr_ratio") else 0
    assert row.output_shape == (n, out)
    assert row.params == 3 * d * d + (3 * d if bias else 0) + d * out + out + norm
    assert row.macs == n * d * d + 2 * m * d * d + 2 * n * m * d + n * d * out
    same_function(model, (3, 3, 5), done)


@pytest.mark.slow
def test_nextvit_small_imports_with_no_opaque_row():
    done, report = imported(timm_meta("nextvit_small"), (3, 224, 224), "timm:nextvit_small")
    assert kinds_of(report).count("pooled_attention") == 4


# -- LowFormer: attention on a map shrunk by a strided depthwise conv ---------------


@pytest.mark.parametrize("kwargs", [{}, {"att_stride": 2, "att_kernel": 5, "fuse_out_proj": True},
                                    {"att_stride": 1, "att_kernel": 3},
                                    {"att_stride": 1, "att_kernel": 3, "fuse_out_proj": True}])
def test_lowformer_conv_attention_is_one_row_and_computes_the_same(kwargs):
    from timm.models.lowformer import ConvAttention
    module = ConvAttention(64, **kwargs)
    model = nn.Sequential(nn.Conv2d(3, 64, 1), module)
    done, report = imported(model, (3, 8, 12))
    assert rows(report) == {"0": "conv", "1": "lowres_attention"}
    row = report.rows[-1]
    s, k = kwargs.get("att_stride", 4), kwargs.get("att_kernel", 7)
    c, inner, t = 64, module.num_heads * module.head_dim, (3 if s == 1 else 2 * s)
    p = ((8 + 2 * (k // 2) - k) // s + 1) * ((12 + 2 * (k // 2) - k) // s + 1)
    back = p * inner * c * t * t if kwargs.get("fuse_out_proj") else p * inner * c + p * c * t * t
    assert row.output_shape == (64, 8, 12)
    assert row.macs == p * c * k * k + p * c * 3 * inner + 2 * p * p * inner + back
    same_function(model, (3, 8, 12), done)


@pytest.mark.slow
def test_lowformer_b0_imports_with_no_opaque_row():
    done, report = imported(timm_meta("lowformer_b0"), (3, 224, 224), "timm:lowformer_b0")
    assert kinds_of(report).count("lowres_attention") == 7


# -- MobileNetV4 hybrids: multi-query attention on a map ----------------------------


@pytest.mark.parametrize("kwargs, reduced", [
    ({"num_heads": 4, "key_dim": 8, "value_dim": 8}, 30),
    ({"num_heads": 2, "key_dim": 4, "value_dim": 6, "kv_stride": 2, "dim_out": 12,
      "use_bias": True}, 3 * 3)])
def test_multi_query_attention_2d_is_one_row_and_computes_the_same(kwargs, reduced):
    from timm.layers import MultiQueryAttention2d
    model = nn.Sequential(nn.Conv2d(3, 16, 1), MultiQueryAttention2d(16, **kwargs))
    done, report = imported(model, (3, 5, 6))
    assert rows(report) == {"0": "conv", "1": "mq_attention"}
    row, c, p, m = report.rows[-1], 16, 30, reduced
    h, kd, vd, o = kwargs["num_heads"], kwargs["key_dim"], kwargs["value_dim"], \
        kwargs.get("dim_out", 16)
    down = 2 * m * c * 9 if kwargs.get("kv_stride") else 0
    assert row.output_shape == (o, 5, 6)
    assert row.macs == p * c * h * kd + down + m * c * (kd + vd) + h * p * m * (kd + vd) + \
        p * h * vd * o
    same_function(model, (3, 5, 6), done)


def test_multi_query_attention_with_query_strides_has_no_kind():
    from timm.layers import MultiQueryAttention2d
    model = nn.Sequential(nn.Conv2d(3, 16, 1),
                          MultiQueryAttention2d(16, num_heads=2, query_strides=2)).eval()
    with pytest.raises(importer.Unsupported, match="MultiQueryAttention2d"):
        importer.import_module(model, (3, 4, 4), strict=True)


@pytest.mark.slow
def test_mobilenetv4_hybrid_medium_imports_with_no_opaque_row():
    done, report = imported(timm_meta("mobilenetv4_hybrid_medium"), (3, 256, 256),
                            "timm:mobilenetv4_hybrid_medium")
    assert kinds_of(report).count("mq_attention") == 8


# -- LeViT (conv form): attention with learned offset biases, queries subsampled -----


def levit_attentions():
    from timm.models.levit import Attention, AttentionDownsample
    common = {"attn_ratio": 2, "resolution": (5, 6), "use_conv": True,
              "act_layer": nn.Hardswish}
    return [Attention(16, 4, num_heads=2, **common),
            AttentionDownsample(16, 24, 4, num_heads=3, stride=2, **common),
            Attention(16, 4, num_heads=2, **{**common, "act_layer": nn.SiLU})]   # levit_conv_512


@pytest.mark.parametrize("index, heads, out, queries", [(0, 2, 16, 30), (1, 3, 24, 3 * 3),
                                                       (2, 2, 16, 30)])
def test_levit_attention_is_one_row_and_computes_the_same(index, heads, out, queries):
    model = nn.Sequential(nn.Conv2d(3, 16, 1), levit_attentions()[index])
    done, report = imported(model, (3, 5, 6))
    assert rows(report) == {"0": "conv", "1": "levit_attention"}
    row, c, p, q, kd, vd = report.rows[-1], 16, 30, queries, 4, 8
    # k, v (and q) 1x1 convs + batch norms, the output conv + its norm, a bias
    # per head and key position
    assert row.params == c * heads * (2 * kd + vd) + heads * vd * out + \
        2 * (heads * (2 * kd + vd) + out) + heads * p
    assert row.macs == p * c * heads * (kd + vd) + q * c * heads * kd + \
        heads * q * p * (kd + vd) + q * heads * vd * out
    same_function(model, (3, 5, 6), done)


@pytest.mark.parametrize("stride", [1, 2])
def test_levit_attention_on_tokens_is_the_linear_form(stride):
    """The levit (not levit_conv) models' LinearNorm form: tokens of its
    resolution's grid, Linear + BatchNorm1d projections, queries subsampled."""
    from timm.models.levit import Attention, AttentionDownsample

    class OnLevitTokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 1)
            self.attn = Attention(16, 4, num_heads=2, attn_ratio=2, resolution=(4, 6)) \
                if stride == 1 else AttentionDownsample(16, 24, key_dim=4, num_heads=2,
                                                        attn_ratio=2, stride=2,
                                                        resolution=(4, 6))

        def forward(self, x):
            return self.attn(self.stem(x).flatten(2).transpose(1, 2))

    model = OnLevitTokens()
    done, report = imported(model, (3, 4, 6))
    assert "grid = [4, 6]" in done.text and kinds_of(report)[-1] == "levit_attention"
    assert report.rows[-1].output_shape == ((24, 16) if stride == 1 else (6, 24))
    same_function(model, (3, 4, 6), done)


def test_levit_imports_with_no_opaque_row_and_computes_the_same():
    model = timm.create_model("levit_128s", pretrained=False, num_classes=10)
    done, report = imported(model, (3, 224, 224))
    kinds = kinds_of(report)
    assert "linear_norm" in kinds and kinds.count("levit_attention") == 2 + 3 + 4 + 2
    same_function(model, (3, 224, 224), done)


@pytest.mark.slow
def test_levit_conv_128s_imports_with_no_opaque_row():
    done, report = imported(timm_meta("levit_conv_128s"), (3, 224, 224), "timm:levit_conv_128s")
    assert kinds_of(report).count("levit_attention") == 11


# -- FastViT: RepMixer (x + ls(mixer(x) - norm(x))), attention on a map ------------


def test_fastvit_imports_with_no_opaque_row_and_computes_the_same():
    """FastViT-SA12 at 64 x 64: its RepMixer's subtraction a merge entry, its
    Attention (a map flattened to tokens and back) three rows: tokens, the
    attention that holds qkv and proj, to_map."""
    model = timm.create_model("fastvit_sa12", pretrained=False, num_classes=10)
    done, report = imported(model, (3, 64, 64))
    assert 'merge = "subtract"' in done.text
    kinds = kinds_of(report)
    assert kinds.count("attention") == 2 and "to_map" in kinds
    same_function(model, (3, 64, 64), done)


def test_efficientformer_pooling_is_the_pool_mixer():
    from timm.models.efficientformer import Pooling
    module = nn.Sequential(nn.Conv2d(3, 8, 1), Pooling(3))
    done, report = imported(module, (3, 9, 9))
    assert kinds_of(report) == ["conv", "pool_mixer"]
    same_function(module, (3, 9, 9), done)


# -- XCiT and EdgeNeXt: the Fourier position encoding, class attention -------------


def test_a_small_xcit_imports_with_no_opaque_row_and_computes_the_same():
    """XCiT's Fourier position encoding (computed from its weights alone, added
    to the tokens) is one row holding them; its class-attention blocks read the
    class token (first_tokens) and the rest (skip_tokens) and concatenate them
    again (two concats on one level, their branches named apart)."""
    model = timm.create_model("xcit_nano_12_p16_224", pretrained=False, img_size=64,
                              depth=2, num_classes=10)
    done, report = imported(model, (3, 64, 64))
    kinds = kinds_of(report)
    assert kinds.count("fourier_position_encoding") == 1 and kinds.count("xca") == 2
    assert "first_tokens" in kinds and kinds.count("class_attention") == 2
    same_function(model, (3, 64, 64), done)


def test_edgenext_imports_with_no_opaque_row_and_computes_the_same():
    model = timm.create_model("edgenext_xx_small", pretrained=False, num_classes=10)
    done, report = imported(model, (3, 64, 64))
    kinds = kinds_of(report)
    assert kinds.count("fourier_position_encoding") == 1 and "xca" in kinds
    same_function(model, (3, 64, 64), done)


def test_a_position_encoding_read_in_another_order_has_no_kind():
    """The map read as tokens column-first (a transpose of the grid) is not
    what the kind adds: refused by name, not guessed."""
    from timm.models.xcit import PositionalEncodingFourier

    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 4, 4)
            self.pos_embed = PositionalEncodingFourier(hidden_dim=8, dim=16)

        def forward(self, x):
            x = self.stem(x)
            b, c, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            pos = self.pos_embed(b, h, w).transpose(2, 3).reshape(b, c, h * w).permute(0, 2, 1)
            return tokens + pos

    with pytest.raises(importer.Unsupported, match="pos_embed's map read as tokens in "
                                                   "another order"):
        importer.import_module(Transposed().eval(), (3, 16, 8), strict=True)


# -- PiT and NaFlexViT: embeddings on a map, patches as tokens, a resampled grid ----


def test_pit_imports_with_no_opaque_row_and_computes_the_same():
    """PiT-Ti: its position embedding is added to the map (1 x C x H x W); each
    stage reads the class token (first_tokens) and the patch tokens back as a
    map (skip_tokens + to_map) for its pooling conv."""
    model = timm.create_model("pit_ti_224", pretrained=False, num_classes=10)
    done, report = imported(model, (3, 224, 224))
    kinds = kinds_of(report)
    assert kinds.count("position_embedding") == 1 and kinds.count("skip_tokens") == 2
    same_function(model, (3, 224, 224), done)


@pytest.mark.parametrize("size", [96, 64])
def test_naflexvit_patchifies_and_resamples_its_position_embedding(size):
    """NaFlexViT's linear patch embedding: the image cut into 16 x 16 patches
    as tokens (patchify), a Linear; its learned 1 x 16 x 16 x D embedding
    interpolated (bicubic, antialiased) to the tokens' grid: one row that
    keeps the stored shape, so timm's state_dict loads."""
    model = timm.create_model("naflexvit_base_patch16_gap", pretrained=False, embed_dim=48,
                              depth=1, num_heads=2, num_classes=10)
    done, report = imported(model, (3, size, size))
    assert 'patchify = 16' in done.text
    assert 'stored = [16, 16, 48], resample = "bicubic", antialias = true' in done.text
    same_function(model, (3, size, size), done)


def test_a_stored_embedding_and_resampling_are_checked():
    from archcalc.analysis import analyze
    from archcalc.errors import SpecError
    from archcalc.spec.loader import loads
    head = '[model]\nname = "p"\ninput = [3, 32, 32]\nlayers = [{patchify = 8}, {fc = 12}, '
    ok = analyze(loads(head + '{position_embedding = true, stored = [2, 2, 12], '
                              'resample = "bilinear"}]'))
    assert ok.totals["params"] == (8 * 8 * 3 + 1) * 12 + 2 * 2 * 12
    for tail, message in [
            ('{position_embedding = true, stored = [2, 2, 10], resample = "bilinear"}]',
             r"stored as \[h, w, D\] for tokens of width D"),
            ('{position_embedding = true, stored = [3, 3, 12]}]', "it holds 108 values"),
            ('{position_embedding = true, antialias = true}]', "are for resample")]:
        with pytest.raises(SpecError, match=message):
            analyze(loads(head + tail))


def test_siglip_map_head_with_timm_s_tanh_gelu_computes_the_same():
    """SigLIP's attention-pooling head: its MLP's act is timm's GELUTanh (no
    `approximate` attribute), which is GELU with the tanh approximation."""
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3,
                              global_pool="map", class_token=False, act_layer="gelu_tanh",
                              num_classes=5)
    done, report = imported(model, (3, 32, 32))
    assert 'approximate = "tanh"' in done.text and "attention_pool" in kinds_of(report)
    same_function(model, (3, 32, 32), done)


# -- GCNet: the global context block -------------------------------------------------


def test_gcresnet_imports_with_no_opaque_row_and_computes_the_same():
    model = timm.create_model("gcresnet33ts", pretrained=False, num_classes=10)
    done, report = imported(model, (3, 64, 64))
    assert kinds_of(report).count("global_context") == 10
    same_function(model, (3, 64, 64), done)


@pytest.mark.parametrize("kwargs", [dict(use_attn=False, fuse_add=True, fuse_scale=False),
                                    dict(fuse_add=True, act_layer=nn.SiLU)])
def test_global_context_variants_compute_the_same(kwargs):
    from timm.layers.global_context import GlobalContext
    module = nn.Sequential(nn.Conv2d(3, 16, 1), GlobalContext(16, rd_channels=4, **kwargs))
    done, report = imported(module, (3, 5, 6))
    assert kinds_of(report) == ["conv", "global_context"]
    same_function(module, (3, 5, 6), done)


def test_global_context_checks_out_at_batch_1_and_2():
    """Shapes, params, MACs (fvcore, FlopCounterMode) and memory, measured."""
    from archcalc.spec.loader import loads
    from archcalc.torch.check import run_check
    text = ('[model]\nname = "gc"\ninput = [3, 12, 10]\nlayers = [{conv = 16, kernel = 3}, '
            '{global_context = 4, fuse = "both"}, {global_context = 4, context = "mean", '
            'activation = "silu"}]')
    for batch in (1, 2):
        result = run_check(loads(text), batch=batch)
        bad = [(r.name, c.what, c.calculated, c.measured) for r in result.rows
               for c in r.checks if c.ok is False] + \
            [(c.what, c.calculated, c.measured) for c in result.totals if c.ok is False]
        assert result.ok and not bad, bad


def test_a_dynamic_size_vit_resampling_to_its_own_grid_is_a_plain_embedding():
    """timm's test_vit (dynamic_img_size): at its own input the position
    embedding is sliced, interpolated to the same grid and concatenated back:
    the replay finds it equal to the stored embedding, one plain row."""
    model = timm.create_model("test_vit", pretrained=False)
    done, report = imported(model, (3, 160, 160))
    assert kinds_of(report).count("position_embedding") == 1 and "stored" not in done.text
    same_function(model, (3, 160, 160), done)
