"""MetaFormer's pieces (Yu et al. 2022, PoolFormer; 2023, ConvFormer and
CAFormer): StarReLU, s * relu(x)^2 + b with a learned scalar scale and bias;
squared ReLU, relu(x)^2 (So et al. 2021, Primer); and PoolFormer's token
mixer, an average pool of stride 1 minus its input (pool(x) - x: the block's
residual adds x back).

PyTorch's FlopCounterMode counts none of them (MACs 0): their FLOPs are
stated per element."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, register

_TIMM = "timm.models.metaformer."


@register
class StarReLU(Kind):
    name = "star_relu"
    nonlinear = True
    torch_classes = ("StarReLU",)  # in metaformer_torch.py
    aliases = ("starrelu",)
    summary = "StarReLU (MetaFormer): scale * relu(x)^2 + bias, scale and bias learned scalars"
    flops_rule = "4 per element (relu, square, scale, bias)"
    args = {
        "scale_value": Arg("float", 1.0, doc="the scale's initial value"),
        "bias_value": Arg("float", 0.0, doc="the bias's initial value"),
    }

    def params(self, a, x):
        return 2   # a scalar scale and a scalar bias (fixed ones are parameters too)

    def params_formula(self, a, x):
        return "1 + 1"

    def flops(self, a, x, y):
        return sym.norm(4 * sym.prod(y))

    def cost(self, a, x, y):
        """relu, a square, a multiply-add: rated as three elementwise passes."""
        return (Cost("relu", elements=sym.prod(x), scale=3.0, tensors=(1, 1)),)

    def saved(self, a, x, y):
        return Saved(input=True)   # relu(x) and its square's gradient need x

    def build(self, a, x):
        from .metaformer_torch import StarReLU as Module
        return Module(a.scale_value, a.bias_value)

    torch_modules = ("archcalc.layers.metaformer_torch.StarReLU",
                     _TIMM + "StarReLU")   # from_torch reads them

    def from_torch(self, call, m):
        """Its scale and bias as initialized (their values are the weights')."""
        from .from_torch import NoMapping, row
        if m.scale.numel() != 1 or m.bias.numel() != 1:
            raise NoMapping("StarReLU whose scale or bias is not one scalar")
        if hasattr(m, "init_args"):    # archcalc's own: as built
            scale, bias = m.init_args
        else:
            scale, bias = _initial(m.scale, 1.0), _initial(m.bias, 0.0)
        return row("star_relu", scale_value=float(scale), bias_value=float(bias))


def _initial(p, default):
    """A parameter's value where it has one (on the meta device: the default)."""
    return default if p.is_meta else float(p.detach().reshape(-1)[0])


@register
class SquaredReLU(Kind):
    name = "squared_relu"
    nonlinear = True
    torch_classes = ("SquaredReLU",)  # in metaformer_torch.py
    summary = "squared ReLU (Primer, MetaFormer): relu(x)^2"
    flops_rule = "2 per element (relu, square)"
    args = {}

    def flops(self, a, x, y):
        return sym.norm(2 * sym.prod(y))

    def cost(self, a, x, y):
        return (Cost("relu", elements=sym.prod(x), scale=2.0),)

    def saved(self, a, x, y):
        return Saved(input=True)

    def build(self, a, x):
        from .metaformer_torch import SquaredReLU as Module
        return Module()

    torch_modules = ("archcalc.layers.metaformer_torch.SquaredReLU",
                     _TIMM + "SquaredReLU")   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("squared_relu")


@register
class PoolMixer(Kind):
    name = "pool_mixer"
    inputs = "chw"
    torch_classes = ("PoolMixer",)  # in metaformer_torch.py
    primary = "kernel"
    aliases = ("pooling_mixer",)
    summary = ("PoolFormer's token mixer: avgpool(kernel, stride 1, padding kernel // 2, "
               "padding not counted)(x) - x")
    flops_rule = "kernel^2 + 1 per element (the window's sum and division, the subtraction)"
    args = {"kernel": Arg("int", 3, min=1, numeric=True, doc="odd: the output keeps the size")}

    def output_shape(self, a, x):
        if a.kernel % 2 == 0:
            from ..errors import SpecError
            raise SpecError(f"pool_mixer's kernel must be odd (pool(x) - x needs the "
                            f"pool to keep the size). Received: kernel={a.kernel}")
        return x

    def flops(self, a, x, y):
        return sym.norm(sym.prod(y) * (a.kernel * a.kernel + 1))

    def window(self, a, x):
        return (a.kernel, a.kernel), (1, 1)

    def cost(self, a, x, y):
        from .pool import pool_cost
        k = (a.kernel, a.kernel)
        return (pool_cost("avgpool", a, x, y, k, (1, 1)), Cost("add", elements=sym.prod(x)))

    def saved(self, a, x, y):
        return NO_SAVED   # the pool's and the subtraction's gradients need no tensor

    def build(self, a, x):
        from .metaformer_torch import PoolMixer as Module
        return Module(a.kernel)

    # timm's PoolFormer and EfficientFormer Pooling: the same forward, pool(x) - x
    torch_modules = ("archcalc.layers.metaformer_torch.PoolMixer",
                     _TIMM + "Pooling", "timm.models.efficientformer.Pooling")

    def from_torch(self, call, m):
        """A module whose forward is pool(x) - x, its pool an average of stride
        1 that keeps the size and does not count the padding."""
        from torch import nn
        from .from_torch import NoMapping, pair, require_chw, row
        require_chw(call, type(m).__name__)
        p = m.pool
        k = pair(p.kernel_size) if isinstance(p, nn.AvgPool2d) else None
        if not isinstance(k, int) or k % 2 == 0 or pair(p.stride) != 1 or \
                pair(p.padding) != k // 2 or p.count_include_pad or p.ceil_mode or \
                p.divisor_override is not None:
            raise NoMapping(f"{type(m).__name__} whose pool is not an odd average of stride "
                            "1, padding kernel // 2, the padding not counted")
        return row("pool_mixer", kernel=k)


NO_SAVED = Saved()
