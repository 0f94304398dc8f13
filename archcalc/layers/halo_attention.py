"""Blocked local self-attention (Vaswani et al. 2021, HaloNet), as timm's
HaloAttn: the map cut into b x b blocks, each block's queries attending to
its window of (b + 2*halo)^2 keys and values (zero-padded at the map's
edges), with 2-d relative position logits (a (2w-1) x head_dim table per
axis, w the window). q is a 1x1 conv (strided where the stride divides the
block; else an average pool of 2 after), k and v one 1x1 conv. One row: the
blocking and the windows are gathers of one conv's output that a chain of
rows cannot say."""
from __future__ import annotations

import math

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register


@register
class HaloAttention(Kind):
    name = "halo_attention"
    torch_classes = ("HaloAttention",)  # in halo_attention_torch.py
    aliases = ("blocked_local_attention",)
    primary = "heads"
    weighted = True
    summary = ("HaloNet's blocked local attention on a map: b x b query blocks, each "
               "attending to its (b + 2*halo)^2 window, 2-d relative position logits")
    flops_rule = ("2 x MACs + 6 per attention score (scale, the logits' sum and add, exp, "
                  "sum, divide) + the pool's 1 per value where it pools; MACs = Hq*Wq*C*Q + "
                  "H*W*C*(Q+V) + Hq*Wq*(w^2*(Q+V) + 2*(2w-1)*Q), w = block + 2*halo, "
                  "Hq x Wq the queries' map, Q = heads*head_dim, V = out")
    inputs = "chw"
    args = {
        "heads": Arg("int", 8, min=1, doc="attention heads; out must divide by it"),
        "block_size": Arg("int", 8, min=1, doc="the query blocks' side; H and W must divide by it"),
        "halo": Arg("int", 3, min=0, doc="the rows and columns each window adds on each side"),
        "out": Arg("int", None, min=1, doc="the value channels, the output's C (default C)"),
        "head_dim": Arg("int", None, min=1, doc="q's and k's width per head (default out/heads)"),
        "stride": Arg("int", 1, min=1, doc="2: q's conv strided (an even block) or an "
                                                  "average pool of 2 after"),
        "avg_down": Arg("bool", False, doc="at stride 2, pool after even with an even block"),
        "bias": Arg("bool", False, doc="the q and kv convs' biases"),
        "scale_pos_embed": Arg("bool", False, doc="scale the position logits with the scores"),
    }
    arg_examples = {"block_size": (lambda x: math.gcd(x[1], x[2]), lambda x: 1)}

    @staticmethod
    def widths(a, x):
        """(Q, V): q's (and k's) channels, v's channels."""
        out = a.out if a.out is not None else x[0]
        if out % a.heads:
            raise SpecError(f"halo_attention: out must divide by heads. "
                            f"Received: out={out}, heads={a.heads}")
        head_dim = a.head_dim if a.head_dim is not None else out // a.heads
        return a.heads * head_dim, out

    @staticmethod
    def block_stride(a):
        """q's conv stride: the stride where it divides the block, else 1 (a pool after)."""
        return 2 if a.stride == 2 and not a.avg_down and a.block_size % 2 == 0 else 1

    def queries(self, a, x):
        """The queries' map, Hq x Wq."""
        s = self.block_stride(a)
        return x[1] // s, x[2] // s

    def output_shape(self, a, x):
        _, h, w = x
        if a.stride not in (1, 2):
            raise SpecError(f"halo_attention: stride must be 1 or 2. Received: stride={a.stride}")
        if not (isinstance(h, int) and isinstance(w, int)) or h % a.block_size or w % a.block_size:
            raise SpecError(f"halo_attention: H and W must divide by block_size. "
                            f"Received: block_size={a.block_size} on a {h} x {w} map")
        _, v = self.widths(a, x)
        if a.stride == 2 and self.block_stride(a) == 1 and (h % 2 or w % 2):
            raise SpecError(f"halo_attention: its pool of 2 needs an even map. "
                            f"Received: {h} x {w}")
        return (v, h // a.stride, w // a.stride)

    def params(self, a, x):
        q, v = self.widths(a, x)
        c = x[0]
        biases = (2 * q + v) if a.bias else 0
        window = a.block_size + 2 * a.halo
        return sym.norm(c * (2 * q + v) + biases + 2 * (2 * window - 1) * (q // a.heads))

    def macs(self, a, x, y):
        q, v = self.widths(a, x)
        c, h, w = x
        hq, wq = self.queries(a, x)
        window = a.block_size + 2 * a.halo
        return sym.norm(hq * wq * c * q + h * w * c * (q + v)
                        + hq * wq * (window * window * (q + v) + 2 * (2 * window - 1) * q))

    def flops(self, a, x, y):
        hq, wq = self.queries(a, x)
        window = a.block_size + 2 * a.halo
        scores = a.heads * hq * wq * window * window
        pool = self.widths(a, x)[1] * hq * wq if a.stride == 2 and self.block_stride(a) == 1 \
            else 0
        return sym.norm(2 * self.macs(a, x, y) + 6 * scores + pool)

    def cost(self, a, x, y):
        """The q and kv GEMMs, the blocks' batched products, the softmax."""
        q, v = self.widths(a, x)
        c, h, w = x
        hq, wq = self.queries(a, x)
        window = a.block_size + 2 * a.halo
        return (Cost("linear", gemm=(hq * wq, q, c), tensors=(c * q,)),
                Cost("linear", gemm=(h * w, q + v, c), tensors=(c * (q + v),)),
                Cost("linear", gemm=(hq * wq, window * window, q)),
                Cost("linear", gemm=(hq * wq, 2 * (2 * window - 1), q)),
                Cost("softmax", elements=a.heads * hq * wq * window * window),
                Cost("linear", gemm=(hq * wq, v, window * window)))

    def saved(self, a, x, y):
        # x (both convs); q's and the windows' copies (the padded, unfolded
        # k and v); the softmax's output; the relative logits' copies of q;
        # the pool's input where it pools
        q, v = self.widths(a, x)
        hq, wq = self.queries(a, x)
        n = hq * wq
        window = a.block_size + 2 * a.halo
        blocks = n // (a.block_size // self.block_stride(a)) ** 2
        pool = ((n * v, None),) if a.stride == 2 and self.block_stride(a) == 1 else ()
        return Saved(input=True, extra=((n * q, None), (blocks * window * window * (q + v), None),
                                        (a.heads * n * window * window, None),
                                        (n * q, None), (n * q, None), *pool))

    def build(self, a, x):
        from .halo_attention_torch import HaloAttention as Module
        q, v = self.widths(a, x)
        return Module(x[0], v, a.heads, q // a.heads, a.block_size, a.halo, a.stride, a.avg_down,
                      a.bias, a.scale_pos_embed)

    torch_modules = ("archcalc.layers.halo_attention_torch.HaloAttention",
                     "timm.layers.halo_attn.HaloAttn")

    def from_torch(self, call, m):
        """archcalc's and timm's (the same submodules: q, kv, pos_embed, pool)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "HaloAttn")
        c = call.x[0]
        pooled = type(m.pool).__name__ == "AvgPool2d"
        if pooled and (m.pool.kernel_size, m.pool.stride, m.pool.padding) != (2, 2, 0):
            raise NoMapping("a HaloAttn pooled other than by 2")
        stride = 2 if pooled or m.block_stride == 2 else 1
        args = {"heads": m.num_heads, "block_size": m.block_size, "halo": m.halo_size}
        if m.dim_out_v != c:
            args["out"] = m.dim_out_v
        if m.dim_head_qk != m.dim_out_v // m.num_heads:
            args["head_dim"] = m.dim_head_qk
        if stride == 2:
            args["stride"] = 2
            if pooled and m.block_size % 2 == 0:
                args["avg_down"] = True
        if m.q.bias is not None:
            args["bias"] = True
        if m.scale_pos_embed:
            args["scale_pos_embed"] = True
        return row("halo_attention", **args)
