"""Fully connected layers and flatten."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, Weighted, register


def global_window(x):
    """A layer that sees its whole input: the window is the input's H x W."""
    if len(x) == 3:
        return (x[1], x[2]), (x[1], x[2])
    return (1, 1), (1, 1)


@register
class FullyConnected(Weighted, Kind):
    name = "fc"
    fully_connected = True
    bias_redundant_before_norm = True
    aliases = ("linear", "dense", "fully_connected")
    primary = "out"
    summary = ("fully connected: out features (a C x H x W input is flattened first, as in the "
               "lecture tables; on N x D tokens it acts on each token)")
    flops_rule = "2 x MACs; MACs = in_features * out_features"
    args = {
        "out": Arg("int", min=1, doc="output features"),
        "bias": Arg("bool", True),
    }

    def output_shape(self, a, x):
        return (x[0], a.out) if len(x) == 2 else (a.out,)

    def fan_in(self, x):
        return x[1] if len(x) == 2 else sym.prod(x)

    def params(self, a, x):
        return sym.norm(self.fan_in(x) * a.out + (a.out if a.bias else 0))

    def params_formula(self, a, x):
        f = sym.plain
        fan_in = f(x[-1]) if len(x) < 3 else "(" + "*".join(f(d) for d in (x[1], x[2], x[0])) + ")"
        return f"{fan_in}*{f(a.out)}" + (f" + {f(a.out)}" if a.bias else "")

    def macs(self, a, x, y):
        return sym.norm(sym.prod(x) * a.out)   # per token too: N*D*out

    def macs_formula(self, a, x, y):
        f = sym.plain
        dims = (x[1], x[2], x[0]) if len(x) == 3 else x  # H*W*C, as the lecture writes it
        return "(" + "*".join(f(d) for d in dims) + f")*{f(a.out)}"

    def window(self, a, x):
        return global_window(x)

    def cost(self, a, x, y):
        """A GEMM: M = batch (times the tokens), N = out, K = in; rated by the
        calibrated GEMMs nearest in shape, at least the time to read the weights."""
        m = x[0] if len(x) == 2 else 1
        return (Cost("linear", gemm=(m, a.out, self.fan_in(x)),
                     tensors=(self.fan_in(x) * a.out,) + ((a.out,) if a.bias else ())),)

    def saved(self, a, x, y):
        return Saved(input=True)

    def build(self, a, x):
        from torch import nn
        linear = nn.Linear(self.fan_in(x), a.out, bias=a.bias)
        return nn.Sequential(nn.Flatten(), linear) if len(x) == 3 else linear

    torch_modules = ("torch.nn.Linear",)   # from_torch maps these back

    def from_torch(self, call, m):
        """nn.Linear -> fc, on a vector only: on a C x H x W map nn.Linear acts
        on the last dimension, where fc flattens."""
        from .from_torch import NoMapping, row
        if len(call.x) == 3:
            raise NoMapping("Linear on a C x H x W map (it acts on the last dimension)")
        return row("fc", out=m.out_features, bias=m.bias is not None)


@register
class Flatten(Kind):
    name = "flatten"
    not_mapped_back = ("nn.Flatten is a reshape: the importer's layout stage classifies it on "
                       "an index tensor, as it does x.flatten(1) and x.view(n, -1)")
    summary = "C x H x W -> C*H*W (a view: no copy, nothing saved)"
    flops_rule = "0 (a view)"
    view = True
    args = {}

    def output_shape(self, a, x):
        return (sym.prod(x),)

    def cost(self, a, x, y):
        return (Cost("view", backward=False),)

    def window(self, a, x):
        return global_window(x)

    def build(self, a, x):
        from torch import nn
        return nn.Flatten()
