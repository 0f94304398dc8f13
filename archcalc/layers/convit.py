"""ConViT's gated positional self-attention (d'Ascoli et al. 2021, "ConViT:
Improving Vision Transformers with Soft Convolutional Inductive Biases"), as
timm's GPSA: one row on N x D tokens, N = S*S patches of a square grid.

Per head, the softmax of the patch scores q k^T / sqrt(D/h) and the softmax
of the positional scores (a Linear 3 -> h, ``pos_proj``, of each pair of
patches' offset dx, dy and dx^2 + dy^2) are mixed by the head's gate
sigmoid(g) (``gating_param``): (1 - sigmoid(g)) patch + sigmoid(g) pos,
renormalized, then applied to v; ``proj`` after. Weights: qk (D -> 2D), v
(D -> D), both with or without a bias; proj with a bias; pos_proj; the gate.

MACs (FlopCounterMode's): qk 2*N*D^2, v N*D^2, the positional scores 3*h*N^2
(the Linear on every pair of patches), q k^T N^2*D, the weighted values
N^2*D, proj N*D^2."""
from __future__ import annotations

from math import isqrt

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .tokens import SelfAttention

FP32 = 4


@register
class GatedPositionalAttention(Kind):
    name = "gpsa"
    torch_classes = ("GatedPositionalAttention",)  # in convit_torch.py
    aliases = ("gated_positional_attention",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("ConViT's gated positional self-attention on N = S*S patch tokens: each "
               "head's patch scores and positional scores mixed by a learned gate")
    flops_rule = ("2 x MACs + 14 per attention score (14*heads*N^2: the scale, two "
                  "softmaxes, the gated mix, the renormalization); MACs = 4*N*D^2 + "
                  "2*N^2*D + 3*heads*N^2")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "bias": Arg("bool", False, doc="the qk and v Linears' biases"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }
    arg_examples = {"heads": (1, 2, 4)}
    receptive_field = SelfAttention.receptive_field

    def output_shape(self, a, x):
        n, d = x
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"gpsa: the width {d} does not divide into {a.heads} heads. "
                            f"Received: heads={a.heads}")
        if isinstance(n, int) and isqrt(n) ** 2 != n:
            raise SpecError(f"gpsa: its positions are those of a square grid of patches; "
                            f"{n} tokens are not one (no class token before it)")
        return x

    def params(self, a, x):
        d, h = x[1], a.heads
        return sym.norm(4 * d * d + (3 * d if a.bias else 0) + d + 5 * h)

    def params_formula(self, a, x):
        d, h = sym.plain(x[1]), a.heads
        bias = f" + 3*{d}" if a.bias else ""
        return f"(3*{d}*{d}{bias}) + ({d}*{d} + {d}) + (3*{h} + {h}) (pos_proj) + {h} (gates)"

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(4 * n * d * d + 2 * n * n * d + 3 * a.heads * n * n)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return f"4*{n}*{d}^2 + 2*{n}^2*{d} + 3*{a.heads}*{n}^2"

    def flops(self, a, x, y):
        return sym.norm(2 * self.macs(a, x, y) + 14 * a.heads * x[0] * x[0])

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The qk and v GEMMs, the positional scores (a GEMM of N^2 rows, 3 ->
        h), the patch scores, two softmaxes over h*N^2 scores, the weighted
        values, the projection."""
        n, d = x
        h = a.heads
        bias = (d,) if a.bias else ()
        return (Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d,) + bias + bias + bias),
                Cost("linear", gemm=(n * n, h, 3), tensors=(3 * h, h)),
                Cost("linear", gemm=(n, n, d)),
                Cost("softmax", elements=sym.norm(2 * h * n * n)),
                Cost("linear", gemm=(n, d, n)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the input, q, k, v, the two softmaxes' outputs, the mixed and the
        # renormalized weights (the product's), the heads' output (proj's)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        scores = sym.norm(a.heads * n * n)
        return Saved(input=True, extra=((sym.norm(3 * n * d), None), (scores, None),
                                        (scores, None), (scores, None), (scores, None),
                                        (sym.norm(n * d), None), (a.heads, FP32)))

    def build(self, a, x):
        from .convit_torch import GatedPositionalAttention as Module
        return Module(x[1], a.heads, a.bias, a.dropout, a.proj_dropout)

    torch_modules = ("archcalc.layers.convit_torch.GatedPositionalAttention",
                     "timm.models.convit.GPSA")

    def from_torch(self, call, m):
        """archcalc's and timm's GPSA (qk, v, proj, pos_proj, gating_param)."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"GPSA on a {len(call.x)}-d input (it takes tokens)")
        if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v is not None]:
            raise NoMapping("GPSA called with more than its tokens")
        n, d = call.x
        heads = int(m.num_heads)
        if d % heads or isqrt(n) ** 2 != n:
            raise NoMapping(f"GPSA of {heads} heads on {n} tokens of width {d}")
        bias = m.qk.bias is not None
        for lin, out, b, what in ((m.qk, 2 * d, bias, "qk"), (m.v, d, bias, "v"),
                                  (m.proj, d, True, "proj"), (m.pos_proj, heads, True,
                                                               "pos_proj")):
            d_in = 3 if what == "pos_proj" else d
            if (lin.in_features, lin.out_features, lin.bias is not None) != (d_in, out, b):
                raise NoMapping(f"GPSA's {what}: a Linear {lin.in_features} -> "
                                f"{lin.out_features}, not {d_in} -> {out}")
        if tuple(m.gating_param.shape) != (heads,):
            raise NoMapping(f"GPSA's gates of shape {tuple(m.gating_param.shape)}")
        if abs(float(m.scale) * (d // heads) ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"GPSA scaled by {m.scale}, not 1/sqrt(head_dim)")
        found = {"bias": bias, "dropout": float(m.attn_drop.p),
                 "proj_dropout": float(m.proj_drop.p)}
        return row("gpsa", heads=heads, **{k: v for k, v in found.items() if v})
