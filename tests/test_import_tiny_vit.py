"""timm's TinyViT (timm.models.tiny_vit): its TinyVitBlock, whose forward
branches on the map's size (fx cannot trace it, so it was one opaque row) and
folds the windows into the batch, is one tiny_vit_block row on the tokens of
its channels-last map. Every figure is PyTorch's: params == sum(p.numel()),
MACs == FlopCounterMode / 2 on the meta device, and the spec's built model
loads timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ChannelsLast(nn.Module):
    """A 1x1 conv to C, then the block on B x H x W x C (as TinyVitStage calls it)."""

    def __init__(self, block, channels):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1)
        self.block = block

    def forward(self, x):
        return self.block(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def ceil(a, b):
    return -(-a // b)


@pytest.mark.parametrize("kwargs, shape", [
    ({"num_heads": 2, "window_size": 4}, (4, 4)),        # one window, no pad
    ({"num_heads": 4, "window_size": 3, "mlp_ratio": 2.0, "local_conv_size": 5},
     (5, 7)),                                             # padded to 6 x 9
    ({"num_heads": 1, "window_size": 7, "drop_path": 0.1}, (3, 2)),   # padded to 7 x 7
])
def test_tiny_vit_block_is_one_row_and_computes_the_same(kwargs, shape):
    from timm.models.tiny_vit import TinyVitBlock
    c = 16
    block = TinyVitBlock(c, **kwargs)
    model = ChannelsLast(block, c)
    done, report = imported(model, (3, *shape))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "block": "tiny_vit_block",
                            "to_map": "to_map"}
    row = report.rows[3]
    n, m, k = shape[0] * shape[1], kwargs["window_size"], kwargs.get("local_conv_size", 3)
    hid, heads = int(c * kwargs.get("mlp_ratio", 4.0)), kwargs["num_heads"]
    padded = ceil(shape[0], m) * m * ceil(shape[1], m) * m
    assert row.output_shape == (n, c)
    # attention: norm 2C, qkv 3C^2 + 3C, proj C^2 + C, biases heads*M^2; the
    # depthwise conv C*k^2 and its norm 2C; the MLP: norm 2C, 2*C*hid + hid + C
    assert row.params == 2 * c + 3 * c * c + 3 * c + c * c + c + heads * m * m \
        + c * k * k + 2 * c + 2 * c + 2 * c * hid + hid + c
    # on the padded map's N': qkv 3*N'*C^2, scores and values 2*N'*M^2*C,
    # proj N'*C^2; on the map's N: the conv N*C*k^2, the MLP 2*N*C*hid
    assert row.macs == 4 * padded * c * c + 2 * padded * m * m * c + n * c * k * k \
        + 2 * n * c * hid
    same_function(model, (3, *shape), done)


def test_tiny_vit_block_carries_its_stochastic_depth():
    from timm.models.tiny_vit import TinyVitBlock
    model = ChannelsLast(TinyVitBlock(8, num_heads=2, window_size=2, drop_path=0.25), 8)
    done, _ = imported(model, (3, 4, 4))
    assert "drop_prob = 0.25" in done.text


def test_a_tiny_vit_block_with_another_activation_has_no_kind():
    from timm.models.tiny_vit import TinyVitBlock
    block = TinyVitBlock(8, num_heads=2, window_size=2, act_layer=nn.ReLU)
    with pytest.raises(importer.Unsupported, match="TinyVitBlock"):
        importer.import_module(ChannelsLast(block, 8).eval(), (3, 4, 4), strict=True)


def test_a_small_tiny_vit_imports_with_no_opaque_row_and_computes_the_same():
    """tiny_vit_5m_224's layout at small widths on a 96 x 96 input: stage 1's
    12 x 12 map padded to 2 x 2 windows of 7, stage 2's 6 x 6 to one of 14,
    stage 3's 3 x 3 to one of 7; stochastic depth carried, off at inference."""
    model = timm.create_model("tiny_vit_5m_224", pretrained=False, embed_dims=[16, 32, 32, 64],
                              depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], num_classes=10,
                              drop_path_rate=0.1)
    done, report = imported(model, (3, 96, 96), "timm:tiny_vit_5m_224")
    kinds = list(rows(report).values())
    assert kinds.count("tiny_vit_block") == 4 and "opaque" not in kinds
    same_function(model, (3, 96, 96), done)
