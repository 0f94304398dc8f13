"""timm's EfficientFormer-V2: its Attention2d and Attention2dDownsample import
as one row each (params == sum(p.numel()), MACs == FlopCounterMode / 2 on the
meta device: ``imported`` checks both), and the spec's model loads timm's
state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OnMap(nn.Module):
    """A 1x1 conv to `width` channels, then the module on the map."""

    def __init__(self, module, width):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.attn = module

    def forward(self, x):
        return self.attn(self.stem(x))


def conv_norm(cin, cout, k=1, groups=1):
    """A ConvNorm's params: the conv (with a bias), the batch norm."""
    return cin // groups * cout * k * k + cout + 2 * cout


@pytest.mark.parametrize("size, stride", [((3, 4), None), ((4, 6), 2)])
def test_attention2d_is_one_row_and_computes_the_same(size, stride):
    from timm.models.efficientformer_v2 import Attention2d
    c, h, kd, vd = 8, 2, 2, 4
    model = OnMap(Attention2d(c, key_dim=kd, num_heads=h, attn_ratio=2, resolution=size,
                              stride=stride), c)
    done, report = imported(model, (3, *size))
    assert rows(report) == {"stem": "conv", "attn": "efficientformer_v2_attention"}
    row = report.rows[-1]
    assert row.output_shape == (c, *size)
    n = 12 if stride is None else 2 * 3        # the attended map: 3 x 4, or 2 x 3 at stride 2
    dh = h * vd
    # q, k, v, v_local (depthwise 3x3), proj; the talking heads h*h + h each;
    # the biases h*N; at stride 2 the depthwise 3x3 stride conv
    assert row.params == 2 * conv_norm(c, h * kd) + conv_norm(c, dh) + \
        conv_norm(dh, dh, 3, dh) + conv_norm(dh, c) + 2 * (h * h + h) + h * n + \
        (conv_norm(c, c, 3, c) if stride else 0)
    # q, k, v N*C*(2*h*kd + dh), v_local N*dh*9, the talking heads 2*h^2*N^2,
    # the products h*N^2*(kd + vd), the stride conv N*C*9; proj after the
    # upsample, on all H*W positions: H*W*dh*C
    assert row.macs == n * c * (2 * h * kd + dh) + size[0] * size[1] * dh * c + n * dh * 9 + \
        2 * h * h * n * n + h * n * n * (kd + vd) + (n * c * 9 if stride else 0)
    same_function(model, (3, *size), done)


@pytest.mark.parametrize("size, out", [((3, 5), 6), ((4, 4), 8)])
def test_attention2d_downsample_is_one_row_and_computes_the_same(size, out):
    from timm.models.efficientformer_v2 import Attention2dDownsample
    c, h, kd, vd = 8, 2, 2, 4
    model = OnMap(Attention2dDownsample(c, key_dim=kd, num_heads=h, attn_ratio=2,
                                        resolution=size, out_dim=out), c)
    done, report = imported(model, (3, *size))
    assert rows(report) == {"stem": "conv", "attn": "efficientformer_v2_attention_downsample"}
    row = report.rows[-1]
    half = tuple((s + 1) // 2 for s in size)
    assert row.output_shape == (out, *half)
    p, q, dh = size[0] * size[1], half[0] * half[1], h * vd
    # q.local (depthwise 3x3, a bias), q.proj, k, v, v_local, proj; the biases h*P
    assert row.params == 9 * c + c + 2 * conv_norm(c, h * kd) + conv_norm(c, dh) + \
        conv_norm(dh, dh, 3, dh) + conv_norm(dh, out) + h * p
    # q.local Q*C*9, q.proj Q*C*h*kd, k P*C*h*kd, v P*C*dh, v_local Q*dh*9, the
    # products h*Q*P*(kd + vd), proj Q*dh*out
    assert row.macs == q * c * 9 + q * c * h * kd + p * c * h * kd + p * c * dh + \
        q * dh * 9 + h * q * p * (kd + vd) + q * dh * out
    same_function(model, (3, *size), done)


def test_an_attention2d_scaled_otherwise_has_no_kind():
    from timm.models.efficientformer_v2 import Attention2d
    module = Attention2d(8, key_dim=2, num_heads=2, resolution=(3, 4))
    module.scale = 1.0
    with pytest.raises(importer.Unsupported, match="Attention2d"):
        importer.import_module(OnMap(module, 8).eval(), (3, 3, 4), strict=True)


def test_a_small_efficientformer_v2_imports_with_no_opaque_row_and_computes_the_same():
    # at 64 x 64: stage 3's attention at stride 2 on 4 x 4, stage 4's
    # downsampling attention from 4 x 4 to 2 x 2, its block's attention on 2 x 2
    model = timm.create_model("efficientformerv2_s0", pretrained=False, img_size=64,
                              depths=(1, 1, 2, 2), embed_dims=(8, 16, 24, 32), num_vit=1,
                              mlp_ratios=2)
    done, report = imported(model, (3, 64, 64))
    kinds = list(rows(report).values())
    assert kinds.count("efficientformer_v2_attention") == 2
    assert kinds.count("efficientformer_v2_attention_downsample") == 1
    assert "opaque" not in kinds
    same_function(model, (3, 64, 64), done)
