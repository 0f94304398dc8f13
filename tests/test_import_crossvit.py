"""timm's CrossViT imports with no opaque row, through torch.fx: its
CrossAttention is a ``cross_attention`` row, ``scale_image`` (the second
branch's smaller image, a function fx cannot trace through: it branches on
the input's size) one call mapped to a ``resize`` row, and the heads' logits
averaged, torch.stack([...]).mean(0), an add merge and a multiply by 1/n.
params == sum(p.numel()), MACs == FlopCounterMode / 2 on the meta device
(``imported`` checks both, strictly: an opaque row fails), and the spec's
model loads timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from timm.models.crossvit import scale_image  # noqa: E402
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_attention_families import OnTokens  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("heads, bias", [(4, True), (2, False)])
def test_cross_attention_is_one_row_and_computes_the_same(heads, bias):
    from timm.models.crossvit import CrossAttention
    model = OnTokens(CrossAttention(16, num_heads=heads, qkv_bias=bias))
    done, report = imported(model, (3, 2, 3))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "attn": "cross_attention"}
    row = report.rows[-1]
    assert row.output_shape == (1, 16)
    # wq, wk, wv, proj: 4*16^2 + 16 (+ 3*16 with the qkv bias); MACs on N = 6
    # tokens: 16^2 (wq on the first token) + 2*6*16^2 (wk, wv) + 2*6*16 (one
    # query's scores and weighted values) + 16^2 (proj)
    assert row.params == 4 * 256 + 16 + (48 if bias else 0)
    assert row.macs == 256 + 2 * 6 * 256 + 2 * 6 * 16 + 256
    same_function(model, (3, 2, 3), done)


def test_a_cross_attention_scaled_otherwise_has_no_kind():
    from timm.models.crossvit import CrossAttention
    module = CrossAttention(16, num_heads=4)
    module.scale = 1.0
    with pytest.raises(importer.Unsupported, match="CrossAttention"):
        importer.import_module(OnTokens(module).eval(), (3, 2, 3), strict=True)


class Scaled(nn.Module):
    """timm's scale_image, then a 1x1 conv (3 -> 4). (fx sees the call as one
    node where the forward names the function as a global of its module.)"""

    def __init__(self, size, crop=False):
        super().__init__()
        self.size, self.crop = size, crop
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(scale_image(x, self.size, self.crop))


@pytest.mark.parametrize("size, crop, kind", [
    ((7, 5), False, "resize"),      # down, bicubic
    ((12, 14), True, "resize"),     # larger: resized even where it would crop
    ((6, 8), True, "crop"),         # a border of 2 and 1 each side
    ((10, 10), False, None),        # already that size: x itself
])
def test_scale_image_is_a_resize_or_a_crop_row(size, crop, kind):
    done, report = imported(Scaled(size, crop), (3, 10, 10))
    assert set(rows(report).values()) == {"conv"} | ({kind} if kind else set())
    assert report.rows[-1].output_shape == (4, *size)
    # the 1x1 conv: 3*4 + 4 params, 3*4 MACs per output pixel; interpolation has none
    assert report.totals["params"] == 16
    assert report.totals["macs"] == 12 * size[0] * size[1]
    same_function(Scaled(size, crop), (3, 10, 10), done)


def test_scale_image_cropping_an_odd_border_has_no_kind():
    with pytest.raises(importer.Unsupported, match="odd border"):
        importer.import_module(Scaled((7, 10), crop=True).eval(), (3, 10, 10), strict=True)


class Heads(nn.Module):
    """n heads on the same features, their logits averaged as CrossViT's."""

    def __init__(self, n, reduce="mean"):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(6, 5) for _ in range(n))
        self.reduce = reduce

    def forward(self, x):
        x = x.flatten(1)
        return getattr(torch, self.reduce)(torch.stack([h(x) for h in self.heads], dim=0), dim=0)


@pytest.mark.parametrize("n", [2, 3])
def test_stacked_heads_averaged_are_adds_and_a_multiply(n):
    done, report = imported(Heads(n), (6, 1, 1))
    kinds = list(rows(report).values())
    assert kinds.count("fc") == n and kinds.count("add") == n - 1
    assert kinds[-1] == "multiply"
    assert f"multiply = {1 / n!r}" in done.text
    same_function(Heads(n), (6, 1, 1), done)


@pytest.mark.parametrize("n", [2, 3])
def test_stacked_heads_summed_are_adds(n):
    """The 18x2 ViTs' parallel branches: torch.stack([...]).sum(dim=0)."""
    done, report = imported(Heads(n, "sum"), (6, 1, 1))
    kinds = list(rows(report).values())
    assert kinds.count("fc") == n and kinds.count("add") == n - 1 and kinds[-1] == "add"
    same_function(Heads(n, "sum"), (6, 1, 1), done)


def test_stacked_heads_reduced_otherwise_have_no_kind():
    with pytest.raises(importer.Unsupported, match="stack"):
        importer.import_module(Heads(2, "prod").eval(), (6, 1, 1), strict=True)


def test_a_small_crossvit_dagger_imports_with_no_opaque_row_and_computes_the_same():
    """Two branches (patches of 12 on 48 x 48, of 16 on the image resized to
    32 x 32), multi-conv patch embeddings, two multi-scale blocks: traced by
    torch.fx, every call a row."""
    model = timm.create_model("crossvit_9_dagger_240", pretrained=False, img_size=48,
                              img_scale=(1.0, 2 / 3), embed_dim=[16, 32],
                              depth=[[1, 1, 0], [1, 1, 0]], num_heads=[2, 2], num_classes=10)
    done, report = imported(model, (3, 48, 48))
    assert done.tracer == "torch.fx"
    found = rows(report)
    assert found["resize"] == "resize"
    assert [p for p, k in found.items() if k == "cross_attention"] == [
        f"blocks.{b}.fusion.{f}.attn" for b in (0, 1) for f in (0, 1)]
    assert list(found.values())[-2:] == ["add", "multiply"]
    same_function(model, (3, 48, 48), done)
