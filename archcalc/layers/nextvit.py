"""Next-ViT's efficient multi-head self-attention (Li et al. 2022, E-MHSA), as
timm's nextvit EfficientAttention: on N x D tokens, q, k and v Linears, the
keys' and values' tokens first pooled along the sequence (an AvgPool1d of
s^2 at stride s^2 over the N tokens, M = floor(N / s^2)) and batch-normed,
heads of head_dim, softmax(q k^T / sqrt(head_dim)) v, a proj Linear to
``out``. One row: q reads the tokens, k and v their pooled copy."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .tokens import SelfAttention


@register
class EfficientAttention(Kind):
    name = "pooled_attention"
    torch_classes = ("PooledAttention",)  # in nextvit_torch.py
    aliases = ("e_mhsa",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("Next-ViT's E-MHSA on N x D tokens: keys and values from the tokens "
               "average-pooled along the sequence by s^2 and batch-normed")
    flops_rule = ("2 x MACs + 4 per attention score (4*heads*N*M) + the pool's N*D and the "
                  "norm's 2*M*D where s > 1; MACs = N*D^2 (q) + 2*M*D^2 (k, v) + 2*N*M*D "
                  "+ N*D*out, M = floor(N / s^2)")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "sr": Arg("int", 1, min=1, doc="s: the keys' and values' tokens pooled by s^2"),
        "out": Arg("int", None, min=1, doc="the proj's width (default D)"),
        "bias": Arg("bool", True, doc="the q, k and v Linears' biases"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norm (s > 1)"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }
    arg_examples = {"heads": (1, 2, 4), "sr": (1, 2), "out": (None, 4, 8)}
    receptive_field = SelfAttention.receptive_field

    @staticmethod
    def reduced(a, x):
        """M, the pooled tokens."""
        return sym.norm(x[0] // (a.sr * a.sr)) if a.sr > 1 else x[0]

    @staticmethod
    def _out(a, x):
        return a.out if a.out is not None else x[1]

    def output_shape(self, a, x):
        n, d = x
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"pooled_attention: the width {d} does not divide into {a.heads} "
                            f"heads. Received: heads={a.heads}")
        if isinstance(n, int) and n < a.sr * a.sr:
            raise SpecError(f"pooled_attention: {n} tokens, fewer than the pool's "
                            f"{a.sr * a.sr}. Received: sr={a.sr}")
        return (n, self._out(a, x))

    def params(self, a, x):
        d, o = x[1], self._out(a, x)
        return sym.norm(3 * d * d + (3 * d if a.bias else 0) + d * o + o
                        + (2 * d if a.sr > 1 else 0))

    def params_formula(self, a, x):
        d, o = sym.plain(x[1]), sym.plain(self._out(a, x))
        norm = f" + 2*{d} (norm)" if a.sr > 1 else ""
        return f"3*({d}*{d}{' + ' + str(d) if a.bias else ''}) + ({d}*{o} + {o}){norm}"

    def buffers(self, a, x):
        return 2 * x[1] if a.sr > 1 else 0

    def macs(self, a, x, y):
        n, d = x
        m = self.reduced(a, x)
        return sym.norm(n * d * d + 2 * m * d * d + 2 * n * m * d + n * d * self._out(a, x))

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        m, o = sym.plain(self.reduced(a, x)), sym.plain(self._out(a, x))
        return f"{n}*{d}^2 + 2*{m}*{d}^2 + 2*{n}*{m}*{d} + {n}*{d}*{o}"

    def flops(self, a, x, y):
        n, d = x
        m = self.reduced(a, x)
        pool = n * d + 2 * m * d if a.sr > 1 else 0
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * n * m + pool)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """q's GEMM, the pool and norm, k's and v's GEMMs on M tokens, the
        scores, the softmax, the weighted values, the projection."""
        n, d = x
        m, o = self.reduced(a, x), self._out(a, x)
        bias = (d,) if a.bias else ()
        pool = (Cost("avgpool2s2", elements=sym.norm(n * d)),
                Cost("batch_norm", elements=sym.norm(m * d), tensors=(d, d))) if a.sr > 1 else ()
        return (Cost("linear", gemm=(n, d, d), tensors=(d * d,) + bias), *pool,
                Cost("linear", gemm=(m, 2 * d, d), tensors=(d * d, d * d) + bias + bias),
                Cost("linear", gemm=(n, m, d)),
                Cost("softmax", elements=sym.norm(a.heads * n * m)),
                Cost("linear", gemm=(n, d, m)),
                Cost("linear", gemm=(n, o, d), tensors=(d * o, o)))

    def saved(self, a, x, y):
        # the input, q, the pooled and normed tokens, k, v, the heads'
        # output, the softmax statistics (fp32)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        m = self.reduced(a, x) if len(x) == 2 else n
        pooled = ((sym.norm(2 * m * d), None),) if a.sr > 1 else ()
        return Saved(input=True, extra=((sym.norm(n * d), None), *pooled,
                                        (sym.norm(2 * m * d), None), (sym.norm(n * d), None),
                                        (sym.norm(a.heads * n), 4)))

    def build(self, a, x):
        from .nextvit_torch import PooledAttention as Module
        return Module(x[1], self._out(a, x), a.heads, a.sr, a.bias, a.eps, a.dropout,
                      a.proj_dropout)

    torch_modules = ("archcalc.layers.nextvit_torch.PooledAttention",
                     "timm.models.nextvit.EfficientAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's EfficientAttention (q, k, v, sr, norm, proj)."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"E-MHSA on a {len(call.x)}-d input (it takes tokens)")
        d, heads = call.x[1], int(m.num_heads)
        bias = m.q.bias is not None
        for lin in (m.q, m.k, m.v):
            if (lin.in_features, lin.out_features, lin.bias is not None) != (d, d, bias):
                raise NoMapping(f"E-MHSA whose q, k, v are not Linears {d} -> {d} alike")
        if heads * int(m.head_dim) != d or m.proj.in_features != d or m.proj.bias is None:
            raise NoMapping(f"E-MHSA of {heads} heads of {m.head_dim} on a width of {d}")
        if abs(float(m.scale) * int(m.head_dim) ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"E-MHSA scaled by {m.scale}")
        sr, eps = int(m.sr_ratio), 1e-5
        if m.sr is not None:
            pool, norm = m.sr, m.norm
            if type(pool).__name__ != "AvgPool1d" or tuple(pool.kernel_size) != (sr * sr,) or \
                    tuple(pool.stride) != (sr * sr,) or tuple(pool.padding) != (0,) or \
                    pool.ceil_mode:
                raise NoMapping("E-MHSA pooled other than by sr^2 at stride sr^2")
            if type(norm).__name__ != "BatchNorm1d" or not norm.affine or \
                    not norm.track_running_stats or norm.num_features != d:
                raise NoMapping(f"E-MHSA with a {type(norm).__name__} after its pool")
            eps = float(norm.eps)
        elif sr != 1:
            raise NoMapping(f"E-MHSA of sr_ratio {sr} without its pool")
        found = {"heads": heads, "sr": sr, "bias": bias, "eps": eps,
                 "out": m.proj.out_features if m.proj.out_features != d else None,
                 "dropout": float(m.attn_drop.p), "proj_dropout": float(m.proj_drop.p)}
        return row("pooled_attention", **{k: v for k, v in found.items()
                                          if k == "heads" or v != self.args[k].default})
