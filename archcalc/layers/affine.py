"""Learned scales: a scale and shift per channel, x * alpha + beta (ResMLP's
Affine, Touvron et al. 2021, in place of a norm layer: no statistics; on a
C x H x W map each channel, on N x D tokens each token's D features, on a
vector its features), and one learned gain for the whole tensor (NFNet's
skipinit gain, ReZero's alpha)."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, register


@register
class Affine(Kind):
    name = "channel_affine"
    aliases = ("scale_shift",)
    torch_classes = ("Affine",)  # in affine_torch.py
    summary = ("x * alpha + beta, a learned scale and shift per channel (ResMLP's Affine, "
               "in place of a norm)")
    flops_rule = "2 per element (a multiply and an add: addcmul)"

    @staticmethod
    def width(x):
        """What is scaled: the channels of a map, a token's D, the features."""
        return x[-1] if len(x) == 2 else x[0]

    def params(self, a, x):
        return sym.norm(2 * self.width(x))

    def params_formula(self, a, x):
        return f"2*{sym.plain(self.width(x))}"

    def flops(self, a, x, y):
        return sym.norm(2 * sym.prod(y))

    def cost(self, a, x, y):
        """One pass over the input (addcmul), reading alpha and beta."""
        w = self.width(x)
        return (Cost("mul", elements=sym.prod(x), tensors=(w, w)),)

    def saved(self, a, x, y):
        return Saved(input=True)   # alpha's gradient needs x

    def build(self, a, x):
        from .affine_torch import Affine as Module
        return Module(self.width(x), len(x))

    torch_modules = ("archcalc.layers.affine_torch.Affine", "timm.models.mlp_mixer.Affine")

    def from_torch(self, call, m):
        """archcalc's Affine and timm's (ResMLP): alpha and beta of the width."""
        from .affine_torch import check_affine
        check_affine(call, m.alpha, m.beta)
        from .from_torch import row
        return row("channel_affine")


@register
class ScalarGain(Kind):
    """x times one learned scalar: a residual branch scaled by a gain that
    starts at 0 (Brock et al.'s skipinit in NFNets; ReZero)."""
    name = "scalar_gain"
    aliases = ("skipinit_gain", "rezero")
    flat = True
    torch_classes = ("ScalarGain",)  # in affine_torch.py
    primary = "init"
    summary = "x times one learned scalar gain (NFNet's skipinit, ReZero), initialized to init"
    flops_rule = "1 per element"
    args = {"init": Arg("float", 0.0, doc="initial value of the gain")}

    def params(self, a, x):
        return 1

    def flops(self, a, x, y):
        return sym.prod(y)

    def cost(self, a, x, y):
        return (Cost("mul", elements=sym.prod(x), tensors=(1,)),)

    def saved(self, a, x, y):
        return Saved(input=True)   # the gain's gradient needs x

    def build(self, a, x):
        from .affine_torch import ScalarGain as Module
        return Module(a.init)

    torch_modules = ("archcalc.layers.affine_torch.ScalarGain",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("scalar_gain", init=float(m.init_args[0]))


@register
class ScalarAffine(Kind):
    """x times one learned scale plus one learned bias, for the whole tensor
    (timm's LearnableAffineBlock after HGNetV2's activations)."""
    name = "scalar_affine"
    aliases = ("learnable_affine",)
    torch_classes = ("ScalarAffine",)  # in affine_torch.py
    primary = "scale_value"
    summary = "x * scale + bias, one learned scalar each (HGNetV2's learnable affine block)"
    flops_rule = "2 per element (a multiply and an add)"
    # (scale is a structure key of the spec: the initial values are *_value)
    args = {"scale_value": Arg("float", 1.0, doc="the scale's initial value"),
            "bias_value": Arg("float", 0.0, doc="the bias's initial value")}

    def params(self, a, x):
        return 2

    def flops(self, a, x, y):
        return sym.norm(2 * sym.prod(y))

    def cost(self, a, x, y):
        return (Cost("mul", elements=sym.prod(x), tensors=(1,)),
                Cost("add", elements=sym.prod(x), tensors=(1,)))

    def saved(self, a, x, y):
        return Saved(input=True)   # the scale's gradient needs x

    def build(self, a, x):
        from .affine_torch import ScalarAffine as Module
        return Module(a.scale_value, a.bias_value)

    torch_modules = ("archcalc.layers.affine_torch.ScalarAffine",
                     "timm.models.hgnet.LearnableAffineBlock")

    def from_torch(self, call, m):
        """archcalc's and timm's: a scale and a bias of one value each (the
        spec holds their initial values, timm's 1 and 0; the weights are the
        state dict's)."""
        from .from_torch import NoMapping, row
        if m.scale.numel() != 1 or m.bias.numel() != 1 or m.scale.dim() > 1 or m.bias.dim() > 1:
            raise NoMapping(f"a learnable affine of shapes {list(m.scale.shape)} and "
                            f"{list(m.bias.shape)} (scalar_affine holds one value each)")
        scale, bias = getattr(m, "init_args", (1.0, 0.0))   # timm's initial values
        return row("scalar_affine", scale_value=float(scale), bias_value=float(bias))
