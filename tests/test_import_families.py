"""timm families that imported with opaque rows or failed: each now imports
exactly with derived rows (params == sum(p.numel()), MACs == FlopCounterMode / 2
on the meta device, refused by nothing under strict), and where the spec builds
a model with the original's state_dict keys, it loads that state_dict strictly
and computes the same outputs."""
import pytest

from archcalc.analysis import analyze
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import (  # noqa: E402
    imported, rows, same_function, timm_meta)


# -- ECA: timm's EcaModule (ECA-NFNet, ECA-HaloNeXt) is the eca kind -------------


def eca_block(**kwargs):
    from timm.layers.eca import EcaModule
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), EcaModule(**kwargs))


@pytest.mark.parametrize("kwargs, kernel", [({"channels": 32}, 3), ({"kernel_size": 5}, 5)])
def test_timm_eca_module_is_an_eca_row(kwargs, kernel):
    model = eca_block(**kwargs)
    done, report = imported(model, (3, 8, 8))
    assert rows(report) == {"0": "conv", "1": "eca"}
    assert report.rows[2].params == kernel == model[1].conv.weight.numel()
    same_function(model, (3, 8, 8), done)


def test_timm_eca_module_with_an_mlp_has_no_kind():
    """use_mlp (timm's experiment, not the paper's): two convs with biases."""
    model = eca_block(channels=32, use_mlp=True).eval()
    with pytest.raises(importer.Unsupported, match="EcaModule"):
        importer.import_module(model, (3, 8, 8), strict=True)


def test_eca_nfnet_l0_imports_exactly():
    """ECA-NFNet-L0: 24,143,924 params (timm's count: sum of numel)."""
    done, report = imported(timm_meta("eca_nfnet_l0"), (3, 224, 224), "timm:eca_nfnet_l0")
    assert done.params == 24_143_924
    assert sum(kind == "eca" for kind in rows(report).values()) == 12


# -- RepVGG: a sum of three paths, then the block's activation -------------------


def test_repvgg_block_keeps_its_activation_after_the_sum_of_three_paths():
    """The identity block (1x1 + 3x3 + BN of the input, then ReLU): the three
    paths are merge entries and the ReLU after them a row (it was dropped, so
    the next block read a tensor no entry gave)."""
    from timm.models.byobnet import RepVggBlock
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                          nn.Sequential(RepVggBlock(8, 16, stride=2), RepVggBlock(16, 16),
                                        RepVggBlock(16, 16))).eval()
    done, report = imported(model, (3, 8, 8))
    assert sum(kind.endswith("relu") for kind in rows(report).values()) == 3
    same_function(model, (3, 8, 8), done)


@pytest.mark.parametrize("name, params", [("repvgg_a1", 14_092_264),
                                          ("repvgg_b0", 15_817_960)])
def test_repvgg_imports_exactly(name, params):
    done, _ = imported(timm_meta(name), (3, 224, 224), f"timm:{name}")
    assert done.params == params


# -- gMLP-Mixer: timm's GluMlp is one glu_mlp row --------------------------------


class TokensThenGlu(nn.Module):
    """A patch conv, its map as tokens, then a GluMlp (SiLU, output 10)."""

    def __init__(self, **kwargs):
        super().__init__()
        from timm.layers.mlp import GluMlp
        self.conv = nn.Conv2d(3, 12, 2, stride=2)
        self.mlp = GluMlp(12, 32, 10, act_layer=nn.SiLU, **kwargs)

    def forward(self, x):
        return self.mlp(self.conv(x).flatten(2).transpose(1, 2))


@pytest.mark.parametrize("gate_last", [True, False])
def test_glu_mlp_is_one_row_and_computes_the_same(gate_last):
    model = TokensThenGlu(gate_last=gate_last).eval()
    done, report = imported(model, (3, 8, 8))
    assert rows(report)["mlp"] == "glu_mlp"
    # fc1 12 -> 32 (+ 32), fc2 16 -> 10 (+ 10)
    assert report.rows[-1].params == 12 * 32 + 32 + 16 * 10 + 10
    assert report.rows[-1].output_shape == (16, 10)
    same_function(model, (3, 8, 8), done)


def test_glu_mlp_with_a_norm_has_no_kind():
    from timm.layers import LayerNorm
    model = TokensThenGlu(norm_layer=LayerNorm).eval()
    with pytest.raises(importer.Unsupported, match="GluMlp"):
        importer.import_module(model, (3, 8, 8), strict=True)


def test_gmixer_12_224_imports_exactly():
    """gMLP-Mixer-12: 12,701,080 params (sum of numel), 24 GluMlp rows."""
    done, report = imported(timm_meta("gmixer_12_224"), (3, 224, 224), "timm:gmixer_12_224")
    assert done.params == 12_701_080
    assert sum(kind == "glu_mlp" for kind in rows(report).values()) == 24


# -- BoTNet: timm's BottleneckAttn is one bottleneck_attention row ---------------


@pytest.mark.parametrize("kwargs", [{}, {"stride": 2, "qkv_bias": True},
                                    {"dim_out": 32, "qk_ratio": 0.5, "scale_pos_embed": True}])
def test_bottleneck_attn_is_one_row_and_computes_the_same(kwargs):
    from timm.layers.bottleneck_attn import BottleneckAttn
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1),
                          BottleneckAttn(16, feat_size=(6, 5), num_heads=2, **kwargs)).eval()
    done, report = imported(model, (3, 6, 5))
    assert rows(report) == {"0": "conv", "1": "bottleneck_attention"}
    same_function(model, (3, 6, 5), done)


def test_botnet26t_256_imports_exactly():
    """BoTNet-26t: 12,488,672 params (sum of numel), its 3 BottleneckAttn rows derived."""
    done, report = imported(timm_meta("botnet26t_256"), (3, 256, 256), "timm:botnet26t_256")
    assert done.params == 12_488_672
    assert sum(kind == "bottleneck_attention" for kind in rows(report).values()) == 3


# -- HaloNet: timm's HaloAttn is one halo_attention row --------------------------


@pytest.mark.parametrize("kwargs", [{}, {"stride": 2, "qkv_bias": True},
                                    {"stride": 2, "block_size": 3, "dim_out": 32},
                                    {"stride": 2, "avg_down": True, "scale_pos_embed": True},
                                    {"qk_ratio": 0.5, "halo_size": 0}])
def test_halo_attn_is_one_row_and_computes_the_same(kwargs):
    from timm.layers.halo_attn import HaloAttn
    kwargs = {"block_size": 4, "halo_size": 1, **kwargs}
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1),
                          HaloAttn(16, num_heads=2, **kwargs)).eval()
    done, report = imported(model, (3, 12, 12))
    assert rows(report) == {"0": "conv", "1": "halo_attention"}
    same_function(model, (3, 12, 12), done)


@pytest.mark.parametrize("name, params", [("halonet26t", 12_480_288),
                                          ("eca_halonext26ts", 10_756_885)])
def test_halonets_import_exactly(name, params):
    """Their 3 HaloAttn rows derived (and ECA-HaloNeXt's EcaModules)."""
    done, report = imported(timm_meta(name), (3, 256, 256), f"timm:{name}")
    assert done.params == params
    assert sum(kind == "halo_attention" for kind in rows(report).values()) == 3


# -- LambdaNetworks: timm's LambdaLayer (local form) is one lambda_layer row -----


@pytest.mark.parametrize("kwargs", [{}, {"stride": 2, "qkv_bias": True},
                                    {"num_heads": 2, "dim_head": 8, "r": 3}])
def test_lambda_layer_is_one_row_and_computes_the_same(kwargs):
    from timm.layers.lambda_layer import LambdaLayer
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1),
                          LambdaLayer(16, **{"r": 5, **kwargs})).eval()
    done, report = imported(model, (3, 6, 8))
    assert rows(report) == {"0": "conv", "1": "lambda_layer"}
    same_function(model, (3, 6, 8), done)


def test_lambda_layer_with_a_relative_position_embedding_has_no_kind():
    from timm.layers.lambda_layer import LambdaLayer
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1),
                          LambdaLayer(16, feat_size=(6, 8), r=None)).eval()
    with pytest.raises(importer.Unsupported, match="LambdaLayer"):
        importer.import_module(model, (3, 6, 8), strict=True)


def test_lambda_resnet26t_imports_exactly():
    done, report = imported(timm_meta("lambda_resnet26t"), (3, 256, 256), "timm:lambda_resnet26t")
    assert done.params == 10_958_272
    assert sum(kind == "lambda_layer" for kind in rows(report).values()) == 3
