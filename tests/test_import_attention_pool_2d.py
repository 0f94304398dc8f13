"""CLIP's attention pooling of a map (timm's AttentionPool2d, the head of
resnet*_clip) imports as one attention_pool_2d row: params == sum(numel),
MACs == FlopCounterMode / 2 on meta (``imported`` checks both), and the
spec's model loads timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pooled(**kwargs):
    from timm.layers.attention_pool2d import AttentionPool2d
    return nn.Sequential(nn.Conv2d(3, 8, 1), AttentionPool2d(8, feat_size=(2, 3), **kwargs))


@pytest.mark.parametrize("kwargs", [
    dict(embed_dim=16, num_heads=4, out_features=5, qkv_separate=True),   # CLIP's
    dict(num_heads=2),                         # timm's default form: one qkv (its init needs the bias)
    dict(embed_dim=8, num_heads=1, out_features=0, class_token=True),
    dict(embed_dim=12, num_heads=3, out_features=6, pool_type=""),
])
def test_attention_pool_2d_is_one_row_and_computes_the_same(kwargs):
    model = pooled(**kwargs)
    done, report = imported(model, (3, 2, 3))
    assert rows(report) == {"0": "conv", "1": "attention_pool_2d"}
    head = model[1]
    c, e, t = 8, head.embed_dim, 2 * 3 + 1
    out = head.out_features
    projected = kwargs.get("out_features") != 0
    bias = kwargs.get("qkv_bias", True)
    # position embedding T*C, class token C, q, k, v 3*C*E (+ 3E), projection E*out + out
    assert report.rows[-1].params == (t * c + (c if head.cls_token is not None else 0)
                                      + 3 * c * e + (3 * e if bias else 0)
                                      + (e * out + out if projected else 0))
    # q, k, v on all T tokens, the T x T scores and weighted values, the projection
    assert report.rows[-1].macs == 3 * t * c * e + 2 * t * t * e + (t * e * out if projected
                                                                     else 0)
    expected = (out,) if head.pool_type == "token" else (out, 2, 3)
    assert report.rows[-1].output_shape == expected
    same_function(model, (3, 2, 3), done)


def test_attention_pool_2d_on_another_grid_has_no_kind():
    """Its position embedding would be resampled (bicubic): refused, by reason."""
    with pytest.raises(importer.Unsupported, match="position embedding is for a"):
        importer.import_module(pooled(num_heads=2).eval(), (3, 4, 4), strict=True)


def test_a_small_clip_resnet_imports_with_no_opaque_row_and_computes_the_same():
    model = timm.create_model("resnet50_clip", pretrained=False, img_size=64,
                              num_classes=7).eval()
    done, report = imported(model, (3, 64, 64))
    assert "opaque" not in rows(report).values()
    assert rows(report)["head"] == "attention_pool_2d"
    same_function(model, (3, 64, 64), done)
