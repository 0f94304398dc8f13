"""Differential attention (timm's DiffAttention: vit_dwee, vit_dlittle)
imports as one diff_attention row: params == sum(numel), MACs ==
FlopCounterMode / 2 on meta (``imported`` checks both), and the spec's model
loads timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from tests.test_import_attention_families import OnTokens  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("kwargs", [dict(depth=0), dict(depth=3, qkv_bias=True),
                                    dict(depth=1, dual_lambda=True, proj_bias=False),
                                    dict(depth=2, scale_norm=True)])
def test_diff_attention_is_one_row_and_computes_the_same(kwargs):
    from timm.layers.diff_attention import DiffAttention
    module = DiffAttention(16, num_heads=2, **kwargs)
    with torch.no_grad():     # lambdas away from their init, so the second map counts
        for name in ("lambda_a", "lambda_b"):
            if getattr(module, name) is not None:
                getattr(module, name).fill_(0.3 if name == "lambda_a" else -0.2)
    model = OnTokens(module)
    done, report = imported(model, (3, 2, 3))
    assert rows(report)["attn"] == "diff_attention"
    n, d, hd = 6, 16, 4
    lambdas = 2 if kwargs.get("dual_lambda") else 4 * hd
    assert report.rows[-1].params == (3 * d * d + (3 * d if kwargs.get("qkv_bias") else 0)
                                      + d * d + (0 if kwargs.get("proj_bias") is False else d)
                                      + lambdas + 2 * hd
                                      + (d if kwargs.get("scale_norm") else 0))
    # qkv, two scaled_dot_product_attention calls (scores N^2*D/2, values N^2*D), proj
    assert report.rows[-1].macs == 3 * n * d * d + 3 * n * n * d + n * d * d
    same_function(model, (3, 2, 3), done)


def test_diff_attention_unfused_has_no_kind():
    """timm's unfused form has one softmax over both halves: other MACs."""
    from archcalc.torch import importer
    from timm.layers.diff_attention import DiffAttention
    module = DiffAttention(16, num_heads=2)
    module.fused_attn = False
    with pytest.raises(importer.Unsupported, match="unfused"):
        importer.import_module(OnTokens(module).eval(), (3, 2, 3), strict=True)


def test_a_small_diff_vit_imports_with_no_opaque_row_and_computes_the_same():
    from timm.layers.diff_attention import DiffAttention
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              num_classes=5, attn_layer=DiffAttention, reg_tokens=1,
                              global_pool="avg").eval()
    done, report = imported(model, (3, 32, 32))
    assert "opaque" not in rows(report).values()
    assert list(rows(report).values()).count("diff_attention") == 2
    same_function(model, (3, 32, 32), done)
