"""Normalization: batch norm, local response norm (AlexNet's LRN), layer norm,
group norm, instance norm, and ConvNeXt's layer scale."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4


@register
class BatchNorm(Kind):
    name = "batch_norm"
    cancels_bias = True
    aliases = ("bn", "batchnorm")
    summary = "batch norm over channels (C x H x W) or features (F): affine, running stats as buffers"
    flops_rule = "2 per element (scale and shift, statistics folded at inference)"
    args = {
        "affine": Arg("bool", True),
        "eps": Arg("float", 1e-5, min=0.0),
        "momentum": Arg("float", 0.1, min=0.0, max=1.0),
    }

    def params(self, a, x):
        return 2 * x[0] if a.affine else 0

    def params_formula(self, a, x):
        return f"2*{sym.plain(x[0])}" if a.affine else None

    def buffers(self, a, x):
        return 2 * x[0]  # running mean and variance

    def flops(self, a, x, y):
        return 2 * sym.prod(y)

    def cost(self, a, x, y):
        """Its calibrated op: one pass at inference (the statistics folded), the
        batch statistics and the normalization in training (the profile times
        each mode)."""
        return (Cost("batch_norm", elements=sym.prod(x),
                     tensors=(x[0], x[0]) if a.affine else ()),)

    def saved(self, a, x, y):
        # native_batch_norm keeps its input, the batch mean and inverse std
        # (fp32), and reads the running stats (buffers, counted once each).
        return Saved(input=True, per_batch=((4 * x[0], FP32),))

    def build(self, a, x):
        from torch import nn
        cls = nn.BatchNorm2d if len(x) == 3 else nn.BatchNorm1d
        return cls(x[0], eps=a.eps, momentum=a.momentum, affine=a.affine)

    torch_modules = ("torch.nn.BatchNorm2d", "torch.nn.BatchNorm1d")   # from_torch reads them

    def from_torch(self, call, m):
        """nn.BatchNorm2d/1d with running statistics -> batch_norm."""
        from torch import nn
        from .from_torch import NoMapping, row
        if not m.track_running_stats or m.momentum is None:
            raise NoMapping("BatchNorm without running statistics")
        if isinstance(m, nn.BatchNorm1d) and len(call.x) != 1:
            raise NoMapping("BatchNorm1d over a sequence")
        return row("batch_norm", affine=m.affine, eps=float(m.eps), momentum=float(m.momentum))


@register
class LocalResponseNorm(Kind):
    name = "lrn"
    op_relatives = {"lrn": "batch_norm"}
    aliases = ("local_response_norm",)
    primary = "size"
    summary = "local response norm across `size` neighbouring channels (AlexNet: size 5, k 2)"
    flops_rule = "2*size + 3 per element (squares and sums over the window, scale, shift, power, divide)"
    inputs = "chw"
    args = {
        "size": Arg("int", 5, min=1, numeric=True),
        "alpha": Arg("float", 1e-4, min=0.0),
        "beta": Arg("float", 0.75, min=0.0),
        "k": Arg("float", 2.0, min=0.0),
    }

    def flops(self, a, x, y):
        return sym.prod(y) * (2 * a.size + 3)

    def cost(self, a, x, y):
        """PyTorch composes it of several ops (square, pad, avg_pool3d, pow,
        div): its own calibrated table (size 5), the window's share beyond it."""
        return (Cost("lrn", elements=sym.prod(x), scale=max(1.0, (2 * a.size + 3) / 13)),)

    def saved(self, a, x, y):
        # PyTorch composes LRN from x*x, pad, avg_pool3d, pow and div; autograd
        # keeps the input, the padded squares (C + size - 1 channels), the
        # power's input and its result.
        c, h, w = x
        return Saved(input=True, extra=(((c + a.size - 1) * h * w, None),
                                        (sym.prod(x), None), (sym.prod(x), None)))

    # Under autocast LRN computes in fp32 and returns fp32: pow is on autocast's
    # fp32 list (CUDA), avg_pool3d too (CPU), and the division by that fp32
    # denominator promotes. So the power's input and result are kept in fp32
    # (on the CPU the padded squares too), and the fp32 output flows on: the
    # max pool after it keeps a fp32 input, and every conv that reads it keeps
    # its own low-precision cast (GoogLeNet's 18-20% under bf16 autocast).
    autocast = "fp32"

    def saved_autocast(self, a, x, y, device):
        c, h, w = x
        squares = FP32 if device == "cpu" else None
        return Saved(input=True, extra=(((c + a.size - 1) * h * w, squares),
                                        (sym.prod(x), FP32), (sym.prod(x), FP32)))

    def build(self, a, x):
        from torch import nn
        return nn.LocalResponseNorm(a.size, a.alpha, a.beta, a.k)

    torch_modules = ("torch.nn.LocalResponseNorm",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("lrn", size=m.size, alpha=float(m.alpha), beta=float(m.beta), k=float(m.k))


# -- normalizations that compute their statistics at inference too ----------
#
# FLOPs per element: mean 1 (accumulate), variance 2 (subtract, square-accumulate),
# normalize 2 (subtract the mean, multiply by 1/std), affine 2 (scale, shift):
# 7 with the affine, 5 without (the per-group square roots are not counted).

STATS_PER_ELEMENT = 5


def _norm_flops(y, scale: bool, shift: bool):
    return sym.norm(sym.prod(y) * (STATS_PER_ELEMENT + int(scale) + int(shift)))


def _norm_refusal(what: str, elements) -> None:
    if isinstance(elements, int) and elements == 1:
        from ..errors import SpecError
        raise SpecError(f"{what} holds a single value: its statistics normalize it to 0 "
                        "(PyTorch refuses it: expected more than 1 value)")


@register
class LayerNorm(Kind):
    """Layer norm over the channels of each position of a C x H x W map
    (ConvNeXt's LayerNorm2d: permute to H x W x C, normalize C, permute back),
    over the width D of each of N x D tokens, or over the features of an F
    vector (nn.LayerNorm)."""
    name = "layer_norm"
    op_relatives = {"layer_norm": "batch_norm"}
    torch_classes = ('LayerNorm2d',)  # in norm_torch.py
    aliases = ("ln", "layernorm")
    summary = ("layer norm over the channels at each position (ConvNeXt's LayerNorm2d), "
               "over each token's D, or over the features (F)")
    flops_rule = "7 per element (mean 1, variance 2, normalize 2, affine 2); 5 without affine"
    args = {
        "affine": Arg("bool", True, doc="learned scale and shift (elementwise_affine)"),
        "bias": Arg("bool", True, doc="the shift of the affine"),
        "eps": Arg("float", 1e-5, min=0.0),
    }

    @staticmethod
    def width(x):
        """What is normalized: the channels of a map, a token's D, the features."""
        return x[-1] if len(x) == 2 else x[0]

    def params(self, a, x):
        return sym.norm(self.width(x) * (int(a.affine) + int(a.affine and a.bias)))

    def params_formula(self, a, x):
        if not a.affine:
            return None
        d = sym.plain(self.width(x))
        return f"2*{d}" if a.bias else d

    def flops(self, a, x, y):
        return _norm_flops(y, a.affine, a.affine and a.bias)

    def cost(self, a, x, y):
        """Its calibrated op on tokens; over a map's channels a permute before
        and after (two copies)."""
        p = self.params(a, x)
        tensors = (self.width(x),) * (p // self.width(x)) if isinstance(p, int) and p else ()
        norm = Cost("layer_norm", elements=sym.prod(x), tensors=tensors)
        if len(x) == 3:
            return (Cost("copy", elements=sym.prod(x)), norm, Cost("copy", elements=sym.prod(x)))
        return (norm,)

    def saved(self, a, x, y):
        # native_layer_norm keeps its input and a mean and 1/std per position
        positions = x[1] * x[2] if len(x) == 3 else (x[0] if len(x) == 2 else 1)
        return Saved(input=True, extra=((sym.norm(2 * positions), FP32),))

    def build(self, a, x):
        from torch import nn
        if len(x) == 3:
            from .norm_torch import LayerNorm2d
            return LayerNorm2d(x[0], eps=a.eps, elementwise_affine=a.affine,
                               bias=a.bias)
        return nn.LayerNorm(self.width(x), eps=a.eps, elementwise_affine=a.affine, bias=a.bias)

    torch_modules = ("torch.nn.LayerNorm", "archcalc.layers.norm_torch.LayerNorm2d",
                     "torchvision.models.convnext.LayerNorm2d")   # from_torch reads them

    def from_torch(self, call, m):
        """nn.LayerNorm over the last dimension of tokens or a vector; a
        LayerNorm2d (archcalc's, torchvision's ConvNeXt's) over a map's channels."""
        from .from_torch import NoMapping, require_chw, row
        if type(m).__name__ == "LayerNorm2d":
            require_chw(call, "LayerNorm2d")
            return row("layer_norm", affine=m.elementwise_affine,
                       bias=m.elementwise_affine and m.bias is not None, eps=float(m.eps))
        shape = tuple(m.normalized_shape)
        x = call.x
        width = x[-1] if len(x) == 2 else (x[0] if len(x) == 1 else None)
        if len(shape) != 1 or width is None or shape[0] != width or call.x_torch[-1] != width:
            raise NoMapping(f"LayerNorm over {list(shape)} of a {list(call.x_torch)} input "
                            "(archcalc's normalizes each token's or vector's last dimension)")
        return row("layer_norm", affine=m.elementwise_affine,
                   bias=m.elementwise_affine and m.bias is not None, eps=float(m.eps))


@register
class GroupNorm(Kind):
    name = "group_norm"
    torch_classes = ("GroupNormNoBias",)  # in norm_torch.py
    op_relatives = {"group_norm": "batch_norm"}
    aliases = ("gn", "groupnorm")
    primary = "groups"
    summary = "group norm: statistics over each group of C/groups channels (and H x W)"
    flops_rule = "7 per element (mean 1, variance 2, normalize 2, affine 2); 5 without affine"
    args = {
        "groups": Arg("int", min=1, numeric=True, doc="number of groups; must divide C"),
        "affine": Arg("bool", True),
        "bias": Arg("bool", True, doc="the affine's shift (MetaFormer's GroupNorm1NoBias: none)"),
        "eps": Arg("float", 1e-5, min=0.0),
    }

    def output_shape(self, a, x):
        c = x[0]
        if isinstance(c, int) and c % a.groups:
            from ..errors import SpecError
            raise SpecError(f"groups={a.groups} must divide the channels. "
                            f"Received: channels={c}")
        per_group = sym.exact_div(c, a.groups) * sym.prod(x[1:])
        _norm_refusal(f"each of the {a.groups} groups", per_group)
        return x

    def params(self, a, x):
        return sym.norm(x[0] * (int(a.affine) + int(a.affine and a.bias)))

    def params_formula(self, a, x):
        if not a.affine:
            return None
        return f"2*{sym.plain(x[0])}" if a.bias else sym.plain(x[0])

    def flops(self, a, x, y):
        return _norm_flops(y, a.affine, a.affine and a.bias)

    def cost(self, a, x, y):
        return (Cost("group_norm", elements=sym.prod(x),
                     tensors=(x[0],) * (int(a.affine) + int(a.affine and a.bias))),)

    def saved(self, a, x, y):
        # native_group_norm keeps its input and a mean and 1/std per group
        return Saved(input=True, extra=((2 * a.groups, FP32),))

    def build(self, a, x):
        from torch import nn
        if a.affine and not a.bias:
            from .norm_torch import GroupNormNoBias
            return GroupNormNoBias(a.groups, x[0], eps=a.eps)
        return nn.GroupNorm(a.groups, x[0], eps=a.eps, affine=a.affine)

    torch_modules = ("torch.nn.GroupNorm",
                     "archcalc.layers.norm_torch.GroupNormNoBias")   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("group_norm", groups=m.num_groups, affine=m.affine,
                   bias=m.affine and m.bias is not None, eps=float(m.eps))


@register
class InstanceNorm(Kind):
    name = "instance_norm"
    aliases = ("instancenorm",)
    summary = "instance norm: statistics over H x W of each channel of each sample"
    flops_rule = "7 per element (mean 1, variance 2, normalize 2, affine 2); 5 without affine"
    inputs = "chw"
    args = {
        "affine": Arg("bool", False, doc="PyTorch's default: off"),
        "track_running_stats": Arg("bool", False),
        "eps": Arg("float", 1e-5, min=0.0),
        "momentum": Arg("float", 0.1, min=0.0, max=1.0),
    }

    def output_shape(self, a, x):
        _norm_refusal("each channel's H x W map", sym.prod(x[1:]))
        return x

    def params(self, a, x):
        return 2 * x[0] if a.affine else 0

    def params_formula(self, a, x):
        return f"2*{sym.plain(x[0])}" if a.affine else None

    def buffers(self, a, x):
        return 2 * x[0] if a.track_running_stats else 0

    def flops(self, a, x, y):
        return _norm_flops(y, a.affine, a.affine)

    def cost(self, a, x, y):
        """A batch norm over (1, N*C, H, W): statistics at inference too, as
        a batch norm in training computes them."""
        return (Cost("group_norm", elements=sym.prod(x),
                     tensors=(x[0], x[0]) if a.affine else ()),)

    def saved(self, a, x, y):
        # PyTorch runs a batch norm over (1, N*C, H, W): it keeps the input, a mean
        # and 1/std per channel and sample, and the weight and running stats
        # repeated once per sample (tensors of the model's dtype)
        c = x[0]
        repeated = int(a.affine) + 2 * int(a.track_running_stats)
        extra = ((2 * c, FP32),) + (((repeated * c, None),) if repeated else ())
        return Saved(input=True, extra=extra)

    def build(self, a, x):
        from torch import nn
        return nn.InstanceNorm2d(x[0], eps=a.eps, momentum=a.momentum, affine=a.affine,
                                 track_running_stats=a.track_running_stats)

    torch_modules = ("torch.nn.InstanceNorm2d",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("instance_norm", affine=m.affine, track_running_stats=m.track_running_stats,
                   eps=float(m.eps),   # momentum None (a cumulative average): 0.1
                   momentum=0.1 if m.momentum is None else float(m.momentum))


@register
class LayerScale(Kind):
    """ConvNeXt's (and CaiT's) learned per-channel scale of a residual branch."""
    name = "layer_scale"
    flat = True
    torch_classes = ('LayerScale',)  # in norm_torch.py
    primary = "init"
    summary = "x times a learned per-channel gamma (ConvNeXt), initialized to init"
    flops_rule = "1 per element"
    args = {"init": Arg("float", 1e-6, doc="initial value of gamma"),
            "vector": Arg("bool", False, doc="on a map, gamma kept as C values (timm's "
                                             "LayerScale2d) rather than C x 1 x 1")}

    @staticmethod
    def width(x):
        """What is scaled: the channels of a map, a token's D (CaiT, ResMLP)."""
        return x[-1] if len(x) == 2 else x[0]

    def params(self, a, x):
        return self.width(x)

    def flops(self, a, x, y):
        return sym.prod(y)

    def cost(self, a, x, y):
        return (Cost("mul", elements=sym.prod(x), tensors=(self.width(x),)),)

    def saved(self, a, x, y):
        return Saved(input=True)  # gamma's gradient needs x

    def build(self, a, x):
        from .norm_torch import LayerScale as Module
        return Module(self.width(x), a.init, 1 if a.vector else len(x))

    torch_modules = ("archcalc.layers.norm_torch.LayerScale",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        channels, init, rank = m.init_args
        return row("layer_scale", init=float(init),
                   **({"vector": True} if rank == 1 and len(call.x) == 3 else {}))
