"""Norms and activations timm writes as tensor operations, each now a kind
that its timm module maps back to: RMS norm (timm's RmsNorm over tokens,
RmsNorm2d over a map's channels, F.rms_norm in a forward), SimpleNorm,
MetaFormer's StarReLU, squared ReLU, PoolFormer's pool(x) - x and the
GroupNorm1NoBias of PoolFormer v2, EvoNorm S0/S0a/B0 and filter response norm
with its TLU. Each: params == sum(p.numel()), MACs == FlopCounterMode / 2
(imported() checks both), no opaque row under strict, and the spec's built
model loads timm's state_dict strictly and computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import (  # noqa: E402
    imported, rows, same_function, timm_meta)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAP = (3, 8, 8)


class Tokens(nn.Module):
    """A map's positions as N x D tokens (the layout stage's flatten + transpose)."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


def tokens_then(*layers, width=16):
    return nn.Sequential(nn.Conv2d(3, width, 2, stride=2), Tokens(), *layers)


def row_of(report, name):
    return next(r for r in report.rows[1:] if ".".join(map(str, r.path)) == name)


# -- RMS norm ---------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
def test_timm_rms_norm_over_tokens_is_an_rms_norm_row(affine):
    from timm.layers import RmsNorm
    model = tokens_then(RmsNorm(16, eps=1e-5, affine=affine), nn.Linear(16, 4))
    done, report = imported(model, MAP)
    assert rows(report)["2"] == "rms_norm"
    norm = row_of(report, "2")
    assert norm.params == (16 if affine else 0)
    assert norm.flops == 16 * 16 * (4 if affine else 3)   # 16 tokens of 16
    same_function(model, MAP, done)


def test_timm_rms_norm_2d_and_simple_norm_2d_over_a_maps_channels():
    from timm.layers import RmsNorm2d, SimpleNorm2d
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), RmsNorm2d(8),
                          nn.Conv2d(8, 8, 1), SimpleNorm2d(8, affine=False))
    done, report = imported(model, MAP)
    assert rows(report) == {"0": "conv", "1": "rms_norm", "2": "conv", "3": "simple_norm"}
    assert row_of(report, "1").params == 8 == model[1].weight.numel()
    same_function(model, MAP, done)


def test_timm_simple_norm_over_tokens():
    from timm.layers import SimpleNorm
    model = tokens_then(SimpleNorm(16))
    done, report = imported(model, MAP)
    assert rows(report)["2"] == "simple_norm"
    same_function(model, MAP, done)


@pytest.mark.parametrize("act, kind", [("torch", "gelu"), ("timm", "gelu"), (None, None)])
def test_timm_rms_norm_act_2d_is_an_rms_norm_row_and_its_activation(act, kind):
    """MobileNetV5's RmsNormAct2d: the norm (its weight under the module's
    name), then its activation as a row of its own; apply_act False: none."""
    from timm.layers import activations
    from timm.layers.norm_act import RmsNormAct2d
    layer = {"torch": nn.GELU, "timm": activations.GELU, None: nn.ReLU}[act]
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                          RmsNormAct2d(8, act_layer=layer, apply_act=act is not None))
    done, report = imported(model, MAP)
    assert rows(report)["1"] == "rms_norm"
    assert sorted(rows(report).values()) == sorted(["conv", "rms_norm"] + ([kind] if kind else []))
    same_function(model, MAP, done)


class FunctionalRms(nn.Module):
    """F.rms_norm in a module's own forward with its own weight."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, 1e-6)


def test_functional_rms_norm_is_the_modules_rms_norm_row():
    model = tokens_then(FunctionalRms(16), nn.Linear(16, 4))
    done, report = imported(model, MAP)
    assert rows(report)["2"] == "rms_norm"
    same_function(model, MAP, done)


def test_rms_norm_over_two_dimensions_has_no_kind():
    class TwoDims(nn.Module):
        def forward(self, x):
            return F.rms_norm(x, x.shape[-2:], None, 1e-6)
    model = tokens_then(TwoDims())
    with pytest.raises(importer.Unsupported, match="rms_norm"):
        importer.import_module(model.eval(), MAP, strict=True)


# -- MetaFormer -------------------------------------------------------------------


def test_poolformer_mixer_star_relu_and_squared_relu():
    from timm.models.metaformer import Pooling, SquaredReLU, StarReLU
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Pooling(3), StarReLU(),
                          nn.Conv2d(8, 8, 1), SquaredReLU())
    done, report = imported(model, MAP)
    assert rows(report) == {"0": "conv", "1": "pool_mixer", "2": "star_relu", "3": "conv",
                            "4": "squared_relu"}
    assert row_of(report, "2").params == 2          # a scalar scale and bias
    assert row_of(report, "1").flops == 8 * 8 * 8 * (9 + 1)
    same_function(model, MAP, done)


def test_metaformer_attention_is_an_attention_row():
    """CAFormer's token mixer: timm's Attention with head_dim 32, no biases."""
    from timm.models.metaformer import Attention
    model = tokens_then(Attention(64, head_dim=32), width=64)
    done, report = imported(model, MAP)
    assert rows(report)["2"] == "attention"
    assert row_of(report, "2").params == 4 * 64 * 64
    same_function(model, MAP, done)


def test_a_pool_that_counts_its_padding_is_no_pool_mixer():
    from timm.models.metaformer import Pooling
    mixer = Pooling(3)
    mixer.pool.count_include_pad = True
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), mixer).eval()
    with pytest.raises(importer.Unsupported, match="Pooling"):
        importer.import_module(model, MAP, strict=True)


def test_group_norm_with_a_weight_and_no_bias():
    from timm.models.metaformer import GroupNorm1NoBias
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), GroupNorm1NoBias(8))
    done, report = imported(model, MAP)
    assert rows(report)["1"] == "group_norm"
    assert row_of(report, "1").params == 8
    same_function(model, MAP, done)


# -- EvoNorm and filter response norm ---------------------------------------------


@pytest.mark.parametrize("cls, kwargs", [
    ("EvoNorm2dS0", {"group_size": 4}), ("EvoNorm2dS0", {"groups": 2, "apply_act": False}),
    ("EvoNorm2dS0a", {"group_size": 4}), ("EvoNorm2dS0a", {"groups": 4, "apply_act": False}),
    ("EvoNorm2dB0", {}), ("EvoNorm2dB0", {"apply_act": False})])
def test_timm_evo_norms_are_evo_norm_rows(cls, kwargs):
    from timm.layers import evo_norm
    norm = getattr(evo_norm, cls)(8, **kwargs)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm)
    done, report = imported(model, MAP)
    assert rows(report) == {"0": "conv", "1": "evo_norm"}
    assert row_of(report, "1").params == sum(p.numel() for p in norm.parameters())
    same_function(model, MAP, done)


@pytest.mark.parametrize("tlu", [True, False])
def test_timm_filter_response_norm(tlu):
    from timm.layers import FilterResponseNormTlu2d
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), FilterResponseNormTlu2d(8, apply_act=tlu))
    done, report = imported(model, MAP)
    assert rows(report) == {"0": "conv", "1": "filter_response_norm"}
    assert row_of(report, "1").params == 8 * (3 if tlu else 2)
    same_function(model, MAP, done)


# -- whole timm models ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_atto_rms", "convnext_zepto_rms", "poolformerv2_s12",
                                  "caformer_s18", "resnetv2_50d_frn", "regnetz_b16_evos"])
def test_timm_models_import_exactly_with_no_opaque_row(name):
    model = timm_meta(name)
    done, _ = imported(model, (3, 224, 224), f"timm:{name}")
    assert done.params == sum(p.numel() for p in model.parameters())
