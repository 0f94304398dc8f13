"""Normalization-activation layers that compute their statistics per sample:
EvoNorm (Liu et al. 2020; timm's EvoNorm2dS0, S0a and B0) and Filter Response
Normalization with its thresholded linear unit (Singh and Krishnan 2020;
timm's FilterResponseNormTlu2d). Each acts on a C x H x W map, with a weight
and a bias per channel (and v, or tau, per channel where it has an
activation).

EvoNorm-S0:  x * sigmoid(v * x) / group_std(x) * weight + bias (no activation:
             the affine alone);
EvoNorm-S0a: the same, the division by the group's std kept without the
             activation;
EvoNorm-B0:  x / max(sqrt(running_var + eps), v * x + instance_std(x)) * weight
             + bias (the running variance a buffer, the batch's in training);
FRN + TLU:   max(x / sqrt(mean(x^2 over H x W) + eps) * weight + bias, tau).

PyTorch's FlopCounterMode counts none of them (MACs 0): their FLOPs are
stated per element (sigmoid 3, a std or variance 3, as the other norms)."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4
_TIMM_EVO = "timm.layers.evo_norm."

# FLOPs per element, with and without the activation
EVO_FLOPS = {"s0": (11, 2), "s0a": (11, 6), "b0": (9, 2)}


@register
class EvoNorm(Kind):
    name = "evo_norm"
    inputs = "chw"
    op_relatives = {"group_norm": "batch_norm"}
    torch_classes = ("EvoNorm2d",)  # in evo_norm_torch.py
    aliases = ("evonorm",)
    primary = "variant"
    summary = ("EvoNorm (timm's EvoNorm2dS0, S0a, B0): a normalization and activation "
               "in one, per-sample statistics (S: over groups, B0: per channel)")
    flops_rule = ("per element: S0 11 (x*v, sigmoid 3, multiply, group std 3, divide, affine "
                  "2), S0a the same, B0 9 (instance std 3, x*v + std, max, divide, affine 2); "
                  "without the activation 2 (S0, B0: the affine) or 6 (S0a)")
    args = {
        "variant": Arg("str", "s0", choices=tuple(EVO_FLOPS)),
        "groups": Arg("int", 32, min=1, numeric=True,
                      doc="S0, S0a: the groups of channels of each std; must divide C"),
        "act": Arg("bool", True, doc="the activation (its v per channel)"),
        "eps": Arg("float", 1e-5, min=0.0),
        "momentum": Arg("float", 0.1, min=0.0, max=1.0, doc="B0's running variance"),
    }

    def output_shape(self, a, x):
        c = x[0]
        if a.variant != "b0" and isinstance(c, int) and c % a.groups:
            from ..errors import SpecError
            raise SpecError(f"evo_norm: groups={a.groups} must divide the channels. "
                            f"Received: channels={c}")
        return x

    def params(self, a, x):
        return sym.norm(x[0] * (2 + int(a.act)))

    def params_formula(self, a, x):
        return f"{2 + int(a.act)}*{sym.plain(x[0])}"

    def buffers(self, a, x):
        return x[0] if a.variant == "b0" else 0

    def flops(self, a, x, y):
        with_act, without = EVO_FLOPS[a.variant]
        return sym.norm(sym.prod(y) * (with_act if a.act else without))

    def cost(self, a, x, y):
        """A group norm's pass, the activation's sigmoid beside it (S0, S0a)."""
        norm = Cost("group_norm", elements=sym.prod(x), tensors=(x[0],) * (2 + int(a.act)))
        if a.act and a.variant != "b0":
            return (norm, Cost("sigmoid", elements=sym.prod(x)))
        return (norm,)

    def saved(self, a, x, y):
        # the input, and what the activation's and division's gradients need
        return Saved(input=True, extra=((sym.prod(x), None),) if a.act else ())

    def build(self, a, x):
        from .evo_norm_torch import EvoNorm2d
        return EvoNorm2d(x[0], a.variant, groups=a.groups, act=a.act, eps=a.eps,
                         momentum=a.momentum)

    torch_modules = ("archcalc.layers.evo_norm_torch.EvoNorm2d", _TIMM_EVO + "EvoNorm2dS0",
                     _TIMM_EVO + "EvoNorm2dS0a", _TIMM_EVO + "EvoNorm2dB0")

    def from_torch(self, call, m):
        """timm's classes by name (S0, S0a, B0), archcalc's by its variant."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, type(m).__name__)
        variant = getattr(m, "variant", None) or type(m).__name__[len("EvoNorm2d"):].lower()
        if m.weight.numel() != call.x[0]:
            raise NoMapping(f"{type(m).__name__} of {m.weight.numel()} channels on "
                            f"{call.x[0]}")
        return row("evo_norm", variant=variant, act=m.v is not None, eps=float(m.eps),
                   groups=int(getattr(m, "groups", 32)),   # B0 has none: it uses no groups
                   momentum=float(getattr(m, "momentum", 0.1)))


@register
class FilterResponseNorm(Kind):
    name = "filter_response_norm"
    inputs = "chw"
    op_relatives = {"group_norm": "batch_norm"}
    torch_classes = ("FilterResponseNormTlu2d",)  # in evo_norm_torch.py
    aliases = ("frn",)
    summary = ("filter response norm (FRN): x / sqrt(mean(x^2 over H x W) + eps) * weight "
               "+ bias, then the TLU max(., tau), tau learned per channel")
    flops_rule = "6 per element (square and mean 2, scale 1, affine 2, max 1); 5 without TLU"
    args = {
        "tlu": Arg("bool", True, doc="the thresholded linear unit (its tau per channel)"),
        "eps": Arg("float", 1e-5, min=0.0),
    }

    def params(self, a, x):
        return sym.norm(x[0] * (2 + int(a.tlu)))

    def params_formula(self, a, x):
        return f"{2 + int(a.tlu)}*{sym.plain(x[0])}"

    def flops(self, a, x, y):
        return sym.norm(sym.prod(y) * (5 + int(a.tlu)))

    def cost(self, a, x, y):
        return (Cost("group_norm", elements=sym.prod(x), tensors=(x[0],) * (2 + int(a.tlu))),)

    def saved(self, a, x, y):
        return Saved(input=True, extra=((sym.prod(x), None),) if a.tlu else ())

    def build(self, a, x):
        from .evo_norm_torch import FilterResponseNormTlu2d
        return FilterResponseNormTlu2d(x[0], apply_act=a.tlu, eps=a.eps)

    torch_modules = ("archcalc.layers.evo_norm_torch.FilterResponseNormTlu2d",
                     "timm.layers.filter_response_norm.FilterResponseNormTlu2d")

    def from_torch(self, call, m):
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, type(m).__name__)
        if m.weight.numel() != call.x[0]:
            raise NoMapping(f"{type(m).__name__} of {m.weight.numel()} channels on "
                            f"{call.x[0]}")
        return row("filter_response_norm", tlu=m.tau is not None, eps=float(m.eps))
