"""Import at the operation level: modules that call F.batch_norm, F.layer_norm,
F.group_norm, F.linear, F.conv2d, F.pad ... themselves with their own
parameters (timm's BatchNormAct2d, LayerNorm2d, GroupNormAct, Conv2dSame,
ResMLP's Affine) import as the rows their nn.Module forms give, each named by
the module whose parameters it reads (the state_dict keys).

Every figure is PyTorch's: params == sum(p.numel()), MACs == FlopCounterMode / 2
on the meta device, and where the spec builds a model with the original's
state_dict keys, the built model loads that state_dict strictly and computes
the same outputs.
"""
import copy
import inspect

import pytest

from archcalc.analysis import analyze
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.torch import importer  # noqa: E402

# refuse what has no kind (where import keeps it as a measured opaque row by default)
STRICT = {"strict": True} if "strict" in inspect.signature(importer.import_module).parameters \
    else {}


def meta_macs(model, shape) -> int:
    copied = copy.deepcopy(model).to("meta")
    # FlopCounterMode's module tracker wants a grad_fn on every input that
    # requires grad (CaiT and PiT pass a parameter on to a block); the count
    # does not depend on it
    for p in copied.parameters():
        p.requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        copied(torch.zeros(1, *shape, device="meta"))
    return counter.get_total_flops() // 2


def imported(model, shape, label="model"):
    """(Imported, Report) of a model; its params and MACs are PyTorch's."""
    model.eval()
    done = importer.import_module(model, shape, label=label, **STRICT)
    report = analyze(loads(done.text, file=label))
    assert report.totals["params"] == done.params == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == meta_macs(model, shape)
    return done, report


def rows(report) -> dict:
    """name -> kind (with its fused ops) of every row."""
    return {".".join(map(str, r.path)) or r.name: r.type for r in report.rows[1:]}


def same_function(model, shape, done):
    """The spec's built model loads the original's state_dict strictly and
    computes its outputs (real weights, on the CPU)."""
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, std=0.2)
    for name, b in model.named_buffers():
        if name.endswith("running_var"):
            b.uniform_(0.5, 2.0)
        elif name.endswith("running_mean"):
            b.normal_(0, 0.5)
    built = loads(done.text, file="model").build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = model(x)
        scale = max(1.0, expected.abs().max().item())   # float32's rounding, relative
        assert (built(x) - expected).abs().max().item() <= 1e-5 * scale


def timm_meta(name, **kwargs):
    with importer.empty_weights():
        return timm.create_model(name, pretrained=False, **kwargs).eval()


# -- batch norm: timm's BatchNormAct2d calls F.batch_norm itself ---------------


def tiny_bn_act():
    from timm.layers import BatchNormAct2d
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                         BatchNormAct2d(8, act_layer=nn.ReLU),
                         BatchNormAct2d(8, apply_act=False))


def test_batch_norm_act_is_a_batch_norm_row_named_by_its_module():
    model = tiny_bn_act()
    done, report = imported(model, (3, 8, 8))
    assert rows(report) == {"0": "conv", "1": "batch_norm", "act": "relu", "2": "batch_norm"}
    same_function(model, (3, 8, 8), done)


def test_densenet121_timm_imports_exactly():
    """timm's DenseNet-121 (BatchNormAct2d throughout): 7,978,856 params (Huang
    et al. 2017, torchvision's count too)."""
    model = timm_meta("densenet121")
    done, report = imported(model, (3, 224, 224), "timm:densenet121")
    assert done.params == 7_978_856


def test_cspdarknet53_imports_exactly():
    imported(timm_meta("cspdarknet53"), (3, 256, 256), "timm:cspdarknet53")


def test_batch_norm_with_batch_statistics_has_no_kind():
    """F.batch_norm(x, None, None, training=True): the statistics of the batch at
    inference, which archcalc's batch_norm (running statistics) is not."""
    class BatchStats(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.ones(4)), nn.Parameter(torch.zeros(4))

        def forward(self, x):
            return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True)
    with pytest.raises(importer.Unsupported, match="batch statistics"):
        importer.import_module(nn.Sequential(BatchStats()), (4, 4, 4), **STRICT)


# -- layer norm: timm's LayerNorm2d (permute, F.layer_norm, permute) ------------


def test_layer_norm_2d_is_a_layer_norm_row_on_channels_last_tokens():
    from timm.layers import LayerNorm2d
    model = nn.Sequential(nn.Conv2d(3, 8, 3), LayerNorm2d(8))
    done, report = imported(model, (3, 8, 8))
    assert list(rows(report).values()) == ["conv", "tokens", "layer_norm", "to_map"]
    assert rows(report)["1"] == "layer_norm"
    same_function(model, (3, 8, 8), done)


def test_convnext_atto_imports_exactly():
    """ConvNeXt-atto: LayerNorm2d in the stem, the downsamples and after the
    pool (a 1 x 1 map), a layer scale gamma read as gamma.reshape(1, -1, 1, 1)."""
    done, report = imported(timm_meta("convnext_atto"), (3, 224, 224), "timm:convnext_atto")
    assert done.params == 3_695_520
    assert "layer_scale" in {r.type for r in report.rows}


def test_a_layer_scale_kept_as_a_vector_loads_timms_weights():
    """timm's ConvNeXt keeps gamma as C values (gamma.reshape(1, -1, 1, 1) in
    its forward): the row says so (vector = true), so the spec's model holds
    the same shapes and loads the state_dict strictly."""
    model = timm.create_model("convnext_atto", pretrained=False, depths=(1, 1, 1, 1),
                              dims=(8, 8, 16, 16), num_classes=3).eval()
    done, report = imported(model, (3, 32, 32))
    assert "vector = true" in done.text
    same_function(model, (3, 32, 32), done)


# -- group norm: timm's GroupNormAct --------------------------------------------


def test_group_norm_act_is_a_group_norm_row():
    from timm.layers import GroupNormAct
    model = nn.Sequential(nn.Conv2d(3, 8, 3), GroupNormAct(8, num_groups=4,
                                                             act_layer=nn.SiLU))
    done, report = imported(model, (3, 8, 8))
    assert rows(report) == {"0": "conv", "1": "group_norm", "act": "silu"}
    assert "groups = 4" in done.text or "group_norm = 4" in done.text
    same_function(model, (3, 8, 8), done)


def test_efficientnet_b0_gn_imports_exactly():
    imported(timm_meta("efficientnet_b0_gn"), (3, 224, 224), "timm:efficientnet_b0_gn")


# -- padding: timm's Conv2dSame and MaxPool2dSame (F.pad, then F.conv2d / max pool) --


def test_conv2d_same_is_a_pad_row_then_a_conv_row_named_by_its_module():
    """TensorFlow's 'same' at stride 2 on an even input pads one more after
    (0 before, 1 after): a pad row, then the conv the module's weight makes."""
    from timm.layers import Conv2dSame
    model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.ReLU())
    done, report = imported(model, (3, 8, 8))
    assert "pad = true, height = [0, 1], width = [0, 1]" in done.text
    assert [(r.type, r.output_shape) for r in report.rows[1:3]] == [
        ("pad", (3, 9, 9)), ("conv", (8, 4, 4))]
    same_function(model, (3, 8, 8), done)


def test_max_pool_2d_same_pads_with_minus_infinity():
    from timm.layers.pool2d_same import MaxPool2dSame
    model = nn.Sequential(nn.Conv2d(3, 4, 1), MaxPool2dSame(3, stride=2))
    done, report = imported(model, (3, 8, 8))
    assert 'value = "-inf"' in done.text
    same_function(model, (3, 8, 8), done)


def test_tf_efficientnet_b0_imports_exactly():
    """Conv2dSame throughout (fx cannot trace its forward: the padding is
    computed from the input's size; the module maps whole, as a pad row and a
    conv row at this input): 5,288,548 params (Tan & Le 2019: 5.3M)."""
    done, _ = imported(timm_meta("tf_efficientnet_b0"), (3, 224, 224), "timm:tf_efficientnet_b0")
    assert done.params == 5_288_548


def test_tf_mixnet_s_imports_exactly():
    """MixNet-S with Conv2dSame in its mixed depthwise convs (Tan & Le 2019:
    4.1M params)."""
    done, _ = imported(timm_meta("tf_mixnet_s"), (3, 224, 224), "timm:tf_mixnet_s")
    assert done.params == 4_134_606


def test_avg_pool_2d_same():
    from timm.layers.pool2d_same import AvgPool2dSame
    model = nn.Sequential(nn.Conv2d(3, 4, 1), AvgPool2dSame(3, stride=2))
    done, report = imported(model, (3, 8, 8))
    assert [r.type for r in report.rows[1:]] == ["conv", "pad", "avgpool"]
    same_function(model, (3, 8, 8), done)


def test_pad_modules_map_back():
    for module, expected in ((nn.ZeroPad2d((1, 2, 0, 3)), "height = [0, 3], width = [1, 2]"),
                             (nn.ReflectionPad2d(2), 'mode = "reflect"'),
                             (nn.ConstantPad2d(1, 0.5), "value = 0.5")):
        done, _ = imported(nn.Sequential(nn.Conv2d(3, 4, 1), module), (3, 8, 8))
        assert expected in done.text


def test_a_negative_zero_pad_is_a_shift_that_computes_the_same():
    """NASNet's and PNASNet's ``ZeroPad2d((-1, 1, -1, 1))``: the first row and
    column cut off, a zero row and column added at the end."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ZeroPad2d((-1, 1, -1, 1)),
                          nn.AvgPool2d(1, stride=2))
    done, report = imported(model, (3, 7, 7))
    assert "height = [-1, 1], width = [-1, 1]" in done.text
    assert report.rows[2].output_shape == (4, 7, 7)
    assert report.rows[3].output_shape == (4, 4, 4)
    same_function(model, (3, 7, 7), done)


def test_a_negative_pad_other_than_constant_has_no_kind():
    class ReflectCut(nn.Module):
        def forward(self, x):
            return nn.functional.pad(x, (-1, 1, 0, 0), mode="reflect")
    with pytest.raises(importer.Unsupported, match="negative"):
        importer.import_module(nn.Sequential(nn.Conv2d(3, 4, 1), ReflectCut()), (3, 8, 8),
                               **STRICT)


def test_pad_of_the_channels_has_no_kind():
    class PadChannels(nn.Module):
        def forward(self, x):
            return nn.functional.pad(x, (0, 0, 0, 0, 1, 1))
    with pytest.raises(importer.Unsupported, match="padding"):
        importer.import_module(nn.Sequential(nn.Conv2d(3, 4, 1), PadChannels()), (3, 8, 8),
                               **STRICT)


# -- linear: F.linear with the module's own weight -----------------------------------


class FunctionalLinear(nn.Module):
    def __init__(self, n_in, n_out, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


def test_functional_linear_is_an_fc_row_named_by_its_module():
    model = nn.Sequential(nn.Flatten(), FunctionalLinear(48, 10), nn.ReLU(),
                          FunctionalLinear(10, 5, bias=False))
    done, report = imported(model, (3, 4, 4))
    assert [r.type for r in report.rows[1:]] == ["flatten", "fc", "relu", "fc"]
    assert report.rows[-1].params == 50
    same_function(model, (3, 4, 4), done)


# -- weight-standardized convs: timm's StdConv2d, ScaledStdConv2d (NF-ResNet) -------


@pytest.mark.parametrize("scaled", [False, True])
def test_std_conv_is_a_std_conv_row_with_its_gain(scaled):
    from timm.layers import ScaledStdConv2d, StdConv2d
    conv = ScaledStdConv2d(3, 8, 3, gamma=1.7) if scaled else StdConv2d(3, 8, 3, bias=True, eps=1e-5)
    model = nn.Sequential(conv, nn.ReLU())
    done, report = imported(model, (3, 8, 8))
    assert report.rows[1].type == "std_conv"
    # the gain: one parameter per output channel beyond the conv's 3*3*3*8 + 8
    assert report.rows[1].params == 3 * 3 * 3 * 8 + 8 * (2 if scaled else 1)
    same_function(model, (3, 8, 8), done)


def test_nf_resnet26_imports_exactly_and_computes_the_same():
    """NF-ResNet-26: ScaledStdConv2d throughout, the block's input scaled by
    beta (x * beta: a multiply row), no norm layer."""
    done, _ = imported(timm_meta("nf_resnet26"), (3, 224, 224), "timm:nf_resnet26")
    assert done.params == 15_995_176
    torch.manual_seed(0)
    model = timm.create_model("nf_resnet26", pretrained=False).eval()
    small = importer.import_module(model, (3, 64, 64), **STRICT)
    built = loads(small.text, file="nf").build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (built(x) - model(x)).abs().max().item() <= 1e-4


def test_nfnet_l0_imports_exactly():
    imported(timm_meta("nfnet_l0"), (3, 224, 224), "timm:nfnet_l0")


# -- ResMLP: Affine (torch.addcmul with the module's alpha and beta), token mixing ---


class AddcmulAffine(nn.Module):
    """beta + alpha * x per channel of a map, written with torch.addcmul."""

    def __init__(self, channels):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return torch.addcmul(self.beta, self.alpha, x)


def test_addcmul_with_the_modules_alpha_and_beta_is_a_channel_affine_row():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), AddcmulAffine(8))
    done, report = imported(model, (3, 8, 8))
    assert [(r.type, r.params) for r in report.rows[1:]] == [("conv", 224), ("channel_affine", 16)]
    same_function(model, (3, 8, 8), done)


def test_addcmul_of_a_whole_map_of_parameters_has_no_kind():
    """alpha of C x H x W is no per-channel affine: refused, not miscounted."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), AddcmulAffine(8))
    model[1].alpha = nn.Parameter(torch.ones(1, 8, 6, 6))
    with pytest.raises(importer.Unsupported, match="scale and shift of shape"):
        importer.import_module(model, (3, 8, 8), **STRICT)


def test_resmlp_12_imports_exactly_and_computes_the_same():
    """ResMLP-12 (Touvron et al. 2021): 15M params (15,350,872); each block's
    token mixing is a transpose, an fc over the 196 tokens and a transpose back,
    scaled by a layer scale on the tokens' width."""
    done, report = imported(timm_meta("resmlp_12_224"), (3, 224, 224), "timm:resmlp_12_224")
    assert done.params == 15_350_872
    assert {"channel_affine", "transpose_tokens", "layer_scale"} <= {r.type for r in report.rows}
    torch.manual_seed(0)
    model = timm.create_model("resmlp_12_224", pretrained=False).eval()
    same_function(model, (3, 224, 224), importer.import_module(model, (3, 224, 224), **STRICT))


# -- numbers and casts: x * a number, x / a number, x.to(dtype) --------------------


class ScaledByNumbers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x.float()) * 0.5
        return (y / 4).to(torch.float32)


def test_multiplication_and_division_by_numbers_are_multiply_rows():
    model = ScaledByNumbers()
    done, report = imported(model, (3, 8, 8))
    assert [r.type for r in report.rows[1:]] == ["conv", "multiply", "multiply"]
    assert "multiply = 0.5" in done.text and "multiply = 0.25" in done.text
    assert report.totals["flops"] == 2 * report.totals["macs"] + 2 * 4 * 6 * 6
    same_function(model, (3, 8, 8), done)


def test_division_by_a_tensor_has_no_kind():
    class Ratio(nn.Module):
        def forward(self, x):
            return x / (x.abs() + 1)
    with pytest.raises(importer.Unsupported):
        importer.import_module(nn.Sequential(nn.Conv2d(3, 4, 1), Ratio()), (3, 8, 8), **STRICT)


def test_a_fixed_filter_is_not_a_conv_weight():
    """A blur pool's filter is a buffer: a conv row would count it as params
    (densenetblur121d was 576 params over before this was refused)."""
    class Blur(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.channels = channels
            self.register_buffer("filt", torch.ones(channels, 1, 3, 3) / 9)

        def forward(self, x):
            return nn.functional.conv2d(x, self.filt, stride=2, groups=self.channels)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Blur(4))
    with pytest.raises(importer.Unsupported, match="fixed tensor"):
        importer.import_module(model, (3, 8, 8), **STRICT)
    if STRICT:     # the default import keeps it as a measured row: params still exact
        done = importer.import_module(model, (3, 8, 8))
        assert analyze(loads(done.text, file="blur")).totals["params"] == 16


class SkipInit(nn.Module):
    """NFNet's residual: the branch times a learned scalar gain, in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.skipinit_gain = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        out = self.conv(x)
        out.mul_(self.skipinit_gain)
        return out + x


def test_a_scalar_gain_is_one_learned_parameter():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), SkipInit())
    done, report = imported(model, (3, 8, 8))
    gain = [r for r in report.rows if r.type == "scalar_gain"]
    assert len(gain) == 1 and gain[0].params == 1
    same_function(model, (3, 8, 8), done)


def test_scaled_std_conv_same_pads_first():
    from timm.layers import ScaledStdConv2dSame
    model = nn.Sequential(ScaledStdConv2dSame(3, 8, 3, stride=2, padding="same"), nn.ReLU())
    done, report = imported(model, (3, 8, 8))
    assert [r.type for r in report.rows[1:3]] == ["pad", "std_conv"]
    same_function(model, (3, 8, 8), done)


def test_dm_nfnet_f0_imports_exactly():
    """NFNet-F0 (Brock et al. 2021: 71.5M params): ScaledStdConv2dSame, the
    skipinit gain, squeeze-excite on every block."""
    done, _ = imported(timm_meta("dm_nfnet_f0"), (3, 192, 192), "timm:dm_nfnet_f0")
    assert done.params == 71_489_284


# -- module mappers moved beside their kinds: the same rows from a module and its call --


class SoftmaxThreeWays(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.drop, self.soft = nn.Conv2d(3, 4, 1), nn.Dropout(0.1), nn.Softmax(1)

    def forward(self, x):
        x = nn.functional.dropout(self.drop(self.conv(x)), 0.2, training=False)
        return nn.functional.softmax(self.soft(x).softmax(1), dim=1)


def test_softmax_and_dropout_as_modules_calls_and_methods():
    done, report = imported(SoftmaxThreeWays(), (3, 4, 4))
    assert [r.type for r in report.rows[1:]] == ["conv", "dropout", "dropout", "softmax",
                                                 "softmax", "softmax"]
    assert "dropout = 0.1" in done.text and "dropout = 0.2" in done.text


class PoolsAndUpsampling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.up, self.pool = nn.Upsample(scale_factor=2), nn.AdaptiveMaxPool2d((4, None))

    def forward(self, x):
        x = self.pool(self.up(self.conv(x)))
        x = nn.functional.interpolate(x, size=(6, 6), mode="bilinear", align_corners=False)
        return nn.functional.adaptive_avg_pool2d(x, 1)


def test_pools_and_upsampling_as_modules_and_calls():
    done, report = imported(PoolsAndUpsampling(), (3, 4, 4))
    assert [(r.type, r.output_shape) for r in report.rows[1:]] == [
        ("conv", (4, 4, 4)), ("upsample", (4, 8, 8)), ("adaptive_maxpool", (4, 4, 8)),
        ("upsample", (4, 6, 6)), ("global_avgpool", (4, 1, 1))]
    same_function(PoolsAndUpsampling(), (3, 4, 4), done)


def test_convnextv2_atto_imports_exactly_and_computes_the_same():
    """ConvNeXt V2-atto (Woo et al. 2023: 3.7M params): a global response norm
    in every block's MLP, on channels-last tokens."""
    done, report = imported(timm_meta("convnextv2_atto"), (3, 224, 224), "timm:convnextv2_atto")
    assert done.params == 3_708_400 and "grn" in {r.type for r in report.rows}
    torch.manual_seed(0)
    model = timm.create_model("convnextv2_atto", pretrained=False).eval()
    same_function(model, (3, 64, 64), importer.import_module(model, (3, 64, 64), **STRICT))
