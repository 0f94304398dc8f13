"""Global response normalization (Woo et al. 2023, ConvNeXt V2): each
channel's L2 norm over the positions, divided by the mean of those norms over
the channels, rescales the input; a learned weight and bias per channel,
added to the input (x + weight * (x * n) + bias). On a C x H x W map the
positions are H x W; on N x D tokens (ConvNeXt V2's MLP runs channels last)
the N tokens."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, register

# per element: the square and the sum of the norm (2), x * n (1), addcmul (2),
# the residual add (1); per channel: the root, the division by the mean, eps
PER_ELEMENT, PER_CHANNEL = 6, 3


@register
class GlobalResponseNorm(Kind):
    name = "grn"
    aliases = ("global_response_norm",)
    torch_classes = ("GlobalResponseNorm",)  # in grn_torch.py
    summary = ("global response norm (ConvNeXt V2): x + weight * x * n + bias, n = each "
               "channel's L2 norm over the positions / their mean over the channels")
    flops_rule = (f"{PER_ELEMENT} per element (norm 2, x*n 1, weight and bias 2, add 1) + "
                  f"{PER_CHANNEL} per channel (root, divide, eps)")
    args = {"eps": Arg("float", 1e-6, min=0.0)}

    @staticmethod
    def width(x):
        """The channels: of a map, or each token's D."""
        return x[-1] if len(x) == 2 else x[0]

    def check_input(self, x):
        if len(x) not in (2, 3):
            from ..errors import SpecError
            raise SpecError(f"grn needs a C x H x W map or N x D tokens, but its input is "
                            f"{' x '.join(map(sym.fmt_int, x))}")

    def params(self, a, x):
        return sym.norm(2 * self.width(x))

    def params_formula(self, a, x):
        return f"2*{sym.plain(self.width(x))}"

    def flops(self, a, x, y):
        return sym.norm(PER_ELEMENT * sym.prod(x) + PER_CHANNEL * self.width(x))

    def cost(self, a, x, y):
        """A norm's pass over the input (statistics, then a scale and shift)."""
        w = self.width(x)
        return (Cost("layer_norm", elements=sym.prod(x), tensors=(w, w)),)

    def saved(self, a, x, y):
        # the input (the norm's gradient), x * n (the weight's), the norms
        # and their normalized values per channel
        return Saved(input=True, extra=((sym.prod(x), None), (2 * self.width(x), None)))

    def build(self, a, x):
        from .grn_torch import GlobalResponseNorm as Module
        return Module(self.width(x), a.eps, channels_last=len(x) == 2)

    torch_modules = ("archcalc.layers.grn_torch.GlobalResponseNorm",
                     "timm.layers.grn.GlobalResponseNorm")   # from_torch reads them

    def from_torch(self, call, m):
        """archcalc's and timm's: channels last on tokens (timm's default, its
        (H, W, C) tensor is N x D tokens), channels first on a map."""
        from .from_torch import NoMapping, row
        x, width = call.x, m.weight.shape[0]
        channels_last = tuple(m.spatial_dim) != (2, 3)
        fits = (len(x) == 2 and x[1] == width and call.x_torch[-1] == width) if channels_last \
            else (len(x) == 3 and x[0] == width)
        if not fits:
            raise NoMapping(f"GlobalResponseNorm of {width} channels "
                            f"({'last' if channels_last else 'first'}) on a "
                            f"{list(call.x_torch)} input")
        return row("grn", eps=float(m.eps))
