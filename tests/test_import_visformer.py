"""Visformer's attention on a map (timm's visformer Attention) imports as one
visformer_attention row: params == sum(numel), MACs == FlopCounterMode / 2 on
meta (``imported`` checks both), and the spec's model loads timm's
state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("heads, ratio", [(2, 1.0), (4, 0.5), (1, 1.5)])
def test_visformer_attention_is_one_row_and_computes_the_same(heads, ratio):
    from timm.models.visformer import Attention
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Attention(8, num_heads=heads,
                                                        head_dim_ratio=ratio))
    done, report = imported(model, (3, 3, 2))
    assert rows(report)["1"] == "visformer_attention"
    n, c, a = 6, 8, heads * round(8 // heads * ratio)
    # qkv and proj: 1x1 convs without biases, C -> 3A and A -> C
    assert report.rows[-1].params == 3 * c * a + a * c
    # qkv on N positions, the N x N scores and weighted values, the projection
    assert report.rows[-1].macs == n * c * 3 * a + 2 * n * n * a + n * a * c
    same_function(model, (3, 3, 2), done)


def test_a_small_visformer_imports_with_no_opaque_row_and_computes_the_same():
    model = timm.create_model("visformer_tiny", pretrained=False, num_classes=5,
                              init_channels=8, embed_dim=48, depth=(1, 1, 1),
                              num_heads=3, img_size=64).eval()
    done, report = imported(model, (3, 64, 64))
    assert "opaque" not in rows(report).values()
    assert list(rows(report).values()).count("visformer_attention") == 2
    same_function(model, (3, 64, 64), done)
