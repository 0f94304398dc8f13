"""timm's CNN modules that imported as opaque rows import as derived rows:
ResNeSt's SplitAttn (split_attention), SKNet's SelectiveKernel
(selective_kernel), VGG's ConvMlp head (conv, activation, dropout rows) and
the blur pool (blur_pool).

Every figure is PyTorch's: params == sum(p.numel()), MACs == FlopCounterMode
/ 2, the output's shape; the spec's built module loads timm's state_dict
strictly and computes its outputs (within 1e-5).
"""
import copy
from functools import partial
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archcalc.analysis import analyze
from archcalc.layers import kinds
from archcalc.layers.from_torch import NoMapping
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from timm.layers.selective_kernel import SelectiveKernel  # noqa: E402
from timm.layers.split_attn import SplitAttn  # noqa: E402

from archcalc.torch import importer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def counted_macs(module, x_shape) -> int:
    model = copy.deepcopy(module).to("meta").requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *x_shape, device="meta"))
    return counter.get_total_flops() // 2


def randomized(model):
    """Weights and batch-norm statistics that make a wrong wiring visible."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def same_outputs(original, built, x):
    built.load_state_dict(original.state_dict(), strict=True)
    with torch.no_grad():
        expected = original.eval()(x)
        scale = max(1.0, expected.abs().max().item())
        assert (built.eval()(x) - expected).abs().max().item() <= 1e-5 * scale


def layer_row(kind_name, module, x):
    """The kind's row for a module on a C x H x W input, checked against it."""
    kind = kinds()[kind_name]
    call = SimpleNamespace(x=tuple(x), x_torch=tuple(x), args=(), kwargs={})
    [(name, args)] = kind.from_torch(call, module)
    assert name == kind_name
    a = kind.read_args(args, {})
    y = kind.output_shape(a, tuple(x))
    with torch.no_grad():
        out = module.eval()(torch.randn(2, *x))
    assert tuple(out.shape[1:]) == tuple(y)
    assert kind.params(a, x) == sum(p.numel() for p in module.parameters())
    assert kind.macs(a, x, y) == counted_macs(module, x)
    built = kind.build(a, x)
    same_outputs(module, built, torch.randn(2, *x))
    return args


def imports_exactly(model, shape, kinds_there):
    """Strict import (no opaque row): params and MACs PyTorch's, the kinds
    there, timm's state_dict loaded, the same outputs."""
    done = importer.import_module(model, shape, strict=True)
    spec = loads(done.text, file="imported")
    report = analyze(spec)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == counted_macs(model, shape)
    assert kinds_there <= {r.type.split("+")[0] for r in report.rows}
    same_outputs(model, spec.build(), torch.randn(2, *shape))
    return done


# -- split attention (ResNeSt) ------------------------------------------------

@settings(max_examples=8, deadline=None, database=None)
@given(radix=st.integers(1, 4), groups=st.sampled_from([1, 2]), width=st.sampled_from([8, 16]),
       stride=st.sampled_from([1, 2]), dilation=st.sampled_from([1, 2]),
       rd=st.sampled_from([None, 4]), cin=st.sampled_from([12, 24]))
def test_timm_split_attn_is_the_split_attention_kind(radix, groups, width, stride, dilation, rd,
                                                     cin):
    module = randomized(SplitAttn(cin * groups, width * groups, kernel_size=3, stride=stride,
                                  padding=dilation, dilation=dilation, groups=groups,
                                  radix=radix, rd_channels=rd, norm_layer=nn.BatchNorm2d))
    args = layer_row("split_attention", module, (cin * groups, 9, 9))
    assert (args["radix"], args["groups"]) == (radix, groups)


def test_split_attention_figures_by_hand():
    """resnest50d's first split attention (64 channels at 56 x 56, radix 2):
    conv 3x3 groups 2 to 128, bn; fc1 64 -> 32 (timm: max(32, 64*2/4)), bn;
    fc2 32 -> 128."""
    kind = kinds()["split_attention"]
    a = kind.read_args({"radix": 2, "out": 64}, {})
    x = (64, 56, 56)
    y = kind.output_shape(a, x)
    assert y == (64, 56, 56)
    assert kind.params(a, x) == 3 * 3 * 32 * 128 + 2 * 128 + (64 * 32 + 32) + 2 * 32 \
        + (32 * 128 + 128)
    assert kind.macs(a, x, y) == 56 * 56 * 128 * 3 * 3 * 32 + 64 * 32 + 32 * 128
    module = SplitAttn(64, 64, radix=2, norm_layer=nn.BatchNorm2d)
    assert kind.params(a, x) == sum(p.numel() for p in module.parameters())


def test_a_split_attn_with_a_drop_block_or_other_norm_is_refused():
    from timm.layers import DropBlock2d
    kind = kinds()["split_attention"]
    call = SimpleNamespace(x=(16, 8, 8), x_torch=(16, 8, 8), args=(), kwargs={})
    with pytest.raises(NoMapping, match="DropBlock2d"):
        kind.from_torch(call, SplitAttn(16, 16, norm_layer=nn.BatchNorm2d,
                                        drop_layer=DropBlock2d))
    with pytest.raises(NoMapping, match="norms"):
        kind.from_torch(call, SplitAttn(16, 16, norm_layer=partial(nn.GroupNorm, 1)))


def test_resnest_imports_with_no_opaque_row():
    model = randomized(timm.create_model("resnest14d", pretrained=False, num_classes=7))
    imports_exactly(model, (3, 64, 64), {"split_attention"})


# -- selective kernel (SKNet) -------------------------------------------------

@settings(max_examples=8, deadline=None, database=None)
@given(paths=st.integers(1, 3), split=st.booleans(), stride=st.sampled_from([1, 2]),
       groups=st.sampled_from([1, 2]), dilation=st.sampled_from([1, 2]))
def test_timm_selective_kernel_is_the_selective_kernel_kind(paths, split, stride, groups,
                                                             dilation):
    kernels = [3 + 2 * i for i in range(paths)]
    cin = 6 * paths
    module = randomized(SelectiveKernel(cin, 8, kernel_size=kernels, stride=stride,
                                        dilation=dilation, groups=groups, rd_channels=4,
                                        split_input=split))
    args = layer_row("selective_kernel", module, (cin, 11, 11))
    assert (args["paths"], args["split_input"]) == (paths, split)


def test_a_selective_kernel_of_unlike_paths_is_refused():
    kind = kinds()["selective_kernel"]
    call = SimpleNamespace(x=(8, 8, 8), x_torch=(8, 8, 8), args=(), kwargs={})
    module = SelectiveKernel(8, 8, kernel_size=[3, 5], keep_3x3=False)  # 3x3 and 5x5
    with pytest.raises(NoMapping, match="path 1"):
        kind.from_torch(call, module)


def test_sknet_imports_with_no_opaque_row():
    model = randomized(timm.create_model("skresnet18", pretrained=False, num_classes=7))
    imports_exactly(model, (3, 64, 64), {"selective_kernel"})


# -- blur pool -----------------------------------------------------------------

@settings(max_examples=8, deadline=None, database=None)
@given(filt=st.integers(2, 5), stride=st.integers(1, 3),
       mode=st.sampled_from(["reflect", "constant", "replicate"]), size=st.integers(7, 12))
def test_timm_blur_pool_is_the_blur_pool_kind(filt, stride, mode, size):
    from timm.layers import BlurPool2d
    module = BlurPool2d(6, filt_size=filt, stride=stride, pad_mode=mode)
    args = layer_row("blur_pool", module, (6, size, size + 1))
    assert args["filter"] == filt and sum(p.numel() for p in module.parameters()) == 0


def test_blur_pool_figures_by_hand():
    """resnetblur50's stem blur: 64 channels at 112 x 112, a 3 x 3 binomial
    filter ([1, 2, 1] / 4 each way) at stride 2, reflect-padded by 1: 56 x 56,
    9 multiply-accumulates per output, no parameters."""
    kind = kinds()["blur_pool"]
    a = kind.read_args({}, {})
    x = (64, 112, 112)
    y = kind.output_shape(a, x)
    assert y == (64, 56, 56)
    assert (kind.params(a, x), kind.macs(a, x, y)) == (0, 64 * 56 * 56 * 9)
    built = kind.build(a, (1, 4, 4))
    assert built.filt[0, 0].tolist() == [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16],
                                         [1 / 16, 2 / 16, 1 / 16]]


def test_resnetblur_imports_with_no_opaque_row():
    model = randomized(timm.create_model("resnetblur18", pretrained=False, num_classes=7))
    imports_exactly(model, (3, 64, 64), {"blur_pool"})


# -- VGG's conv classifier -------------------------------------------------------

@settings(max_examples=6, deadline=None, database=None)
@given(kernel=st.integers(1, 4), size=st.integers(1, 6), ratio=st.sampled_from([1.0, 0.5]),
       act=st.sampled_from([nn.ReLU, nn.SiLU]))
def test_timm_vgg_conv_mlp_is_the_conv_mlp_kind(kernel, size, ratio, act):
    """Any map size: under k x k timm's forward pools it up to k first."""
    from timm.models.vgg import ConvMlp
    module = randomized(ConvMlp(6, 8, kernel_size=kernel, mlp_ratio=ratio, act_layer=act))
    args = layer_row("conv_mlp", module, (6, size, size + 1))
    assert args["kernel"] == kernel


def test_conv_mlp_figures_by_hand():
    """VGG-16's classifier as convs: 512 x 7 x 7 -> 4096 (7x7 conv) -> 4096
    (1x1): 102,764,544 + 16,781,312 params, as many MACs at 7 x 7."""
    kind = kinds()["conv_mlp"]
    a = kind.read_args({"out": 4096}, {})
    x = (512, 7, 7)
    y = kind.output_shape(a, x)
    assert y == (4096, 1, 1)
    assert kind.params(a, x) == 102_764_544 + 16_781_312
    assert kind.macs(a, x, y) == 7 * 7 * 512 * 4096 + 4096 * 4096


def test_vgg_imports_with_no_opaque_row():
    """timm's VGG (a small one: its head is 4096 wide whatever the features)."""
    from timm.models.vgg import VGG
    model = randomized(VGG([16, "M", 32, "M", 32, "M"], num_classes=7, mlp_ratio=1 / 16,
                           norm_layer=nn.BatchNorm2d))
    imports_exactly(model, (3, 64, 64), {"conv_mlp"})


# -- HGNetV2's learnable affine block ------------------------------------------

def test_timm_learnable_affine_block_is_the_scalar_affine_kind():
    from timm.models.hgnet import LearnableAffineBlock
    module = randomized(LearnableAffineBlock())
    args = layer_row("scalar_affine", module, (5, 4, 3))
    assert args == {"scale_value": 1.0, "bias_value": 0.0}
    kind = kinds()["scalar_affine"]
    a = kind.read_args(args, {})
    assert (kind.params(a, (5, 4, 3)), kind.flops(a, (5, 4, 3), (5, 4, 3))) == (2, 120)


def test_hgnetv2_imports_with_no_opaque_row():
    model = randomized(timm.create_model("hgnetv2_b0", pretrained=False, num_classes=7))
    imports_exactly(model, (3, 64, 64), {"scalar_affine"})


# -- FocalNet's focal modulation --------------------------------------------------

@settings(max_examples=6, deadline=None, database=None)
@given(level=st.integers(1, 3), window=st.sampled_from([3, 5]), post_norm=st.booleans(),
       normalize=st.booleans(), bias=st.booleans())
def test_timm_focal_modulation_is_the_focal_modulation_kind(level, window, post_norm,
                                                             normalize, bias):
    from timm.models.focalnet import FocalModulation
    module = randomized(FocalModulation(8, focal_window=window, focal_level=level, bias=bias,
                                        use_post_norm=post_norm,
                                        normalize_modulator=normalize))
    args = layer_row("focal_modulation", module, (8, 9, 7))
    assert (args["level"], args["post_norm"]) == (level, post_norm)


def test_focal_modulation_figures_by_hand():
    """focalnet_tiny_srf's first modulation: 96 channels at 56 x 56, levels of
    3x3 and 5x5: f 96 -> 195, h and proj 96 -> 96 (with biases), depthwise
    9*96 + 25*96."""
    kind = kinds()["focal_modulation"]
    a = kind.read_args({}, {})
    x = (96, 56, 56)
    assert kind.params(a, x) == (96 * 195 + 195) + 2 * (96 * 96 + 96) + 34 * 96
    assert kind.macs(a, x, x) == 56 * 56 * (96 * 195 + 2 * 96 * 96 + 34 * 96)


def test_focalnet_imports_with_no_opaque_row():
    from timm.models.focalnet import FocalNet
    model = randomized(FocalNet(depths=(1, 1), embed_dim=16, focal_levels=(2, 3),
                                focal_windows=(3, 3), num_classes=7,
                                use_post_norm_in_modulation=True))
    imports_exactly(model, (3, 64, 64), {"focal_modulation"})


# -- TResNet's space to depth ----------------------------------------------------

def test_timm_space_to_depth_is_the_space_to_depth_kind():
    from timm.layers.space_to_depth import SpaceToDepth
    args = layer_row("space_to_depth", SpaceToDepth(4), (3, 8, 12))
    kind = kinds()["space_to_depth"]
    a = kind.read_args(args, {})
    assert kind.output_shape(a, (3, 224, 224)) == (48, 56, 56)


def test_tresnet_imports_with_no_opaque_row():
    from timm.models.tresnet import TResNet
    model = randomized(TResNet([1, 1, 1, 1], num_classes=7, width_factor=0.25))
    imports_exactly(model, (3, 64, 64), {"space_to_depth"})


# -- gMLP's spatial gating unit --------------------------------------------------

def test_timm_spatial_gating_unit_is_the_spatial_gating_kind():
    from timm.models.mlp_mixer import SpatialGatingUnit
    module = randomized(SpatialGatingUnit(12, 10))
    layer_row("spatial_gating", module, (10, 12))
    kind = kinds()["spatial_gating"]
    a = kind.read_args({}, {})
    # gmlp_s16_224's: 196 tokens of 1536 -> 768; LayerNorm 2*768, proj 196*196 + 196
    assert kind.params(a, (196, 1536)) == 2 * 768 + 196 * 196 + 196
    assert kind.macs(a, (196, 1536), (196, 768)) == 768 * 196 * 196


def test_gmlp_imports_with_no_opaque_row():
    from timm.models.mlp_mixer import GatedMlp, MlpMixer, SpatialGatingBlock
    model = randomized(MlpMixer(num_classes=7, img_size=32, patch_size=8, num_blocks=2,
                                embed_dim=24, mlp_ratio=2, block_layer=SpatialGatingBlock,
                                mlp_layer=GatedMlp))
    imports_exactly(model, (3, 32, 32), {"spatial_gating"})


# -- MambaOut's gated CNN block ---------------------------------------------------

def test_gated_conv_block_figures_by_hand():
    """mambaout_femto's first block: 56 x 56 positions of 48, hidden 128:
    norm 2*48, fc1 48 -> 256, depthwise 7x7 on 48 (+ bias), fc2 128 -> 48."""
    kind = kinds()["gated_conv_block"]
    a = kind.read_args({"height": 56, "width": 56}, {})
    x = (56 * 56, 48)
    assert kind.params(a, x) == 2 * 48 + (48 * 256 + 256) + (49 * 48 + 48) + (128 * 48 + 48)
    assert kind.macs(a, x, x) == 56 * 56 * (48 * 256 + 49 * 48 + 128 * 48)


@pytest.mark.parametrize("ls_init_value", [None, 1e-2])
def test_mambaout_imports_with_no_opaque_row(ls_init_value):
    from timm.models.mambaout import MambaOut
    model = randomized(MambaOut(depths=(1, 1, 1, 1), dims=(16, 16, 24, 24), num_classes=7,
                                conv_ratio=0.5, ls_init_value=ls_init_value))
    imports_exactly(model, (3, 64, 64), {"gated_conv_block"})
