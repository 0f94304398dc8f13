"""timm's SwiftFormer: its efficient additive attention imports as one
additive_attention row (params == sum(p.numel()), MACs == FlopCounterMode / 2
on the meta device: ``imported`` checks both), and the spec's model loads
timm's state_dict strictly and computes its outputs."""
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


@pytest.mark.parametrize("c, t, heads", [(8, 8, 1), (8, 4, 2), (6, 5, 1)])
def test_additive_attention_is_one_row_and_computes_the_same(c, t, heads):
    from timm.models.swiftformer import EfficientAdditiveAttention
    model = OnMap(EfficientAdditiveAttention(c, t, heads), c)
    done, report = imported(model, (3, 3, 4))
    assert rows(report) == {"stem": "conv", "attn": "additive_attention"}
    row = report.rows[-1]
    n, d = 12, t * heads
    assert row.output_shape == (t, 3, 4)
    # to_query, to_key C*D + D each; w_g D; proj D*D + D; final D*T + T
    assert row.params == 2 * (c * d + d) + d + d * d + d + d * t + t
    # q, k N*C*D each; the scores q w_g N*D; proj N*D^2; final N*D*T
    assert row.macs == 2 * n * c * d + n * d + n * d * d + n * d * t
    same_function(model, (3, 3, 4), done)


def test_an_additive_attention_scaled_otherwise_has_no_kind():
    from timm.models.swiftformer import EfficientAdditiveAttention
    module = EfficientAdditiveAttention(8, 8)
    module.scale_factor = 1.0
    with pytest.raises(importer.Unsupported, match="EfficientAdditiveAttention"):
        importer.import_module(OnMap(module, 8).eval(), (3, 3, 4), strict=True)


def test_a_small_swiftformer_imports_with_no_opaque_row_and_computes_the_same():
    # one block per stage: each stage's last block is the attention Block
    model = timm.create_model("swiftformer_xs", pretrained=False, layers=[1, 1, 1, 2],
                              embed_dims=[8, 16, 24, 32])
    done, report = imported(model, (3, 64, 64))
    kinds = list(rows(report).values())
    assert kinds.count("additive_attention") == 4 and "opaque" not in kinds
    same_function(model, (3, 64, 64), done)
