"""timm's EfficientViT attentions import as one derived row each: MIT's LiteMLA
(multi-scale ReLU linear attention) as ``lite_mla``, MSRA's
LocalWindowAttention (cascaded group attention in windows) as
``cascaded_group_attention``: params == sum(p.numel()), MACs ==
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
    """A 1x1 conv to `width` channels, then the module on that map."""

    def __init__(self, module, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.attn = module

    def forward(self, x):
        return self.attn(self.stem(x))


# -- MIT: LiteMLA ---------------------------------------------------------------------


def lite_mla(**kwargs):
    from timm.models.efficientvit_mit import LiteMLA
    return LiteMLA(8, kwargs.pop("out", 8), dim=4, norm_layer=(None, nn.BatchNorm2d), **kwargs)


def test_lite_mla_is_one_row_and_computes_the_same():
    """C = 8, dim 4: heads 8 // 4 = 2, T = 8; one scale (5): S = 2 copies,
    4 heads attend. Params: qkv 8*24, depthwise 24*5*5, grouped 1x1 24*4,
    proj 16*8, its norm 2*8 = 1032. MACs on 3 x 4 (P = 12): P*(8*24 + 24*25 +
    24*4 + 2*S*T*(dim + 1) = 160 (ReLU(k)^T [v 1] and ReLU(q) times it) + 16*8)."""
    model = OnMap(lite_mla())
    done, report = imported(model, (3, 3, 4))
    assert rows(report) == {"stem": "conv", "attn": "lite_mla"}
    row = report.rows[-1]
    assert row.output_shape == (8, 3, 4)
    assert row.params == 192 + 600 + 96 + 128 + 16
    assert row.macs == 12 * (192 + 600 + 96 + 160 + 128)
    same_function(model, (3, 3, 4), done)


def test_lite_mla_with_biases_two_scales_and_another_width():
    """Scales (3, 5): S = 3 copies, proj from 24 channels to 6; a bias of 24
    on the qkv conv and on both convs of each scale, 6 on proj. Params: 8*24 +
    24 + (24*9 + 24 + 24*4 + 24) + (24*25 + 24 + 24*4 + 24) + 24*6 + 6 + 2*6 =
    1482. MACs on 3 x 4: 12*(8*24 + (24*9 + 24*4) + (24*25 + 24*4) + 2*3*8*5 +
    24*6)."""
    model = OnMap(lite_mla(out=6, use_bias=(True, True), scales=(3, 5)))
    done, report = imported(model, (3, 3, 4))
    row = report.rows[-1]
    assert row.output_shape == (6, 3, 4)
    assert row.params == 216 + 360 + 744 + 150 + 12
    assert row.macs == 12 * (192 + 312 + 696 + 240 + 144)
    same_function(model, (3, 3, 4), done)


def test_a_lite_mla_of_another_kernel_function_has_no_kind():
    module = lite_mla(kernel_func=nn.ReLU6)
    with pytest.raises(importer.Unsupported, match="LiteMLA with a ReLU6 kernel"):
        importer.import_module(OnMap(module).eval(), (3, 3, 4), strict=True)


@pytest.mark.parametrize("name", ["efficientvit_b0", "efficientvit_l1"])
def test_a_small_efficientvit_mit_imports_with_no_opaque_row_and_computes_the_same(name):
    """B (Hardswish, norms of eps 1e-5) and L (GELU-tanh, eps 1e-7) variants."""
    model = timm.create_model(name, pretrained=False, num_classes=10, widths=(8, 8, 8, 8, 16),
                              depths=(1, 1, 1, 1, 1), head_dim=8, head_widths=(32, 32))
    done, report = imported(model, (3, 32, 32))
    kinds = rows(report)
    assert "lite_mla" in kinds.values()
    assert not any("opaque" in kind for kind in kinds.values())
    same_function(model, (3, 32, 32), done)


# -- MSRA: LocalWindowAttention (cascaded group attention) ----------------------------


def local_window_attention(**kwargs):
    from timm.models.efficientvit_msra import LocalWindowAttention
    return LocalWindowAttention(8, key_dim=2, **kwargs)


def test_cascaded_group_attention_in_windows_is_one_row_and_computes_the_same():
    """C = 8, 2 heads (g = 4 channels each, val_dim 2*2 = 4), windows of 3 on a
    5 x 5 map: padded to 2 x 2 windows, P = 36 positions, N = 9. Params: per
    head 4*(2+2+4) + 2*8 (its q, k, v ConvNorm) + 2*2 (q's depthwise conv's
    norm), 2*(3*3 + 1*1) (the depthwise convs), 2*4*8 + 2*8 (proj), 2*9 (the
    biases) = 222. MACs: 36*(2*4*8 + 2*(9 + 1) + 2*9*(2 + 4) + 2*4*8)."""
    model = OnMap(local_window_attention(num_heads=2, attn_ratio=2, resolution=5,
                                         window_resolution=3, kernels=(3, 1)))
    done, report = imported(model, (3, 5, 5))
    assert rows(report) == {"stem": "conv", "attn": "cascaded_group_attention"}
    row = report.rows[-1]
    assert row.output_shape == (8, 5, 5)
    assert row.params == 2 * (32 + 16 + 4) + 20 + 64 + 16 + 18
    assert row.macs == 36 * (64 + 20 + 108 + 64)
    same_function(model, (3, 5, 5), done)


def test_cascaded_group_attention_on_one_window_with_one_head():
    """The map is one window (3 x 3, timm's window min(7, 3)): no padding. One
    head on all 8 channels, val_dim 3*2 = 6 (no cascade to match). Params:
    8*10 + 2*10 + 2*2, 2*5*5, 6*8 + 2*8, 9 = 227; MACs: 9*(80 + 50 + 9*8 + 48)."""
    model = OnMap(local_window_attention(num_heads=1, attn_ratio=3, resolution=3,
                                         window_resolution=7, kernels=(5,)))
    done, report = imported(model, (3, 3, 3))
    row = report.rows[-1]
    assert (row.type, row.params, row.macs) == ("cascaded_group_attention", 227, 9 * 250)
    same_function(model, (3, 3, 3), done)


def test_a_cascaded_group_attention_scaled_otherwise_has_no_kind():
    module = local_window_attention(num_heads=2, attn_ratio=2, resolution=3)
    module.attn.scale = 1.0
    with pytest.raises(importer.Unsupported, match="CascadedGroupAttention scaled by 1.0"):
        importer.import_module(OnMap(module).eval(), (3, 3, 3), strict=True)


def test_a_small_efficientvit_msra_imports_with_no_opaque_row_and_computes_the_same():
    """Windows of 2: stage 0's 3 x 3 map padded to 2 x 2 windows; kernels per head."""
    model = timm.create_model("efficientvit_m0", pretrained=False, num_classes=10, img_size=48,
                              embed_dim=(16, 24, 32), depth=(1, 1, 1), num_heads=(2, 3, 2),
                              window_size=(2, 2, 2), kernels=(5, 3, 3))
    done, report = imported(model, (3, 48, 48))
    kinds = rows(report)
    assert list(kinds.values()).count("cascaded_group_attention") == 3
    assert not any("opaque" in kind for kind in kinds.values())
    same_function(model, (3, 48, 48), done)
