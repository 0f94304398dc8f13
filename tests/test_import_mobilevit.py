"""timm's MobileViT blocks (v1's MobileVitBlock, v2's MobileVitV2Block) import
as one row each (mobilevit_block, mobilevit_v2_block): params ==
sum(p.numel()), MACs == FlopCounterMode / 2 on the meta device (``imported``
checks both), and the spec's model loads timm's state_dict strictly and
computes its outputs, the resize of a map that is no multiple of the patch
included."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.layers import lookup  # noqa: E402
from archcalc.layers.from_torch import NoMapping  # noqa: E402
from archcalc.torch.importer import mappers  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class AfterStem(nn.Module):
    """A 1x1 conv 3 -> 8, then the block."""

    def __init__(self, block):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.block = block

    def forward(self, x):
        return self.block(self.stem(x))


def test_mobilevit_v1_block_is_one_row_and_computes_the_same():
    from timm.models.mobilevit import MobileVitBlock
    # C = dim = out = 8, 2 heads, MLP 16, k = 3, one ViT block, ReLU (LayerFn's
    # default); the 6 x 5 map resized to 6 x 6: P = 4 sequences of N = 9 patches
    model = AfterStem(MobileVitBlock(8, transformer_dim=8, transformer_depth=1, patch_size=2,
                                     num_heads=2))
    done, report = imported(model, (3, 6, 5))
    assert rows(report) == {"stem": "conv", "block": "mobilevit_block"}
    row = report.rows[-1]
    assert row.output_shape == (8, 6, 5)
    # conv_kxk 9*8*8 + 2*8, conv_1x1 8*8, the ViT block (norms 2*2*8, qkv
    # 8*24 + 24, proj 8*8 + 8, fc1 8*16 + 16, fc2 16*8 + 8), norm 2*8,
    # conv_proj 8*8 + 2*8, conv_fusion 9*16*8 + 2*8
    assert row.params == 592 + 64 + (32 + 216 + 72 + 144 + 136) + 16 + 80 + 1168
    # on the 6 x 5 map: conv_kxk 30*9*8*8, conv_1x1 30*64, conv_proj 30*64,
    # conv_fusion 30*9*16*8; on the 36 resized positions: qkv 36*8*24, the
    # attention 4 sequences * 2*9*9*8, proj 36*8*8, the MLP 2*36*8*16
    assert row.macs == 17280 + 1920 + 1920 + 34560 + 6912 + 5184 + 2304 + 9216
    same_function(model, (3, 6, 5), done)


def test_mobilevit_v2_block_is_one_row_and_computes_the_same():
    from timm.models.mobilevit import MobileVitV2Block
    # C = out = 8, dim 4, MLP 8, depthwise k = 3, one block, ReLU; the 5 x 6
    # map resized to 6 x 6 first (the output keeps it): P = 4, N = 9
    model = AfterStem(MobileVitV2Block(8, transformer_dim=4, transformer_depth=1, patch_size=2))
    done, report = imported(model, (3, 5, 6))
    assert rows(report) == {"stem": "conv", "block": "mobilevit_v2_block"}
    row = report.rows[-1]
    assert row.output_shape == (8, 6, 6)
    # conv_kxk 9*8 + 2*8, conv_1x1 8*4, the block (norms 2*2*4, qkv_proj 4*9
    # + 9, out_proj 4*4 + 4, fc1 4*8 + 8, fc2 8*4 + 4), norm 2*4, conv_proj 4*8 + 2*8
    assert row.params == 88 + 32 + (16 + 45 + 20 + 40 + 36) + 8 + 48
    # on 36 positions: conv_kxk 9*8, conv_1x1 8*4, qkv_proj 4*9, out_proj
    # 4*4, the MLP 2*4*8, conv_proj 4*8 (the context is elementwise: no MAC)
    assert row.macs == 36 * (72 + 32 + 36 + 16 + 64 + 32)
    same_function(model, (3, 5, 6), done)


def _call(module, x):
    return mappers.Call(node=None, module=module, args=(), kwargs={}, x=x, x_torch=x,
                        y_torch=None)


def test_what_the_kinds_cannot_say_has_no_mapping():
    from timm.models.mobilevit import MobileVitBlock, MobileVitV2Block
    v1 = lookup("mobilevit_block")
    block = MobileVitBlock(8, transformer_dim=8, transformer_depth=1, num_heads=2,
                           drop_path_rate=0.1)
    with pytest.raises(NoMapping, match="DropPath"):
        v1.from_torch(_call(block, (8, 4, 4)), block)
    block = MobileVitBlock(8, transformer_dim=8, transformer_depth=1, num_heads=2,
                           kernel_size=4)
    with pytest.raises(NoMapping, match="padding 2"):
        v1.from_torch(_call(block, (8, 4, 4)), block)
    v2 = lookup("mobilevit_v2_block")
    block = MobileVitV2Block(8, transformer_dim=4, transformer_depth=1, attn_drop=0.1)
    with pytest.raises(NoMapping, match="Dropout"):
        v2.from_torch(_call(block, (8, 4, 4)), block)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_a_tiny_mobilevit_imports_with_no_opaque_row(name):
    """The whole model at 64 x 64 (its last MobileViT block on 4 x 4): every
    block a row of its kind, no opaque row, the same logits."""
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    done, report = imported(model, (3, 64, 64))
    kinds = list(rows(report).values())
    assert "opaque" not in kinds
    block = "mobilevit_block" if name == "mobilevit_xxs" else "mobilevit_v2_block"
    assert kinds.count(block) == 3
    same_function(model, (3, 64, 64), done)
