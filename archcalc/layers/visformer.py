"""Visformer's attention on a map (Chen et al. 2021, timm's visformer
Attention): a 1x1 conv without a bias to q, k and v of A = heads x head_dim
channels each (head_dim = C / heads x head_dim_ratio, so A may differ from
C), softmax(q k^T / sqrt(head_dim)) v per head over all N = H*W positions, a
1x1 conv without a bias back to C. Receptive field: the whole map.

MACs (FlopCounterMode's): qkv N*C*3A, scores and weighted values 2*N^2*A,
projection N*A*C."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register


@register
class VisformerAttention(Kind):
    name = "visformer_attention"
    torch_classes = ("VisformerAttention",)  # in visformer_torch.py
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("Visformer's attention over every position of a map: 1x1 convs without "
               "biases to q, k, v of heads x head_dim channels and back to C")
    flops_rule = ("2 x MACs + 3 per attention score (scale, softmax: 3*heads*N^2); MACs = "
                  "N*C*3A + 2*N^2*A + N*A*C, A = heads*head_dim, N = H*W")
    args = {"heads": Arg("int", min=1, doc="attention heads"),
            "head_dim": Arg("int", None, min=1, numeric=True,
                            doc="channels per head (default C / heads)")}
    arg_examples = {"heads": (1, 2), "head_dim": (None, 1, 3)}

    @staticmethod
    def width(a, x):
        """A = heads x head_dim."""
        if a.head_dim is None:
            if isinstance(x[0], int) and x[0] % a.heads:
                raise SpecError(f"visformer_attention: {x[0]} channels do not divide into "
                                f"{a.heads} heads; give head_dim. Received: heads={a.heads}")
            return x[0]
        return sym.norm(a.heads * a.head_dim)

    def output_shape(self, a, x):
        self.width(a, x)
        return x

    def params(self, a, x):
        return sym.norm(4 * x[0] * self.width(a, x))

    def params_formula(self, a, x):
        return f"3*{sym.plain(x[0])}*{sym.plain(self.width(a, x))} + " \
               f"{sym.plain(self.width(a, x))}*{sym.plain(x[0])}"

    def macs(self, a, x, y):
        c, h, w = x
        n, width = h * w, self.width(a, x)
        return sym.norm(n * c * 3 * width + 2 * n * n * width + n * width * c)

    def flops(self, a, x, y):
        c, h, w = x
        return sym.norm(2 * self.macs(a, x, y) + 3 * a.heads * (h * w) ** 2)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        return (x[1], x[2]), (1, 1)

    def cost(self, a, x, y):
        """qkv, the scores, the softmax, the weighted values, the projection."""
        c, h, w = x
        n, width = sym.norm(h * w), self.width(a, x)
        return (Cost("linear", gemm=(n, 3 * width, c), tensors=(3 * c * width,)),
                Cost("linear", gemm=(n, n, width), backward=True),
                Cost("softmax", elements=sym.norm(a.heads * n * n)),
                Cost("linear", gemm=(n, width, n)),
                Cost("linear", gemm=(n, c, width), tensors=(width * c,)))

    def saved(self, a, x, y):
        # the input, q, k, v, the softmax's output, the weighted values (a
        # merge asks with a dummy shape: no check here)
        n = sym.norm(x[-1] * x[-2]) if len(x) == 3 else x[0]
        width = x[0] if a.head_dim is None else sym.norm(a.heads * a.head_dim)
        return Saved(input=True, extra=((sym.norm(4 * n * width + a.heads * n * n), None),))

    def build(self, a, x):
        from .visformer_torch import VisformerAttention as Module
        width = self.width(a, x)
        return Module(x[0], a.heads, sym.exact_div(width, a.heads))

    torch_modules = ("archcalc.layers.visformer_torch.VisformerAttention",
                     "timm.models.visformer.Attention")

    def from_torch(self, call, m):
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "Visformer's Attention")
        c = call.x[0]
        heads, hd = int(m.num_heads), int(m.head_dim)
        if type(m).__module__.startswith("archcalc."):    # archcalc's own: no dropout
            if m.init_args[0] != c:
                raise NoMapping(f"Visformer attention of {m.init_args[0]} channels on {c}")
            return row("visformer_attention", heads=heads,
                       **({} if heads * hd == c else {"head_dim": hd}))
        qkv, proj = m.qkv, m.proj
        if (qkv.in_channels, qkv.out_channels, proj.in_channels, proj.out_channels) != \
                (c, 3 * heads * hd, heads * hd, c) or qkv.bias is not None or \
                proj.bias is not None or tuple(qkv.kernel_size) != (1, 1) or \
                tuple(proj.kernel_size) != (1, 1) or abs(float(m.scale) * hd ** 0.5 - 1) > 1e-9:
            raise NoMapping("Visformer attention of other widths, with biases or scaled "
                            "otherwise")
        if float(m.attn_drop.p) or float(m.proj_drop.p):
            raise NoMapping("Visformer attention with dropout")
        return row("visformer_attention", heads=heads,
                   **({} if heads * hd == c else {"head_dim": hd}))


__all__ = ["VisformerAttention"]
