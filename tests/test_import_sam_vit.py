"""timm's SAM ViT imports with no opaque row (its Block as one sam_block row,
the position embedding added to the channels-last map as position_embedding):
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


# -- SAM's ViT: Block (windows, decomposed relative positions) ---------------------


class OnChannelsLast(nn.Module):
    """A 1x1 conv to `width`, its map read channels-last (B, H, W, C), the block,
    its output read back as a map."""

    def __init__(self, block, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.block = block

    def forward(self, x):
        return self.block(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def the_row(report, kind):
    return next(r for r in report.rows if r.type == kind)


def sam_block(window, input_size=(4, 5), **kw):
    from timm.models.vision_transformer_sam import Block
    return Block(8, 2, use_rel_pos=True, window_size=window, input_size=input_size, **kw)


def test_a_sam_block_in_padded_windows_is_one_row_and_computes_the_same():
    """A 4 x 5 map of width 8 in 3 x 3 windows: padded to 6 x 6 (N' = 36, T =
    9). Params: 2*8 + (8*24 + 24) + (8*8 + 8) + 2*(2*3 - 1)*4 (the tables, head
    width 4) + 2*8 + (8*32 + 32) + (32*8 + 8) = 912. MACs: 36*8*24 (qkv) +
    36*8*(3 + 3) (the two bias einsums) + 2*36*9*8 (scores, values) + 36*8*8
    (proj) + 2*20*8*32 (the MLP on the 20 positions) = 26368."""
    model = OnChannelsLast(sam_block(3))
    done, report = imported(model, (3, 4, 5))
    assert rows(report)["block"] == "sam_block"
    row = the_row(report, "sam_block")
    assert row.params == 912
    assert row.macs == 6912 + 1728 + 5184 + 2304 + 10240
    same_function(model, (3, 4, 5), done)


def test_a_global_sam_block_attends_over_the_whole_map():
    """window_size 0 on the 4 x 5 map: tables of 2*4 - 1 and 2*5 - 1 rows (936
    params); MACs 20*8*24 + 20*8*(4 + 5) + 2*20*20*8 + 20*8*8 + 2*20*8*32."""
    model = OnChannelsLast(sam_block(0))
    done, report = imported(model, (3, 4, 5))
    row = the_row(report, "sam_block")
    assert row.params == 912 - 40 + 64
    assert row.macs == 3840 + 1440 + 6400 + 1280 + 10240
    same_function(model, (3, 4, 5), done)


def test_a_sam_block_whose_tables_timm_interpolates_has_no_kind():
    """Tables made for a 6 x 6 map, called on 4 x 5: timm resizes them on each call."""
    with pytest.raises(importer.Unsupported, match="relative position tables"):
        importer.import_module(OnChannelsLast(sam_block(0, (6, 6))).eval(), (3, 4, 5),
                               strict=True)


def test_a_small_samvit_imports_with_no_opaque_row_and_computes_the_same():
    """A windowed block and a global one, the absolute position embedding (1 x
    H x W x C, added to the channels-last map) and the neck."""
    model = timm.create_model("samvit_base_patch16", pretrained=False, img_size=64,
                              embed_dim=16, depth=2, num_heads=2, window_size=3,
                              global_attn_indexes=[1], neck_chans=8, num_classes=5)
    done, report = imported(model, (3, 64, 64))
    kinds = no_opaque(report)
    assert list(kinds).count("sam_block") == 2 and "position_embedding" in kinds
    same_function(model, (3, 64, 64), done)
