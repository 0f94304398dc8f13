"""ViT-22B's parallel block (timm's ParallelScalingBlock: the vit_*_xp and
vit_pwee models) imports as one parallel_block row: params == sum(numel),
MACs == FlopCounterMode / 2 on meta (``imported`` checks both), and the
spec's model loads timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from tests.test_import_attention_families import OnTokens  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("kwargs", [
    dict(),                                                   # pwee's form without the scale
    dict(qkv_bias=True, qk_norm=True, init_values=1e-5),
    dict(fuse_out_proj=True, proj_bias=False),
    dict(qk_norm=True, norm_layer="rms"),                     # the xp models' RmsNorm
])
def test_parallel_scaling_block_is_one_row_and_computes_the_same(kwargs):
    from timm.layers import RmsNorm
    from timm.models.vision_transformer import ParallelScalingBlock
    if kwargs.pop("norm_layer", None) == "rms":
        kwargs["norm_layer"] = RmsNorm
    block = ParallelScalingBlock(16, num_heads=4, mlp_ratio=2, **kwargs)
    model = OnTokens(block)
    done, report = imported(model, (3, 2, 3))
    assert rows(report)["attn"] == "parallel_block"
    n, d, h, hd = 6, 16, 32, 4
    rms = "norm_layer" in kwargs
    norm = d if rms else 2 * d
    qk = 2 * (hd if rms else 2 * hd) if kwargs.get("qk_norm") else 0
    in_proj = d * (h + 3 * d) + ((h + 3 * d) if kwargs.get("qkv_bias") else h)
    out = (d + h) * d + (0 if kwargs.get("proj_bias") is False else
                         d if kwargs.get("fuse_out_proj") else 2 * d)
    scale = d if "init_values" in kwargs else 0
    assert report.rows[-1].params == norm + in_proj + qk + out + scale
    # in_proj, q k^T and the weighted values, the output projection(s)
    assert report.rows[-1].macs == n * d * (h + 3 * d) + 2 * n * n * d + n * (d + h) * d
    same_function(model, (3, 2, 3), done)


def test_a_small_parallel_vit_imports_with_no_opaque_row_and_computes_the_same():
    from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                              num_classes=5, block_fn=ParallelScalingBlock, init_values=1e-5,
                              reg_tokens=1, global_pool="avg").eval()
    done, report = imported(model, (3, 32, 32))
    assert "opaque" not in rows(report).values()
    assert list(rows(report).values()).count("parallel_block") == 2
    same_function(model, (3, 32, 32), done)


def test_a_parallel_block_with_drop_path_has_no_kind():
    from archcalc.torch import importer
    from timm.models.vision_transformer import ParallelScalingBlock
    block = ParallelScalingBlock(16, num_heads=4, drop_path=0.1)
    with pytest.raises(importer.Unsupported, match="drop path"):
        importer.import_module(OnTokens(block).eval(), (3, 2, 3), strict=True)


def test_a_small_parallel_things_vit_imports_with_no_opaque_row_and_computes_the_same():
    """timm's ParallelThingsBlock (the 18x2 ViTs): two attentions, then two
    MLPs, each pair summed through torch.stack(...).sum(0): add merges."""
    from timm.models.vision_transformer import ParallelThingsBlock, VisionTransformer
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                              num_classes=5, block_fn=ParallelThingsBlock).eval()
    done, report = imported(model, (3, 32, 32))
    assert "opaque" not in rows(report).values()
    assert list(rows(report).values()).count("attention") == 4
    same_function(model, (3, 32, 32), done)
