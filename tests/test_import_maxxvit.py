"""timm's MaxViT and CoAtNet (timm.models.maxxvit): Attention2d is one
map_attention row, PartitionAttentionCl and ParallelPartitionAttention one
partition_transformer row each, with timm's three relative position biases
(RelPosBias, RelPosMlp, RelPosBiasTf). Every figure is PyTorch's: params ==
sum(p.numel()), MACs == FlopCounterMode / 2 on the meta device, and the spec's
built model loads timm's state_dict strictly and computes its outputs."""
from functools import partial

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from timm.layers import RelPosBias, RelPosBiasTf, RelPosMlp  # noqa: E402
from timm.models import maxxvit  # noqa: E402

from archcalc.layers import lookup  # noqa: E402
from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

REL_POS = {"bias": partial(RelPosBias), "mlp": partial(RelPosMlp, hidden_dim=64),
           "bias_tf": partial(RelPosBiasTf), "none": None}


class ChannelsLast(nn.Module):
    """A 1x1 conv, then a block on B x H x W x C (as MaxxVitBlock calls it)."""

    def __init__(self, block, channels):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1)
        self.block = block

    def forward(self, x):
        return self.block(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def transformer_cfg(rel_pos, **kwargs):
    return maxxvit.MaxxVitTransformerCfg(dim_head=8, window_size=(2, 3), rel_pos_type=rel_pos,
                                         rel_pos_dim=64, **kwargs)


@pytest.mark.parametrize("rel_pos, kwargs, partition", [
    ("bias", {}, "block"), ("bias", {}, "grid"), ("mlp", {"init_values": 1e-3}, "grid"),
    ("bias_tf", {"head_first": False, "act_layer": "gelu_tanh", "norm_eps": 1e-5}, "block"),
    ("none", {"expand_ratio": 2.0}, "grid")])
def test_partition_attention_is_one_row_and_computes_the_same(rel_pos, kwargs, partition):
    block = maxxvit.PartitionAttentionCl(16, partition, transformer_cfg(rel_pos, **kwargs))
    model = ChannelsLast(block, 16)
    done, report = imported(model, (3, 4, 6))
    assert rows(report)["block"] == "partition_transformer"
    same_function(model, (3, 4, 6), done)


@pytest.mark.parametrize("rel_pos, kwargs, partition", [
    ("bias", {}, "grid"), ("mlp", {"init_values": 1e-3}, "block"),
    ("bias_tf", {"head_first": False, "act_layer": "gelu_tanh"}, "grid")])
def test_partition_attention_2d_is_one_row_on_the_map(rel_pos, kwargs, partition):
    """PartitionAttention2d (MaxxVit's use_nchw_attn): the same block on B x C x H x W,
    layer norms over the channels, 1x1 conv projections and MLP."""
    block = maxxvit.PartitionAttention2d(16, partition, transformer_cfg(rel_pos, **kwargs))
    model = nn.Sequential(nn.Conv2d(3, 16, 1), block)
    done, report = imported(model, (3, 4, 6))
    assert rows(report) == {"0": "conv", "1": "partition_transformer"}
    same_function(model, (3, 4, 6), done)


def test_parallel_partition_attention_is_one_row_and_computes_the_same():
    """maxvit_tiny_pm's block: window and grid attention to C/2 each, concatenated."""
    model = ChannelsLast(maxxvit.ParallelPartitionAttention(16, transformer_cfg("bias")), 16)
    done, report = imported(model, (3, 4, 6))
    assert rows(report)["block"] == "partition_transformer"
    same_function(model, (3, 4, 6), done)


@pytest.mark.parametrize("rel_pos, kwargs", [
    ("bias", {}), ("bias", {"expand_first": False}), ("mlp", {"head_first": False}),
    ("bias_tf", {"head_first": False}), ("bias_tf", {"expand_first": False}), ("none", {})])
def test_attention_2d_is_one_row_and_computes_the_same(rel_pos, kwargs):
    """CoAtNet's attention over the whole map, its bias spanning the map (5 x 3)."""
    rel = REL_POS[rel_pos] and partial(REL_POS[rel_pos], window_size=(5, 3))
    model = nn.Sequential(nn.Conv2d(3, 16, 1),
                          maxxvit.Attention2d(16, 32, dim_head=8, rel_pos_cls=rel, **kwargs))
    done, report = imported(model, (3, 5, 3))
    assert rows(report) == {"0": "conv", "1": "map_attention"}
    same_function(model, (3, 5, 3), done)


def counted(module, shape, batch):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.to("meta")(torch.zeros(batch, *shape, device="meta"))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("rel_pos, made", [("mlp", 9 * 5 * (2 * 64 + 64 * 2)),
                                           ("bias_tf", 2 * 5 * 5 * 9 * 5 + 2 * 5 * 5 * 3 * 3 * 5)])
def test_a_bias_made_once_per_forward_is_counted_once_per_sample(rel_pos, made):
    """RelPosMlp's MLP and RelPosBiasTf's einsums run once per forward pass: the
    MACs per sample count them once (FlopCounterMode's at batch 1); at batch 2
    FlopCounterMode counts them once for both samples."""
    kind = lookup("map_attention")
    a = kind.read_args({"heads": 2, "rel_pos": rel_pos, "rel_hidden": 64}, {})
    x = (16, 5, 3)
    macs = kind.macs(a, x, x)
    module = kind.build(a, x)
    assert counted(module, x, 1) == macs
    assert counted(module, x, 2) == 2 * macs - made


def test_a_partition_block_with_rms_norms_has_no_kind():
    """The kind's norms are layer norms: another norm is refused, not mapped."""
    block = maxxvit.PartitionAttentionCl(16, "block", transformer_cfg("bias",
                                                                      norm_layer_cl="rmsnorm"))
    with pytest.raises(importer.Unsupported, match="PartitionAttentionCl"):
        importer.import_module(ChannelsLast(block, 16).eval(), (3, 4, 6), strict=True)


def test_a_swin_mode_bias_mlp_has_no_kind():
    """RelPosMlp in 'swin' mode (a sigmoid and a gain of 16) is not the kind's 'cr'."""
    cfg = transformer_cfg("mlp")
    block = maxxvit.PartitionAttentionCl(16, "block", cfg)
    block.attn.rel_pos = RelPosMlp((2, 3), num_heads=2, hidden_dim=64, mode="swin")
    with pytest.raises(importer.Unsupported, match="PartitionAttentionCl"):
        importer.import_module(ChannelsLast(block, 16).eval(), (3, 4, 6), strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("name, size, kind, count, kwargs", [
    ("test_maxvit", 64, "partition_transformer", 8, {}),
    ("test_coatnet", 64, "map_attention", 3, {}),
    ("maxvit_tiny_pm_256", 64, "partition_transformer", 11, {}),
    ("maxxvitv2_nano_rw_256", 64, "partition_transformer", 7, {}),
    ("test_maxvit", 64, "partition_transformer", 8, {"transformer_use_nchw_attn": True})])
def test_small_models_import_exactly_and_compute_the_same(name, size, kind, count, kwargs):
    """Whole models at a small input (their windows and bias tables fitted to
    it by timm), no opaque row, timm's outputs with timm's state_dict."""
    model = timm.create_model(name, pretrained=False, img_size=size, **kwargs).eval()
    done, report = imported(model, (3, size, size), f"timm:{name}")
    assert sum(k == kind for k in rows(report).values()) == count
    if name.startswith("test_"):
        same_function(model, (3, size, size), done)
