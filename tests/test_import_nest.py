"""timm's NesT imports with no opaque row (NestLevel as one nest_level row):
params == sum(p.numel()), MACs == FlopCounterMode / 2 on the meta device
(``imported`` checks both), and the spec's model loads timm's state_dict
strictly and computes its outputs (``same_function``)."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def no_opaque(report):
    kinds = rows(report).values()
    assert not [k for k in kinds if k.startswith("opaque")]
    return kinds


# -- NesT: NestLevel ------------------------------------------------------------


def nest_level(pooled, depth=2, drop=None, pad_type=""):
    from timm.layers import LayerNorm
    from timm.models.nest import NestLevel
    return NestLevel(num_blocks=4, block_size=2, seq_length=4, num_heads=2, depth=depth,
                     embed_dim=8, prev_embed_dim=4 if pooled else None, drop_path=list(drop or [0.0] * depth),
                     norm_layer=LayerNorm, act_layer=nn.GELU, pad_type=pad_type)


@pytest.mark.parametrize("pad_type", ["", "same"])
def test_a_nest_level_with_its_conv_pool_is_one_row_and_computes_the_same(pad_type):
    """A 4 x 8 x 8 map, ConvPool to 8 x 4 x 4, four 2 x 2 blocks (T = 4, N = 4),
    two layers of 2 heads. Params: the conv 9*4*8 + 8, its norm 2*8, the
    position embedding 4*4*8, per layer 2*(2*8) (norms) + (8*24 + 24) (qkv) +
    (8*8 + 8) (proj) + (8*32 + 32) + (32*8 + 8) (MLP) = 872. MACs: the conv
    8*8*8*4*9 = 18432; per layer on 16 tokens 16*8*24 + 16*8*8 (qkv, proj) +
    2*4*4*4*8 (scores and values within the blocks) + 2*16*8*32 (MLP) = 13312.
    pad_type "same" (the _jx models): timm's MaxPool2dSame, padded at the
    bottom and right only (another result, the same figures)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nest_level(True, drop=(0.1, 0.2),
                                                         pad_type=pad_type))
    done, report = imported(model, (3, 8, 8))
    assert rows(report) == {"0": "conv", "1": "nest_level"}
    row = report.rows[-1]
    assert row.output_shape == (8, 4, 4)
    assert row.params == 296 + 16 + 128 + 2 * 872
    assert row.macs == 18432 + 2 * 13312
    assert "drop_first = 0.1" in done.text and "drop_last = 0.2" in done.text
    assert ("pool_same = true" in done.text) == (pad_type == "same")
    same_function(model, (3, 8, 8), done)


def test_a_first_nest_level_has_no_pool():
    """Four 2 x 2 blocks of a 8 x 4 x 4 map; one layer: 872 + the position
    embedding 4*4*8 params; MACs 16*8*32 (qkv, proj) + 2*4*4*4*8 + 2*16*8*32."""
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nest_level(False, depth=1))
    done, report = imported(model, (3, 4, 4))
    row = report.rows[-1]
    assert (row.type, row.output_shape) == ("nest_level", (8, 4, 4))
    assert row.params == 872 + 128
    assert row.macs == 16 * 8 * 32 + 2 * 4 * 4 * 4 * 8 + 2 * 16 * 8 * 32
    same_function(model, (3, 4, 4), done)


def test_a_nest_level_whose_layers_differ_has_no_kind():
    level = nest_level(True)
    level.transformer_encoder[1].attn.num_heads = 4
    with pytest.raises(importer.Unsupported, match="NestLevel"):
        importer.import_module(nn.Sequential(nn.Conv2d(3, 4, 1), level).eval(), (3, 8, 8),
                               strict=True)


def test_a_small_nest_imports_with_no_opaque_row_and_computes_the_same():
    """Three levels (16, 4 and 1 blocks) with timm's default stochastic depth
    (0.5, linear over the layers: each level's rates a line)."""
    from timm.models.nest import Nest
    model = Nest(img_size=32, patch_size=4, embed_dims=(8, 16, 16), num_heads=(1, 2, 2),
                 depths=(1, 1, 2), num_classes=5)
    done, report = imported(model, (3, 32, 32))
    assert list(no_opaque(report)).count("nest_level") == 3
    same_function(model, (3, 32, 32), done)
