"""RMS norm (Zhang and Sennrich 2019): x / sqrt(mean(x^2) + eps), times a
learned weight, no centering and no shift; over each token's D, a vector's
features, or the channels at each position of a C x H x W map (timm's
RmsNorm2d). And timm's SimpleNorm, its sibling with the (unbiased) variance
in place of the mean square: x / sqrt(var(x) + eps) * weight, x not centred.

PyTorch's FlopCounterMode counts neither (MACs 0); their FLOPs are stated per
element below."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, kinds, register

FP32 = 4

# per element: the square and its accumulation (2), the multiply by the
# reciprocal root (1), the weight (1); the root per position is not counted
RMS_PER_ELEMENT = 3
# the variance (mean 1, subtract and square-accumulate 2), the multiply (1)
STD_PER_ELEMENT = 4

_TIMM = "timm.layers.norm."
_TIMM_ACT = "timm.layers.norm_act."
# timm's activation modules that call one function of a kind's (F.gelu)
_TIMM_ACTIVATIONS = {"timm.layers.activations.GELU": ("gelu", {}),
                     "timm.layers.activations.GELUTanh": ("gelu", {"approximate": "tanh"})}


def _width(x):
    """What is normalized: the channels of a map, a token's D, the features."""
    return x[-1] if len(x) == 2 else x[0]


def _positions(x):
    """Statistics kept per sample: one per position of a map or per token."""
    if len(x) == 3:
        return x[1] * x[2]
    return x[0] if len(x) == 2 else 1


@register
class RmsNorm(Kind):
    name = "rms_norm"
    op_relatives = {"layer_norm": "batch_norm"}
    torch_classes = ("RmsNorm2d",)  # in rms_norm_torch.py
    aliases = ("rmsnorm",)
    summary = ("RMS norm: x / sqrt(mean(x^2) + eps) * weight over each token's D, the "
               "features, or a map's channels at each position (timm's RmsNorm2d)")
    flops_rule = (f"{RMS_PER_ELEMENT + 1} per element (square and sum 2, scale 1, weight 1); "
                  f"{RMS_PER_ELEMENT} without the weight")
    per_element = RMS_PER_ELEMENT
    args = {
        "affine": Arg("bool", True, doc="a learned weight (elementwise_affine)"),
        "eps": Arg("float", 1e-6, min=0.0),
    }

    def params(self, a, x):
        return _width(x) if a.affine else 0

    def params_formula(self, a, x):
        return sym.plain(_width(x)) if a.affine else None

    def flops(self, a, x, y):
        return sym.norm(sym.prod(y) * (self.per_element + int(a.affine)))

    def cost(self, a, x, y):
        """A norm's pass: statistics, then a scale (rated as a layer norm)."""
        return (Cost("layer_norm", elements=sym.prod(x),
                     tensors=(_width(x),) if a.affine else ()),)

    def saved(self, a, x, y):
        # the input and one reciprocal root per position (fp32)
        return Saved(input=True, extra=((_positions(x), FP32),))

    def build(self, a, x):
        if len(x) == 3:
            from .rms_norm_torch import RmsNorm2d
            return RmsNorm2d(x[0], eps=a.eps, affine=a.affine)
        from torch import nn
        return nn.RMSNorm(_width(x), eps=a.eps, elementwise_affine=a.affine)

    torch_modules = ("torch.nn.RMSNorm", "archcalc.layers.rms_norm_torch.RmsNorm2d",
                     _TIMM + "RmsNorm", _TIMM + "RmsNormFp32", _TIMM + "RmsNorm2d",
                     _TIMM + "RmsNorm2dFp32", _TIMM_ACT + "RmsNormAct",
                     _TIMM_ACT + "RmsNormActFp32", _TIMM_ACT + "RmsNormAct2d",
                     _TIMM_ACT + "RmsNormAct2dFp32")   # from_torch reads them

    def from_torch(self, call, m):
        """nn.RMSNorm and timm's RmsNorm over the last dimension of tokens or a
        vector; RmsNorm2d (timm's, archcalc's) over a map's channels; timm's
        RmsNormAct(2d): that row, then its activation's (MobileNetV5)."""
        from .from_torch import NoMapping
        norm = _module_row(self.name, call, m)
        if not hasattr(m, "act"):
            return norm
        if type(m.drop).__name__ != "Identity":
            raise NoMapping(f"{type(m).__name__} with a {type(m.drop).__name__} after the norm")
        return norm + _act_rows(call, m.act)


@register
class SimpleNorm(RmsNorm):
    name = "simple_norm"
    torch_classes = ("SimpleNorm", "SimpleNorm2d")  # in rms_norm_torch.py
    aliases = ("simplenorm",)
    summary = ("timm's SimpleNorm: x / sqrt(var(x) + eps) * weight (unbiased variance, x "
               "not centred) over each token's D, the features, or a map's channels")
    flops_rule = (f"{STD_PER_ELEMENT + 1} per element (variance 3, scale 1, weight 1); "
                  f"{STD_PER_ELEMENT} without the weight")
    per_element = STD_PER_ELEMENT

    def build(self, a, x):
        from .rms_norm_torch import SimpleNorm, SimpleNorm2d
        cls = SimpleNorm2d if len(x) == 3 else SimpleNorm
        return cls(_width(x), eps=a.eps, affine=a.affine)

    torch_modules = ("archcalc.layers.rms_norm_torch.SimpleNorm",
                     "archcalc.layers.rms_norm_torch.SimpleNorm2d",
                     _TIMM + "SimpleNorm", _TIMM + "SimpleNormFp32", _TIMM + "SimpleNorm2d",
                     _TIMM + "SimpleNorm2dFp32")   # from_torch reads them


def _module_row(kind, call, m):
    """A module with normalized_shape, eps and an optional weight: a 2d class
    (by its name's '2d') over a map's channels, else the last dimension."""
    from .from_torch import NoMapping, require_chw, row
    shape = tuple(m.normalized_shape)
    over_map = "2d" in type(m).__name__
    if over_map:
        require_chw(call, type(m).__name__)
        fits = shape == (call.x[0],)
    else:
        fits = len(call.x) in (1, 2) and shape == (_width(call.x),) and \
            call.x_torch[-1] == shape[0]
    if not fits:
        raise NoMapping(f"{type(m).__name__} over {list(shape)} of a {list(call.x_torch)} "
                        "input (archcalc's normalizes a token's or vector's last dimension, "
                        "or a map's channels)")
    if m.eps is None:
        raise NoMapping(f"{type(m).__name__} with eps None (the dtype's epsilon)")
    return row(kind, affine=m.weight is not None, eps=float(m.eps))


def _act_rows(call, act):
    """The rows of a norm-act module's activation: none for nn.Identity, else
    the kind whose torch_modules name its class (or timm's GELU: gelu)."""
    from .from_torch import NoMapping
    cls = type(act)
    dotted = f"{cls.__module__}.{cls.__qualname__}"
    if dotted == "torch.nn.modules.linear.Identity":
        return []
    if dotted in _TIMM_ACTIVATIONS:
        kind, args = _TIMM_ACTIVATIONS[dotted]
        return [(kind, dict(args))]
    public = f"torch.nn.{cls.__name__}" if cls.__module__.startswith("torch.nn.") else dotted
    for kind in kinds().values():
        if public in vars(type(kind)).get("torch_modules", ()):
            return kind.from_torch(call, act)
    raise NoMapping(f"a norm's activation {cls.__name__} with no kind")
