"""timm's HieraDet (SAM 2's Hiera) imports with no opaque row: each
MultiScaleBlock one hieradet_block row (window or global attention, q and the
shortcut max-pooled at a stage's start), the position embedding
position_grid + position_window. Params == sum(p.numel()), MACs ==
FlopCounterMode / 2 on the meta device (``imported`` checks both), and the
spec's model loads timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OnMap(nn.Module):
    """A 1x1 conv to `width`, channels last (B x H x W x C, as HieraDet's patch
    embedding gives), the module, its output read as tokens."""

    def __init__(self, module, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.block = module

    def forward(self, x):
        return self.block(self.stem(x).permute(0, 2, 3, 1)).flatten(1, 2)


def block(dim, dim_out, heads, **kwargs):
    from timm.models.hieradet_sam2 import MultiScaleBlock
    return MultiScaleBlock(dim, dim_out, heads, **kwargs)


# C = 8 in. Params: norm1 2C, proj C*C' + C' (where C' > C), qkv 3*C*C' + 3C',
# proj C'^2 + C', norm2 2C', MLP 2*C'*4C' + 4C' + C' (+ 2C' layer scales).
# MACs: proj N*C*C', qkv 3*P*C*C' (P the padded map's positions), scores and
# values 2*Q*T*C' (Q queries, T keys each), proj Q*C'^2, MLP 2*M*C'*4C'.
CASES = {
    # a 6 x 6 map padded to 8 x 8: 4 windows of 4 x 4 (P = 64, T = 16), q pooled
    # 2 x 2 in each (Q = 16), the output 3 x 3 (M = 9)
    "window_pooled": ((6, 6), dict(dim_out=16, num_heads=2, q_stride=(2, 2), window_size=4),
                      16 + 144 + 432 + 272 + 32 + 1088 + 1040,
                      36 * 8 * 16 + 3 * 64 * 128 + 2 * 16 * 16 * 16 + 16 * 256
                      + 2 * 9 * 16 * 64, (9, 16)),
    # a 4 x 4 map, global attention at the same width, layer scales: P = Q = T = M = 16
    "global": ((4, 4), dict(dim_out=8, num_heads=2, init_values=1e-5),
               16 + 216 + 72 + 16 + 288 + 264 + 16,
               3 * 16 * 64 + 2 * 16 * 16 * 8 + 16 * 64 + 2 * 16 * 8 * 32, (16, 8)),
    # a 2 x 6 map in 2 x 2 windows (3 of them, no padding): T = 4
    "window_wide": ((2, 6), dict(dim_out=8, num_heads=1, window_size=2),
                    16 + 216 + 72 + 16 + 288 + 264,
                    3 * 12 * 64 + 2 * 12 * 4 * 8 + 12 * 64 + 2 * 12 * 8 * 32, (12, 8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_multiscale_block_is_one_row_and_computes_the_same(case):
    hw, kwargs, params, macs, out = CASES[case]
    dim_out, heads = kwargs.pop("dim_out"), kwargs.pop("num_heads")
    model = OnMap(block(8, dim_out, heads, **kwargs))
    done, report = imported(model, (3, *hw))
    assert rows(report)["block"] == "hieradet_block"
    assert "opaque" not in rows(report).values()
    row = next(r for r in report.rows if r.path == ("block",))
    assert row.output_shape == out
    assert (row.params, row.macs) == (params, macs)
    same_function(model, (3, *hw), done)


def test_a_multiscale_block_pooled_otherwise_has_no_kind():
    b = block(8, 16, 2, q_stride=(2, 2), window_size=2)
    b.pool = nn.AvgPool2d(2, 2)
    with pytest.raises(importer.Unsupported, match="MultiScaleBlock"):
        importer.import_module(OnMap(b).eval(), (3, 4, 4), strict=True)


class Resized(nn.Module):
    """A grid and a window of position embeddings as HieraDet adds them, the
    grid resized by `mode`."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.stem = nn.Conv2d(3, 8, 1)
        self.pos_embed = nn.Parameter(torch.randn(1, 8, 3, 3))
        self.pos_embed_window = nn.Parameter(torch.randn(1, 8, 2, 2))

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        pos = nn.functional.interpolate(self.pos_embed, size=(4, 6), mode=self.mode)
        pos = pos + self.pos_embed_window.tile((2, 3))
        return (x + pos.permute(0, 2, 3, 1)).flatten(1, 2)


def test_the_window_position_embedding_is_two_rows_and_computes_the_same():
    model = Resized("bicubic")
    done, report = imported(model, (3, 4, 6))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "pos_embed": "position_grid",
                            "pos_embed_window": "position_window"}
    same_function(model, (3, 4, 6), done)


def test_a_grid_resized_otherwise_has_no_kind():
    with pytest.raises(importer.Unsupported, match="pos_embed, pos_embed_window"):
        importer.import_module(Resized("bilinear").eval(), (3, 4, 6), strict=True)


def test_a_small_sam2_hiera_imports_with_no_opaque_row_and_computes_the_same():
    """sam2_hiera_tiny's design, small, on a 64 x 96 image (a 16 x 24 map):
    the stage-2 windows of 6 pad the 8 x 12 map, a global block, layer scales
    (hieradet_small's init_values)."""
    model = timm.create_model("sam2_hiera_tiny", pretrained=False, embed_dim=8, num_heads=1,
                              stages=(1, 2, 2, 1), global_att_blocks=(4,),
                              window_spec=(4, 6, 4, 2), global_pos_size=(7, 7),
                              init_values=1e-5, num_classes=10)
    done, report = imported(model, (3, 64, 96), "timm:sam2_hiera_tiny")
    found = rows(report)
    assert "opaque" not in found.values()
    assert [found[f"blocks.{i}"] for i in range(6)] == ["hieradet_block"] * 6
    assert (found["pos_embed"], found["pos_embed_window"]) == ("position_grid",
                                                               "position_window")
    same_function(model, (3, 64, 96), done)
