"""Spatial-reduction attention (Wang et al. 2021/2022, PVT and PVT v2), as
timm's pvt_v2 Attention: on N = H x W tokens, q from every token, k and v
from a reduced set of M tokens: the tokens read back as their H x W map,
an sr x sr conv at stride sr (M = (H/sr)(W/sr)) and a LayerNorm, or, in
PVT v2's linear form, an adaptive average pool to 7 x 7, a 1x1 conv, a
LayerNorm and GELU (M = 49); with sr = 1 and not pooled, M = N. One row:
the map size is the block's, passed beside the tokens, which a chain of
rows cannot say."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .tokens import SelfAttention

POOLED = 7      # PVT v2's linear attention pools to 7 x 7


@register
class SpatialReductionAttention(Kind):
    name = "sr_attention"
    torch_classes = ("SpatialReductionAttention",)  # in pvt_torch.py
    aliases = ("spatial_reduction_attention",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("PVT's spatial-reduction attention on N = H*W tokens: keys and values from "
               "the map reduced by an sr x sr conv at stride sr (or pooled to 7 x 7)")
    flops_rule = ("2 x MACs + 4 per attention score (4*heads*N*M) + 7 per normalized "
                  "element of the M reduced tokens (+ GELU's where pooled); MACs = "
                  "N*D^2 (q) + M*D^2*k^2 (the reduction's conv, k = sr or 1) + 2*M*D^2 (kv) "
                  "+ 2*N*M*D + N*D^2 (proj)")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "size": Arg("pair", min=1, doc="the tokens' map, H x W (N = H*W)"),
        "sr": Arg("int", 1, min=1, doc="the reduction's conv kernel and stride (1: none)"),
        "pooled": Arg("bool", False, doc="PVT v2's linear form: pool to 7 x 7, 1x1 conv, "
                                         "LayerNorm, GELU"),
        "bias": Arg("bool", True, doc="the q and kv Linears' biases"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }
    arg_examples = {"heads": (1, 2, 4), "sr": (1, 2),
                    "size": (lambda x: [1, x[0]], lambda x: [x[0], 1],
                             lambda x: [2, x[0] // 2] if x[0] % 2 == 0 else [x[0], 1])}
    receptive_field = SelfAttention.receptive_field

    @staticmethod
    def reduced(a):
        """M, the keys' and values' tokens, and k, the reduction conv's kernel
        (0: no reduction)."""
        h, w = a.size
        if a.pooled:
            return POOLED * POOLED, 1
        if a.sr > 1:
            return (h // a.sr) * (w // a.sr), a.sr
        return h * w, 0

    def output_shape(self, a, x):
        n, d = x
        h, w = a.size
        if isinstance(n, int) and n != h * w:
            raise SpecError(f"sr_attention: a map of {h} x {w} is {h * w} tokens, but there "
                            f"are {n}. Received: size={list(a.size)}")
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"sr_attention: the width {d} does not divide into {a.heads} "
                            f"heads. Received: heads={a.heads}")
        if a.pooled and a.sr != 1:
            raise SpecError(f"sr_attention: the pooled form has no sr. Received: sr={a.sr}")
        if not a.pooled and (h < a.sr or w < a.sr):
            raise SpecError(f"sr_attention: a {h} x {w} map is smaller than sr = {a.sr}")
        return x

    def params(self, a, x):
        d = x[1]
        _, k = self.reduced(a)
        reduction = (d * d * k * k + d + 2 * d) if k else 0
        return sym.norm(4 * d * d + (3 * d if a.bias else 0) + d + reduction)

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        _, k = self.reduced(a)
        bias = a.bias
        text = (f"({d}*{d}{' + ' + str(d) if bias else ''}) (q) + "
                f"(2*{d}*{d}{' + 2*' + str(d) if bias else ''}) (kv) + ({d}*{d} + {d}) (proj)")
        if k:
            text += f" + ({d}*{d}*{k}*{k} + {d}) (sr) + 2*{d} (norm)"
        return text

    def macs(self, a, x, y):
        n, d = x
        m, k = self.reduced(a)
        return sym.norm(2 * n * d * d + m * d * d * k * k + 2 * m * d * d + 2 * n * m * d)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        m, k = self.reduced(a)
        sr = f" + {m}*{d}^2*{k * k}" if k else ""
        return f"2*{n}*{d}^2{sr} + 2*{m}*{d}^2 + 2*{n}*{m}*{d}"

    def flops(self, a, x, y):
        n, d = x
        m, k = self.reduced(a)
        norm = 7 * m * d if k else 0
        gelu = 8 * m * d if a.pooled else 0
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * n * m + norm + gelu)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """q's GEMM, the reduction's conv (if any), the kv GEMM on M tokens,
        the scores, the softmax, the weighted values, the projection."""
        n, d = x
        m, k = self.reduced(a)
        h, w = a.size
        bias = a.bias
        out = ()
        if k:
            side = (POOLED, POOLED) if a.pooled else (h // k, w // k)
            out = (Cost("conv", conv=(k, k, k, k, d, d, side[0], side[1], 1),
                        tensors=(d * d * k * k, d)),
                   Cost("layer_norm", elements=sym.norm(m * d), tensors=(d, d)))
        return (Cost("linear", gemm=(n, d, d), tensors=(d * d,) + ((d,) if bias else ())),
                *out,
                Cost("linear", gemm=(m, 2 * d, d), tensors=(2 * d * d,) + ((2 * d,) if bias else ())),
                Cost("linear", gemm=(n, m, d)),
                Cost("softmax", elements=sym.norm(a.heads * n * m)),
                Cost("linear", gemm=(n, d, m)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the input, q, the reduced tokens (conv out, norm out), k, v, the
        # heads' output, the softmax statistics (fp32)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        m, k = self.reduced(a)
        reduced = ((sym.norm(2 * m * d), None),) if k else ()
        return Saved(input=True, extra=((sym.norm(n * d), None), *reduced,
                                        (sym.norm(2 * m * d), None), (sym.norm(n * d), None),
                                        (sym.norm(a.heads * n), 4)))

    def build(self, a, x):
        from .pvt_torch import SpatialReductionAttention as Module
        return Module(x[1], a.heads, tuple(a.size), a.sr, a.pooled, a.bias, a.dropout,
                      a.proj_dropout)

    torch_modules = ("archcalc.layers.pvt_torch.SpatialReductionAttention",
                     "timm.models.pvt_v2.Attention", "timm.models.twins.GlobalSubSampleAttn")

    def from_torch(self, call, m):
        """archcalc's and timm's pvt_v2 Attention (q, kv, sr, norm, pool, act,
        proj), called with the tokens and their map's (H, W)."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"PVT attention on a {len(call.x)}-d input (it takes tokens)")
        # archcalc's holds its map's size; timm's is called with it
        size = getattr(m, "size", None) or call.arg("PVT attention", 1, "feat_size")
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and
                all(isinstance(v, int) for v in size)):
            raise NoMapping(f"PVT attention with a map size of {size!r}")
        d, heads = call.x[1], int(m.num_heads)
        if m.q.in_features != d or m.proj.out_features != d or d % heads or \
                m.proj.bias is None or m.kv.out_features != 2 * d:
            raise NoMapping(f"PVT attention of other widths than the tokens' {d}")
        if abs(float(m.scale) * (d // heads) ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"PVT attention scaled by {m.scale}")
        bias = m.q.bias is not None
        if (m.kv.bias is not None) != bias:
            raise NoMapping("PVT attention with a bias on one of q and kv only")
        linear = getattr(m, "pool", None) is not None   # Twins' GSA: the conv form only
        sr = 1 if m.sr is None or linear else int(m.sr.stride[0])
        _check_reduction(m, d, sr, linear)
        found = {"heads": heads, "size": [int(size[0]), int(size[1])], "sr": sr,
                 "pooled": linear, "bias": bias, "dropout": float(m.attn_drop.p),
                 "proj_dropout": float(m.proj_drop.p)}
        defaults = {k: arg.default for k, arg in self.args.items()}
        return row("sr_attention", **{k: v for k, v in found.items()
                                      if k in ("heads", "size") or v != defaults[k]})


def _check_reduction(m, d, sr, linear):
    """The reduction is what the kind computes: a conv of kernel = stride = sr
    (1 where linear) with a bias, a LayerNorm over D with eps 1e-5, GELU,
    the pool to 7 x 7."""
    from .from_torch import NoMapping
    if m.sr is None:
        return
    conv = m.sr
    if (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), conv.groups,
            conv.in_channels, conv.out_channels, conv.bias is not None) != \
            ((sr, sr), (sr, sr), (0, 0), 1, d, d, True):
        raise NoMapping("PVT attention whose reduction conv is not sr x sr at stride sr")
    norm = m.norm
    if type(norm).__name__ != "LayerNorm" or tuple(norm.normalized_shape) != (d,) or \
            abs(norm.eps - 1e-5) > 1e-12 or not norm.elementwise_affine:
        raise NoMapping("PVT attention whose reduction's norm is not a LayerNorm(eps=1e-5)")
    if linear:
        out = m.pool.output_size
        if type(m.pool).__name__ != "AdaptiveAvgPool2d" or out not in (POOLED, (POOLED, POOLED)):
            raise NoMapping("PVT attention pooled to other than 7 x 7")
        if type(m.act).__name__ != "GELU" or m.act.approximate != "none":
            raise NoMapping(f"PVT attention with {type(m.act).__name__} after its pool")
