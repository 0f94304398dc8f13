"""timm's DaViT: its channel attention (ChannelAttention, Florence-2's
ChannelAttentionV2) a channel_attention row, its SpatialBlock (whose windows
timm folds into the batch) one davit_spatial_block row; params ==
sum(p.numel()), MACs == FlopCounterMode / 2 on the meta device (``imported``
checks both), and the spec's model loads timm's state_dict strictly and
computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_attention_families import OnTokens  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("v2, bias, dynamic", [(False, True, True), (False, False, True),
                                               (True, True, True), (True, False, False)])
def test_channel_attention_is_one_row_and_computes_the_same(v2, bias, dynamic):
    from timm.models.davit import ChannelAttention, ChannelAttentionV2
    module = (ChannelAttentionV2(16, num_heads=4, qkv_bias=bias, dynamic_scale=dynamic) if v2
              else ChannelAttention(16, num_heads=4, qkv_bias=bias))
    model = OnTokens(module)
    done, report = imported(model, (3, 2, 3))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "attn": "channel_attention"}
    row = report.rows[-1]
    assert "order = \"qkv\"" in done.text if v2 else "order" not in done.text
    assert ("scaled_by = \"tokens\"" in done.text) == (v2 and dynamic)
    # qkv 3*16^2 (+ 3*16), proj 16^2 + 16; MACs: qkv and proj 4*N*D^2 = 4*6*256,
    # per head a 4 x 4 score over the 6 tokens and the 4 x 4 mix: 2*N*D*(D/h) = 2*6*16*4
    assert row.params == 4 * 256 + 16 + (48 if bias else 0)
    assert row.macs == 4 * 6 * 256 + 2 * 6 * 16 * 4
    same_function(model, (3, 2, 3), done)


@pytest.mark.parametrize("window, cpe_act", [(3, False), (2, True)])
def test_spatial_block_is_one_row_and_computes_the_same(window, cpe_act):
    """A 5 x 6 map of C = 8: padded to 6 x 6 by windows of 3 (4 windows of 9
    positions), to 6 x 6 by windows of 2 (9 windows of 4): the padded
    positions attend and are attended to, as timm computes them."""
    from timm.models.davit import SpatialBlock
    model = nn.Sequential(nn.Conv2d(3, 8, 1), SpatialBlock(8, num_heads=2, window_size=window,
                                                           cpe_act=cpe_act))
    done, report = imported(model, (3, 5, 6))
    assert rows(report) == {"0": "conv", "1": "davit_spatial_block"}
    row = report.rows[-1]
    # cpe1, cpe2: 2*(8*9 + 8); norm1, norm2: 2*16; attn: qkv 8*24 + 24, proj 8*8 + 8;
    # mlp: 8*32 + 32 + 32*8 + 8
    assert row.params == 160 + 32 + 288 + 552
    # convs 2*(5*6)*8*9; attention on the padded 36 positions: 4*36*8^2 (qkv, proj)
    # + 2*36*T*8 (scores, weighted values; T = window^2); MLP 2*(5*6)*8*32
    assert row.macs == 4320 + 4 * 36 * 64 + 2 * 36 * window * window * 8 + 15360
    same_function(model, (3, 5, 6), done)


def test_a_spatial_block_with_stochastic_depth_is_refused():
    from timm.models.davit import SpatialBlock
    model = nn.Sequential(nn.Conv2d(3, 8, 1), SpatialBlock(8, num_heads=2, window_size=3,
                                                           drop_path=0.1)).eval()
    with pytest.raises(importer.Unsupported, match="SpatialBlock .stochastic depth"):
        importer.import_module(model, (3, 6, 6), strict=True)


@pytest.mark.parametrize("name, kwargs", [
    ("davit_tiny", {}),
    ("davit_base_fl", {"window_size": 3})])     # V2 channel attention, named blocks, 3x3 down
def test_a_small_davit_imports_with_no_opaque_row_and_computes_the_same(name, kwargs):
    """A 40 x 40 input: maps of 10, 5, 3 and 2 (windows of 7 or 3: padded where
    the map is no multiple, a window larger than the map)."""
    model = timm.create_model(name, pretrained=False, depths=(1, 1, 1, 1),
                              embed_dims=(8, 16, 16, 32), num_heads=(1, 2, 2, 4),
                              num_classes=10, **kwargs)
    done, report = imported(model, (3, 40, 40))
    kinds = list(rows(report).values())
    assert "opaque" not in done.text
    assert kinds.count("davit_spatial_block") == 4 and kinds.count("channel_attention") == 4
    same_function(model, (3, 40, 40), done)
