"""EfficientFormer's attention (timm's efficientformer Attention) imports as
one efficientformer_attention row: params == sum(numel), MACs ==
FlopCounterMode / 2 on meta (``imported`` checks both), and the spec's model
loads timm's state_dict strictly (the persistent bias index included) and
computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from archcalc.torch import importer  # noqa: E402
from tests.test_import_attention_families import OnTokens  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("heads, key_dim, ratio, grid", [(2, 4, 2, (2, 3)), (1, 8, 1, (3, 3)),
                                                         (3, 2, 4, (1, 4))])
def test_efficientformer_attention_is_one_row_and_computes_the_same(heads, key_dim, ratio, grid):
    from timm.models.efficientformer import Attention
    model = OnTokens(Attention(16, key_dim=key_dim, num_heads=heads, attn_ratio=ratio,
                               resolution=grid))
    done, report = imported(model, (3, *grid))
    assert rows(report)["attn"] == "efficientformer_attention"
    n, d, h, kd, vd = grid[0] * grid[1], 16, heads, key_dim, key_dim * ratio
    row = report.rows[-1]
    # qkv with its bias, the projection with its bias, heads x N attention biases
    assert row.params == d * h * (2 * kd + vd) + h * (2 * kd + vd) + h * vd * d + d + h * n
    # qkv on N tokens, q k^T and attn v per head, the projection
    assert row.macs == n * d * h * (2 * kd + vd) + h * n * n * (kd + vd) + n * h * vd * d
    same_function(model, (3, *grid), done)


def test_efficientformer_attention_with_another_bias_index_has_no_kind():
    from timm.models.efficientformer import Attention
    module = Attention(16, key_dim=4, num_heads=2, attn_ratio=2, resolution=(2, 2))
    module.attention_bias_idxs.zero_()      # as a loaded state_dict could make it
    with pytest.raises(importer.Unsupported, match="bias index"):
        importer.import_module(OnTokens(module).eval(), (3, 2, 2), strict=True)


def test_a_small_efficientformer_imports_with_no_opaque_row_and_computes_the_same():
    """Its attention's biases are for a 7 x 7 grid: a 224 x 224 input, thin."""
    model = timm.create_model("efficientformer_l1", pretrained=False, depths=(1, 1, 1, 2),
                              embed_dims=(8, 8, 8, 16), num_vit=1, num_classes=5).eval()
    done, report = imported(model, (3, 224, 224))
    assert "opaque" not in rows(report).values()
    assert "efficientformer_attention" in rows(report).values()
    same_function(model, (3, 224, 224), done)
