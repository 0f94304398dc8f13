"""Twins-SVT's locally-grouped self-attention (Chu et al. 2021, "Twins:
Revisiting the Design of Spatial Attention in Vision Transformers"), as
timm's LocallyGroupedAttn: one row on N = H x W tokens, the map's size
passed beside them (a chain of rows cannot say it).

The map is zero-padded on the right and bottom to multiples of the window
ws (Hp x Wp), cut into ws x ws windows, and each window's ws^2 tokens attend
to one another (a qkv Linear with a bias, no position bias); the padded
tokens are cropped and a proj Linear follows. Weights: qkv (D -> 3D) and
proj (D -> D), both with biases.

MACs (FlopCounterMode's): the qkv Linear on every padded token 3*Hp*Wp*D^2,
the scores and the weighted values of each window 2*Hp*Wp*ws^2*D, proj
N*D^2."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .tokens import SelfAttention

FP32 = 4


@register
class LocallyGroupedAttention(Kind):
    name = "grouped_attention"
    torch_classes = ("LocallyGroupedAttention",)  # in twins_torch.py
    aliases = ("locally_grouped_attention", "lsa")
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("Twins-SVT's locally-grouped attention on N = H*W tokens: self-attention "
               "within each ws x ws window of the map (zero-padded to multiples of ws)")
    flops_rule = ("2 x MACs + 4 per attention score (4*heads*Hp*Wp*ws^2); MACs = "
                  "3*Hp*Wp*D^2 + 2*Hp*Wp*ws^2*D + N*D^2, Hp x Wp the map padded to "
                  "multiples of ws")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "size": Arg("pair", min=1, doc="the tokens' map, H x W (N = H*W)"),
        "window": Arg("int", min=2, doc="ws, the side of a window (the map is padded to "
                                        "multiples of it)"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }
    arg_examples = {"heads": (1, 2, 4), "window": (2, 3),
                    "size": (lambda x: [1, x[0]], lambda x: [x[0], 1],
                             lambda x: [2, x[0] // 2] if x[0] % 2 == 0 else [x[0], 1])}
    receptive_field = SelfAttention.receptive_field

    @staticmethod
    def padded(a):
        """Hp * Wp: the padded map's tokens."""
        h, w = a.size
        ws = a.window
        return (-(-h // ws) * ws) * (-(-w // ws) * ws)

    def output_shape(self, a, x):
        n, d = x
        h, w = a.size
        if isinstance(n, int) and n != h * w:
            raise SpecError(f"grouped_attention: a map of {h} x {w} is {h * w} tokens, but "
                            f"there are {n}. Received: size={list(a.size)}")
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"grouped_attention: the width {d} does not divide into "
                            f"{a.heads} heads. Received: heads={a.heads}")
        return x

    def params(self, a, x):
        d = x[1]
        return sym.norm(4 * d * d + 4 * d)

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        return f"(3*{d}*{d} + 3*{d}) (qkv) + ({d}*{d} + {d}) (proj)"

    def macs(self, a, x, y):
        n, d = x
        p = self.padded(a)
        return sym.norm(3 * p * d * d + 2 * p * a.window * a.window * d + n * d * d)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        p = self.padded(a)
        return f"3*{p}*{d}^2 + 2*{p}*{a.window}^2*{d} + {n}*{d}^2"

    def flops(self, a, x, y):
        p = self.padded(a)
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * p * a.window * a.window)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The qkv GEMM on the padded tokens, the scores and the weighted
        values of every window (as GEMMs over all its tokens), the softmax,
        the projection."""
        n, d = x
        p, ws2 = self.padded(a), a.window * a.window
        return (Cost("linear", gemm=(p, 3 * d, d), tensors=(3 * d * d, 3 * d)),
                Cost("linear", gemm=(p, ws2, d)),
                Cost("softmax", elements=sym.norm(a.heads * p * ws2)),
                Cost("linear", gemm=(p, d, ws2)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the padded input (qkv's), q, k, v, the heads' output (proj's), the
        # softmax statistics per head and token (fp32)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        p = self.padded(a) if len(x) == 2 else n
        return Saved(input=True, extra=((sym.norm(p * d), None), (sym.norm(3 * p * d), None),
                                        (sym.norm(n * d), None),
                                        (sym.norm(a.heads * p), FP32)))

    def build(self, a, x):
        from .twins_torch import LocallyGroupedAttention as Module
        return Module(x[1], a.heads, tuple(a.size), a.window, a.dropout, a.proj_dropout)

    torch_modules = ("archcalc.layers.twins_torch.LocallyGroupedAttention",
                     "timm.models.twins.LocallyGroupedAttn")

    def from_torch(self, call, m):
        """archcalc's and timm's LocallyGroupedAttn (qkv, proj, ws), called
        with the tokens and their map's (H, W)."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"grouped attention on a {len(call.x)}-d input (it takes tokens)")
        # archcalc's holds its map's size; timm's is called with it
        size = getattr(m, "size", None) or call.arg("grouped attention", 1, "size")
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and
                all(isinstance(v, int) for v in size)):
            raise NoMapping(f"grouped attention with a map size of {size!r}")
        d, heads = call.x[1], int(m.num_heads)
        for lin, out, what in ((m.qkv, 3 * d, "qkv"), (m.proj, d, "proj")):
            if (lin.in_features, lin.out_features, lin.bias is not None) != (d, out, True):
                raise NoMapping(f"grouped attention's {what}: a Linear {lin.in_features} -> "
                                f"{lin.out_features}, not {d} -> {out} with a bias")
        if d % heads or abs(float(m.scale) * (d // heads) ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"grouped attention of {heads} heads on a width of {d}, scaled "
                            f"by {m.scale}")
        if int(m.ws) < 2:
            raise NoMapping(f"grouped attention with windows of {m.ws}")
        found = {"dropout": float(m.attn_drop.p), "proj_dropout": float(m.proj_drop.p)}
        return row("grouped_attention", heads=heads, size=[int(size[0]), int(size[1])],
                   window=int(m.ws), **{k: v for k, v in found.items() if v})
