"""timm's SHViT: its single-head attention (SHSA) imports as one
shvit_attention row (params == sum(p.numel()), MACs == FlopCounterMode / 2 on
the meta device: ``imported`` checks both), and the spec's model loads timm's
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


@pytest.mark.parametrize("dim, qk, pdim", [(8, 4, 4), (6, 2, 6), (8, 3, 1)])
def test_shsa_is_one_row_and_computes_the_same(dim, qk, pdim):
    from timm.models.shvit import SHSA
    model = OnMap(SHSA(dim, qk, pdim), dim)
    done, report = imported(model, (3, 3, 4))
    assert rows(report) == {"stem": "conv", "attn": "shvit_attention"}
    row = report.rows[-1]
    n, c, w = 12, dim, 2 * qk + pdim
    # pre_norm 2*pdim; qkv conv pdim*w, its norm 2*w; proj conv C^2, its norm 2*C
    assert row.params == 2 * pdim + pdim * w + 2 * w + c * c + 2 * c
    # qkv N*pdim*w; scores N^2*qk; weighted values N^2*pdim; proj N*C^2
    assert row.macs == n * pdim * w + n * n * (qk + pdim) + n * c * c
    same_function(model, (3, 3, 4), done)


def test_an_shsa_scaled_otherwise_has_no_kind():
    from timm.models.shvit import SHSA
    module = SHSA(8, 4, 4)
    module.scale = 1.0
    with pytest.raises(importer.Unsupported, match="SHSA"):
        importer.import_module(OnMap(module, 8).eval(), (3, 3, 4), strict=True)


def test_a_small_shvit_imports_with_no_opaque_row_and_computes_the_same():
    # types ("i", "s", "s"): the first stage has no attention
    model = timm.create_model("shvit_s1", pretrained=False, embed_dim=(16, 24, 32),
                              partial_dim=(4, 6, 8), qk_dim=(4, 4, 4), depth=(1, 1, 1))
    done, report = imported(model, (3, 64, 64))
    kinds = list(rows(report).values())
    assert kinds.count("shvit_attention") == 2 and "opaque" not in kinds
    same_function(model, (3, 64, 64), done)
