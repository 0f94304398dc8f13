"""timm's Qwen3 ViT (timm.models.qwen3_vit): the encoder traces (its
resample_pos_embed_grid is one call of the graph, fx cannot trace its test
of the grid's size), its attention is a rope_attention row, and the VLM
projector (Qwen3VitPatchMerger) a token_merger row. On small
configurations: params (sum of numel) and MACs (FlopCounterMode / 2 on the
meta device) equal PyTorch's, and the built spec loads timm's state_dict
strictly and computes its outputs (within 1e-5)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.layers import lookup  # noqa: E402
from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2,
             pos_embed_grid_size=4)


class Merged(nn.Module):
    """A 1x1 conv to ``width``, its map channels last (B x H x W x D), then the
    merger (timm calls it on the encoder's B x H x W x D features)."""

    def __init__(self, merger, width=16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.merger = merger

    def forward(self, x):
        return self.merger(self.stem(x).permute(0, 2, 3, 1))


@pytest.mark.parametrize("out, grid", [(24, (4, 6)), (0, (2, 2))])
def test_patch_merger_is_one_token_merger_row_and_computes_the_same(out, grid):
    from timm.models.qwen3_vit import Qwen3VitPatchMerger
    torch.manual_seed(0)
    model = Merged(Qwen3VitPatchMerger(16, merge_size=2, out_features=out))
    shape = (3, *grid)
    done, report = imported(model, shape)
    assert rows(report)["merger"] == "token_merger"
    row = report.rows[-1]
    n, d, k = grid[0] * grid[1], 16, 2
    hidden = k * k * d                       # 64
    assert row.output_shape == (n // 4, out or hidden)
    # the norm 2D, fc1 hidden^2 + hidden, fc2 hidden*out + out; MACs: the two
    # Linears on the N/k^2 merged tokens
    assert row.params == 2 * d + hidden * hidden + hidden + (hidden * out + out)
    assert row.macs == n // 4 * (hidden * hidden + hidden * out)
    if grid[0] != grid[1]:
        assert "size = [4, 6]" in done.text
    same_function(model, shape, done)


def test_token_merger_figures():
    kind = lookup("token_merger")
    a = kind.read_args({"factor": 2, "size": [2, 4], "out": 10}, {})
    x = (8, 6)
    assert kind.output_shape(a, x) == (2, 10)
    assert kind.params(a, x) == 12 + 24 * 24 + 24 + 24 * 10 + 10
    assert kind.macs(a, x, (2, 10)) == 2 * 24 * 24 + 2 * 24 * 10
    with pytest.raises(Exception, match="factor=3 must divide"):
        kind.output_shape(kind.read_args({"factor": 3, "size": [2, 4]}, {}), x)


def test_a_merger_with_another_activation_has_no_kind():
    from timm.models.qwen3_vit import Qwen3VitPatchMerger
    model = Merged(Qwen3VitPatchMerger(16, merge_size=2, out_features=8, act_layer=nn.SiLU))
    with pytest.raises(importer.Unsupported, match="SiLU"):
        importer.import_module(model.eval(), (3, 4, 4), strict=True)


@pytest.mark.parametrize("name", ["qwen3_vit_88m", "qwen3_vit_88m_merge", "qwen3_vit_88m_enc"])
def test_a_small_qwen3_vit_imports_with_no_opaque_row_and_computes_the_same(name):
    """The classifier (mean pool, a norm without affine, the head), the
    classifier over the projector's tokens, and the encoder alone."""
    torch.manual_seed(0)
    kwargs = dict(SMALL, out_features=24) if name.endswith("_enc") else \
        dict(SMALL, num_classes=5, out_features=24)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    done, report = imported(model, (3, 64, 64), f"timm:{name}")
    kinds = set(rows(report).values())
    assert "opaque" not in done.text and "rope_attention" in kinds
    assert ("token_merger" in kinds) == (name != "qwen3_vit_88m")   # the projector
    same_function(model, (3, 64, 64), done)


def test_a_position_embedding_resampled_to_another_grid_has_no_row_yet():
    """At another grid than its own (4 x 4 here, 6 x 6 patches), timm resamples
    the stored (1, G*G, D) embedding bilinearly (align_corners): no
    position_embedding row holds that layout, so strict import refuses the add."""
    torch.manual_seed(0)
    model = timm.create_model("qwen3_vit_88m", pretrained=False, num_classes=5, **SMALL).eval()
    with pytest.raises(importer.Unsupported, match="operator.add"):
        importer.import_module(model, (3, 96, 96), strict=True)
