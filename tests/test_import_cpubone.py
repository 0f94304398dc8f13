"""timm's CPUBone (timm.models.cpubone): its ConvAttention (an FX leaf, so it
was one opaque row) is one cpubone_attention row, with CPUBone's 2 x 2 small
kernel (the map padded to a multiple of the stride, a (1, 0, 1, 0) zero pad
at stride 1) and its nearest way back as well as LowFormer's transposed
convs. Every figure is PyTorch's: params == sum(p.numel()), MACs ==
FlopCounterMode / 2 on the meta device, and the spec's built model loads
timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPUBONE = {"small_kernels": True, "fuse_out_proj": True, "upsample_mode": "nearest"}


def ceil(a, b):
    return -(-a // b)


@pytest.mark.parametrize("kwargs, shape", [
    ({**CPUBONE, "att_stride": 2}, (7, 9)),       # stage 3: padded to 8 x 10, 4 x 5 attended
    ({**CPUBONE, "att_stride": 2}, (6, 4)),       # even sides: no pad
    ({**CPUBONE, "att_stride": 1}, (5, 3)),       # stage 4: the (1, 0, 1, 0) pad, no upsample
    ({**CPUBONE, "att_stride": 3}, (7, 5)),       # padded to 9 x 6, then (1, 0, 1, 0)
    ({"att_stride": 2, "att_kernel": 3, "upsample_mode": "nearest"}, (5, 6)),
    ({}, (8, 12)),                                # LowFormer's way back: kernel 7, stride 4
    ({"att_stride": 2, "att_kernel": 5, "fuse_out_proj": True}, (7, 6)),
    ({"att_stride": 1, "att_kernel": 3}, (4, 5)),
])
def test_conv_attention_is_one_row_and_computes_the_same(kwargs, shape):
    from timm.models.cpubone import ConvAttention
    module = ConvAttention(64, head_dim_mul=1.0, **kwargs)
    assert (module.num_heads, module.head_dim) == (2, 32)      # 64 // 30 heads of 64 // 2
    model = nn.Sequential(nn.Conv2d(3, 64, 1), module)
    done, report = imported(model, (3, *shape))
    assert rows(report) == {"0": "conv", "1": "cpubone_attention"}
    row = report.rows[-1]
    assert row.output_shape == (64, *shape)
    # C = 64, A = heads*head_dim = 64, k the conv's kernel (2 where small),
    # t the transposed kernel; the attention sees p = ceil(H/s)*ceil(W/s)
    s = kwargs.get("att_stride", 4)
    k = 2 if kwargs.get("small_kernels") else kwargs.get("att_kernel", 7)
    c = a = 64
    t = 3 if s == 1 else 2 * s
    p = ceil(shape[0], s) * ceil(shape[1], s)
    nearest = kwargs.get("upsample_mode") == "nearest"
    fused = kwargs.get("fuse_out_proj", False)
    # params: depthwise c*k*k, its norm 2c, pwise 3*A*c, the way back:
    # nearest A*c + c; transposed A*c*t*t + c (fused), else A*c + c + c*t*t + c
    back = a * c + c if nearest else a * c * t * t + c if fused else a * c + c + c * t * t + c
    assert row.params == c * k * k + 2 * c + 3 * a * c + back
    # MACs: depthwise p*c*k*k, pwise p*c*3A, scores and values 2*p*p*A, the
    # way back: nearest p*A*c; fused p*A*c*t*t; else p*A*c + p*c*t*t
    back = p * a * c if nearest else p * a * c * t * t if fused else p * a * c + p * c * t * t
    assert row.macs == p * c * k * k + p * c * 3 * a + 2 * p * p * a + back
    same_function(model, (3, *shape), done)


def test_a_conv_attention_scaled_otherwise_has_no_kind():
    from timm.models.cpubone import ConvAttention
    module = ConvAttention(64, **CPUBONE, att_stride=2)
    module.scale = 1.0      # the unfused path would use it; the kind's SDPA would not
    model = nn.Sequential(nn.Conv2d(3, 64, 1), module).eval()
    with pytest.raises(importer.Unsupported, match="ConvAttention"):
        importer.import_module(model, (3, 4, 4), strict=True)


def test_a_small_2x2_conv_without_small_kernels_has_no_kind():
    """Without small_kernels the map is not padded to a multiple of the
    stride: an odd side would come back one short (not what the kind computes)."""
    from timm.models.cpubone import ConvAttention
    module = ConvAttention(64, **CPUBONE, att_stride=2)
    module.small_kernels = False
    model = nn.Sequential(nn.Conv2d(3, 64, 1), module).eval()
    with pytest.raises(importer.Unsupported, match="ConvAttention"):
        importer.import_module(model, (3, 4, 4), strict=True)


def test_a_small_cpubone_imports_with_no_opaque_row_and_computes_the_same():
    """cpubone_nano's layout (fused MBConvs with 2 x 2 kernels, the attention
    blocks of stages 3 and 4) at small widths, on a map whose stage 3 is odd
    (5 x 5: the attention pads it to 6 x 6)."""
    model = timm.create_model("cpubone_nano", pretrained=False, width_list=[8, 8, 16, 32, 64],
                              head_widths=(32, 48), num_classes=10)
    done, report = imported(model, (3, 80, 80), "timm:cpubone_nano")
    kinds = list(rows(report).values())
    assert kinds.count("cpubone_attention") == 3 and "opaque" not in kinds
    same_function(model, (3, 80, 80), done)
