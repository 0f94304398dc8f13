"""timm's Hiera imports with no opaque row: its Unroll is hiera_unroll, each
HieraBlock one hiera_block row (mask unit attention, q pooled over stride
groups, the shortcut pooled alike), the abswin models' position embedding
position_grid + position_window. Params == sum(p.numel()), MACs ==
FlopCounterMode / 2 on the meta device (``imported`` checks both), and the
spec's model loads timm's state_dict strictly and computes its outputs."""
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OnTokens(nn.Module):
    """A 1x1 conv to `width`, its map read as tokens, then the module."""

    def __init__(self, module, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.block = module

    def forward(self, x):
        return self.block(self.stem(x).flatten(2).transpose(1, 2))


def block(dim, dim_out, heads, **kwargs):
    from timm.models.hiera import HieraBlock
    return HieraBlock(dim, dim_out, heads, **kwargs)


# N = 16 tokens (a 4 x 4 map) of C = 8. Params: norm1 2C, proj C*C' + C', qkv
# 3*C*C' + 3C', proj C'^2 + C', norm2 2C', MLP 2*C'*4C' + 4C' + C' (+ 2C' layer
# scales). MACs: proj N*C*C', qkv 3*N*C*C', scores and values 2*M*T*C', proj
# M*C'^2, MLP 2*M*C'*4C', M = N/q tokens out, T = N/units keys per query.
CASES = {
    # mask units of window 2 after a q stride of 4: 16/(4*2) = 2 units, T = 8, M = 4
    "mask_unit_proj": (dict(dim_out=16, heads=2, q_stride=4, window_size=2,
                            use_mask_unit_attn=True),
                       16 + 144 + 432 + 272 + 32 + 1088 + 1040,
                       2048 + 6144 + 2 * 4 * 8 * 16 + 4 * 256 + 2 * 4 * 16 * 64),
    # global attention, the shortcut max and mean concatenated (C' = 2C), layer scales
    "global_pool": (dict(dim_out=16, heads=1, q_stride=4, use_expand_proj=False,
                         init_values=1e-5),
                    16 + 432 + 272 + 32 + 1088 + 1040 + 32,
                    6144 + 2 * 4 * 16 * 16 + 4 * 256 + 2 * 4 * 16 * 64),
    # the same width, 4 mask units of 4 tokens, no pooling: T = 4, M = 16
    "mask_unit_same": (dict(dim_out=8, heads=2, window_size=4, use_mask_unit_attn=True),
                       16 + 216 + 72 + 16 + 288 + 264,
                       3 * 16 * 64 + 2 * 16 * 4 * 8 + 16 * 64 + 2 * 16 * 8 * 32),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hiera_block_is_one_row_and_computes_the_same(case):
    kwargs, params, macs = CASES[case]
    dim_out, heads = kwargs.pop("dim_out"), kwargs.pop("heads")
    model = OnTokens(block(8, dim_out, heads, **kwargs))
    done, report = imported(model, (3, 4, 4))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "block": "hiera_block"}
    row = report.rows[-1]
    assert row.output_shape == (16 // kwargs.get("q_stride", 1), dim_out)
    assert (row.params, row.macs) == (params, macs)
    same_function(model, (3, 4, 4), done)


def test_a_hiera_block_with_another_activation_has_no_kind():
    model = OnTokens(block(8, 8, 2, act_layer=nn.ReLU)).eval()
    with pytest.raises(importer.Unsupported, match="HieraBlock"):
        importer.import_module(model, (3, 4, 4), strict=True)


def test_hiera_unroll_reorders_as_timm_does():
    """A 4 x 8 grid unrolled twice by 2 x 2: the built module moves each token
    where timm's Unroll does (an index tensor through both)."""
    from timm.models.hiera import Unroll

    from archcalc.layers import lookup
    timm_unroll = Unroll((16, 32), (4, 4), [(2, 2)] * 2)
    kind = lookup("hiera_unroll")
    a = kind.read_args({"size": [4, 8], "steps": 2}, {})
    x = torch.arange(2 * 32 * 3, dtype=torch.float32).reshape(2, 32, 3)
    assert torch.equal(kind.build(a, (32, 3))(x), timm_unroll(x))
    assert kind.from_torch(SimpleNamespace(x=(32, 3)), timm_unroll) == \
        [("hiera_unroll", {"size": [4, 8], "steps": 2})]
    with pytest.raises(Exception, match="does not divide"):
        kind.output_shape(kind.read_args({"size": [4, 6], "steps": 2}, {}), (24, 3))


def test_a_small_hiera_abswin_imports_with_no_opaque_row_and_computes_the_same():
    """hiera_small_abswin_256's design, small (two stages): the position
    embedding a 4 x 4 grid resized to the 8 x 8 tokens (bicubic, antialiased)
    plus a 4 x 4 window tiled 2 x 2, the unroll, a block of mask unit
    attention, then one of global attention with q pooled whose shortcut is
    max and mean concatenated; layer scales."""
    model = timm.create_model("hiera_small_abswin_256", pretrained=False, img_size=32,
                              embed_dim=8, num_heads=1, stages=(1, 1), q_pool=1,
                              mask_unit_size=(4, 4), mask_unit_attn=(True, False),
                              global_pos_size=(4, 4), num_classes=10)
    done, report = imported(model, (3, 32, 32), "timm:hiera_small_abswin_256")
    found = rows(report)
    assert "opaque" not in found.values()
    assert [found[k] for k in ("pos_embed", "pos_embed_win", "unroll", "blocks.0",
                               "blocks.1")] == \
        ["position_grid", "position_window", "hiera_unroll", "hiera_block", "hiera_block"]
    # the grid 8*4*4, the window 8*4*4; the blocks as in CASES
    assert [r.params for r in report.rows if r.path in (("pos_embed",), ("pos_embed_win",))] \
        == [128, 128]
    same_function(model, (3, 32, 32), done)
