"""Bottleneck self-attention (Srinivas et al. 2021, BoTNet), as timm's
BottleneckAttn: a 1x1 conv to q, k, v over a C x H x W map, multi-head
attention of every position with every other (H*W x H*W scores) plus a 2-d
relative position logit (Bello et al. 2019: learned (2H-1) and (2W-1) x
head_dim tables, one product of q with each), softmax, the weighted values as
a map, an average pool of 2 where the stride is 2. The whole module is one row:
the attention reads q, k and v, three slices of one conv's output, which a
chain of rows cannot say."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register


@register
class BottleneckAttention(Kind):
    name = "bottleneck_attention"
    torch_classes = ("BottleneckAttention",)  # in bottleneck_attention_torch.py
    aliases = ("botnet_attention",)
    primary = "heads"
    weighted = True
    summary = ("BoTNet's all-to-all attention on a map: 1x1 qkv conv, heads, 2-d relative "
               "position logits, softmax, weighted values (avg pool 2 at stride 2)")
    flops_rule = ("2 x MACs + 4 per attention score (scale, exp, sum, divide) + 1 per score "
                  "(the relative logits' sum) + 1 per score (their add) + the pool's 1 per input "
                  "value at stride 2; MACs = HW*C*(2Q+V) + (HW)^2*(Q+V) + HW*Q*(2H-1 + 2W-1), "
                  "Q = heads*head_dim, V = out")
    inputs = "chw"
    args = {
        "heads": Arg("int", 4, min=1, doc="attention heads; out must divide by it"),
        "out": Arg("int", None, min=1, doc="the value channels, the output's C (default C)"),
        "head_dim": Arg("int", None, min=1, doc="q's and k's width per head (default out/heads)"),
        "stride": Arg("int", 1, min=1, doc="2: an average pool of 2 after"),
        "bias": Arg("bool", False, doc="the qkv conv's bias"),
        "scale_pos_embed": Arg("bool", False, doc="scale the position logits with the scores"),
    }

    @staticmethod
    def widths(a, x):
        """(Q, V): q's (and k's) channels, v's channels."""
        out = a.out if a.out is not None else x[0]
        if isinstance(out, int) and out % a.heads:
            raise SpecError(f"bottleneck_attention: out must divide by heads. "
                            f"Received: out={out}, heads={a.heads}")
        head_dim = a.head_dim if a.head_dim is not None else sym.floordiv(out, a.heads)
        return a.heads * head_dim, out

    def output_shape(self, a, x):
        if a.stride not in (1, 2):
            raise SpecError(f"bottleneck_attention: stride must be 1 or 2. Received: stride={a.stride}")
        _, v = self.widths(a, x)
        if a.stride == 2:
            return (v, sym.floordiv(x[1], 2), sym.floordiv(x[2], 2))
        return (v, x[1], x[2])

    def params(self, a, x):
        q, v = self.widths(a, x)
        c, h, w = x
        head_dim = sym.floordiv(q, a.heads)
        qkv = c * (2 * q + v) + ((2 * q + v) if a.bias else 0)
        return sym.norm(qkv + (2 * h - 1 + 2 * w - 1) * head_dim)

    def macs(self, a, x, y):
        q, v = self.widths(a, x)
        c, h, w = x
        n = h * w
        return sym.norm(n * c * (2 * q + v) + n * n * (q + v) + n * q * (2 * h - 1 + 2 * w - 1))

    def flops(self, a, x, y):
        _, h, w = x
        n = h * w
        pool = sym.prod((self.widths(a, x)[1], h, w)) if a.stride == 2 else 0
        return sym.norm(2 * self.macs(a, x, y) + 6 * a.heads * n * n + pool)

    def cost(self, a, x, y):
        """The qkv GEMM, the two batched products of attention, the relative
        logits' small GEMMs, the softmax over the scores."""
        q, v = self.widths(a, x)
        c, h, w = x
        n = h * w
        return (Cost("linear", gemm=(n, 2 * q + v, c), tensors=(c * (2 * q + v),)),
                Cost("linear", gemm=(n, n, q)),
                Cost("linear", gemm=(n, 2 * h - 1 + 2 * w - 1, q)),
                Cost("softmax", elements=a.heads * n * n),
                Cost("linear", gemm=(n, v, n)))

    def saved(self, a, x, y):
        # the conv keeps x; the scores' product keeps q and k, the weighted
        # values keep the softmax's output (heads x HW x HW) and v (all views
        # of qkv); each relative logit's product keeps its own copy of q (a
        # reshape, a transpose); the pool keeps the weighted values' map
        q, v = self.widths(a, x)
        n = x[1] * x[2]
        pool = ((n * v, None),) if a.stride == 2 else ()
        return Saved(input=True, extra=((n * (2 * q + v), None), (a.heads * n * n, None),
                                        (n * q, None), (n * q, None), *pool))

    def build(self, a, x):
        from .bottleneck_attention_torch import BottleneckAttention as Module
        q, v = self.widths(a, x)
        return Module(x[0], v, (x[1], x[2]), a.heads, q // a.heads, a.stride, a.bias,
                      a.scale_pos_embed)

    torch_modules = ("archcalc.layers.bottleneck_attention_torch.BottleneckAttention",
                     "timm.layers.bottleneck_attn.BottleneckAttn")

    def from_torch(self, call, m):
        """archcalc's and timm's (the same submodules: qkv, pos_embed, pool)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "BottleneckAttn")
        c, h, w = call.x
        pos = m.pos_embed
        if (pos.height, pos.width) != (h, w) or type(pos).__name__ not in ("PosEmbedRel", "RelativeLogits"):
            raise NoMapping(f"a BottleneckAttn for {pos.height}x{pos.width} on a {h}x{w} map")
        pooled = type(m.pool).__name__ == "AvgPool2d"
        if pooled and (m.pool.kernel_size, m.pool.stride, m.pool.padding) not in ((2, 2, 0),):
            raise NoMapping("a BottleneckAttn pooled other than by 2")
        args = {"heads": m.num_heads}
        if m.dim_out_v != c:
            args["out"] = m.dim_out_v
        if m.dim_head_qk != m.dim_out_v // m.num_heads:
            args["head_dim"] = m.dim_head_qk
        if pooled:
            args["stride"] = 2
        if m.qkv.bias is not None:
            args["bias"] = True
        if m.scale_pos_embed:
            args["scale_pos_embed"] = True
        return row("bottleneck_attention", **args)
