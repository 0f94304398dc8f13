"""Squeeze-and-excitation (Hu et al. 2017): global average pool, fc to C/r,
ReLU, fc back to C, sigmoid, and the input rescaled channel by channel."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Kind, Saved, register


@register
class SqueezeExcitation(Kind):
    name = "se"
    aliases = ("squeeze_excitation",)
    primary = "reduction"
    summary = "squeeze-and-excitation: x * sigmoid(fc(relu(fc(gap(x))))), hidden = C / reduction"
    flops_rule = ("2 x MACs (the two fc) + H*W*C (pool) + hidden (relu) + 3C (sigmoid) "
                  "+ H*W*C (rescale)")
    inputs = "chw"
    args = {
        "reduction": Arg("int", 16, min=1),
        "hidden": Arg("int", None, min=1, doc="overrides C / reduction"),
    }

    def hidden(self, a, x):
        return a.hidden if a.hidden is not None else sym.floordiv(x[0], a.reduction)

    def output_shape(self, a, x):
        h = self.hidden(a, x)
        if isinstance(h, int) and h < 1:
            raise SpecError(f"se: {sym.plain(x[0])} channels / reduction {a.reduction} "
                            f"leaves {h} hidden units; use a smaller reduction or hidden = N")
        return x

    def params(self, a, x):
        c, h = x[0], self.hidden(a, x)
        return sym.norm(2 * c * h + h + c)

    def params_formula(self, a, x):
        c, h = sym.plain(x[0]), sym.plain(self.hidden(a, x))
        return f"({c}*{h} + {h}) + ({h}*{c} + {c})"

    def macs(self, a, x, y):
        return sym.norm(2 * x[0] * self.hidden(a, x))

    def flops(self, a, x, y):
        c = x[0]
        return sym.norm(2 * self.macs(a, x, y) + 2 * sym.prod(x) + self.hidden(a, x) + 3 * c)

    def saved(self, a, x, y):
        # the pool and the rescale keep x; the fcs keep the pooled vector and
        # the ReLU output; sigmoid and rescale keep the gate
        c, h = x[0], self.hidden(a, x)
        return Saved(input=True, extra=((c, None), (h, None), (c, None)))

    def build(self, a, x):
        from ..torch.modules import SqueezeExcitation as Module
        return Module(x[0], self.hidden(a, x))
