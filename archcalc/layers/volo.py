"""VOLO's outlook attention (Yuan et al. 2021, "VOLO: Vision Outlooker for
Visual Recognition"), as timm's OutlookAttention: one row on N = H x W
tokens (the spec's shape for VOLO's channels-last B x H x W x C map), the
map's size given beside them (``size``, a square map by default).

The map is average-pooled by the stride s (ceil_mode) to h x w = ceil(H/s) x
ceil(W/s) positions; at each, a Linear (``attn``, D -> k^4*heads, with a
bias) gives per head a k^2 x k^2 attention over the k x k window of values
(``v``, a Linear D -> D) unfolded around it (kernel k, padding p, stride s);
the windows' weighted values are folded back onto the H x W map (overlaps
summed) and ``proj`` (D -> D, with a bias) follows. The unfold must give
one window per pooled position: floor((H + 2p - k)/s) + 1 = ceil(H/s).

MACs (FlopCounterMode's: the Linears and the one matrix product; the pool,
the unfold, the fold and the softmax count none): v and proj 2*N*D^2, attn
n'*D*k^4*heads, the weighted values n'*k^4*D (n' = h*w)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .pool import pool_cost
from .window_attention import map_size

FP32 = 4


def _blocks(n: int, k: int, p: int, s: int) -> int:
    """Windows an unfold of kernel k, padding p, stride s puts along a side of n."""
    return (n + 2 * p - k) // s + 1


def _span(k: int, p: int, s: int) -> int:
    """The widest run of input positions one output position reads along a
    side: the windows that cover it (their values) and the pooled cells that
    weight them (their attention), over one period of the stride."""
    widest = 0
    for r in range(s):
        first, last = -(-(r + p - k + 1) // s), (r + p) // s
        lo = min(first * s - p, first * s)
        hi = max(last * s - p + k - 1, last * s + s - 1)
        widest = max(widest, hi - lo + 1)
    return widest


@register
class OutlookAttention(Kind):
    name = "outlook_attention"
    torch_classes = ("OutlookAttention",)  # in volo_torch.py
    aliases = ("outlooker",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("VOLO's outlook attention on N = H*W tokens: attention over each k x k "
               "window of values, its weights a Linear of the map pooled by the stride, "
               "the windows folded back")
    flops_rule = ("2 x MACs + 4 per attention weight (scale, exp, sum, divide: "
                  "4*heads*n'*k^4) + N*D (the pool) + n'*k^2*D (the fold's sums); MACs = "
                  "2*N*D^2 + n'*k^4*D*(heads + 1), n' = ceil(H/s)*ceil(W/s)")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "kernel": Arg("int", 3, min=1, doc="k, the side of a window"),
        "padding": Arg("int", 1, min=0, doc="the unfold's and the fold's zero padding"),
        "stride": Arg("int", 1, min=1, doc="s: the pool's window and the unfold's stride"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="the tokens' map, [h, w] with h*w = N; default: the square map"),
        "bias": Arg("bool", False, doc="the v Linear's bias (timm: qkv_bias)"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }
    # kernel 3, padding 1: any stride gives ceil(H/s) windows a side
    arg_examples = {"heads": (1, 2), "kernel": (3,), "padding": (1,), "stride": (1, 2),
                    "size": (None, lambda x: [1, x[0]], lambda x: [x[0], 1])}

    def pooled(self, a, x) -> tuple:
        """(h, w): the pooled map, one window of values per position."""
        h, w = map_size(self.name, a.size, x[0])
        k, p, s = a.kernel, a.padding, a.stride
        hp, wp = -(-h // s), -(-w // s)
        if _blocks(h, k, p, s) != hp or _blocks(w, k, p, s) != wp:
            raise SpecError(f"outlook_attention: kernel {k}, padding {p}, stride {s} unfold a "
                            f"{h} x {w} map into {_blocks(h, k, p, s)} x "
                            f"{_blocks(w, k, p, s)} windows, but its pool by {s} gives "
                            f"{hp} x {wp} positions. Received: kernel={k}, padding={p}")
        return hp, wp

    def pooled_n(self, a, x):
        hp, wp = self.pooled(a, x)
        return hp * wp

    def output_shape(self, a, x):
        d = x[1]
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"outlook_attention: the width {d} does not divide into "
                            f"{a.heads} heads. Received: heads={a.heads}")
        self.pooled(a, x)
        return x

    def params(self, a, x):
        d, k4h = x[1], a.kernel ** 4 * a.heads
        return sym.norm(d * d + (d if a.bias else 0) + d * k4h + k4h + d * d + d)

    def params_formula(self, a, x):
        d, k4h = sym.plain(x[1]), a.kernel ** 4 * a.heads
        v = f"{d}*{d}" + (f" + {d}" if a.bias else "")
        return f"({v}) (v) + ({d}*{k4h} + {k4h}) (attn) + ({d}*{d} + {d}) (proj)"

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(2 * n * d * d + self.pooled_n(a, x) * a.kernel ** 4 * d * (a.heads + 1))

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return f"2*{n}*{d}^2 + {self.pooled_n(a, x)}*{a.kernel}^4*{d}*({a.heads} + 1)"

    def flops(self, a, x, y):
        n, d = x
        pn, k = self.pooled_n(a, x), a.kernel
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * pn * k ** 4 + n * d +
                        pn * k * k * d)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        side = _span(a.kernel, a.padding, a.stride)
        return (side, side), (1, 1)

    def cost(self, a, x, y):
        """v's GEMM, its windows unfolded (a copy), the pool, attn's GEMM on the
        pooled positions, the softmax, the weighted values (a GEMM per
        position: k^2 x k^2 by k^2 x D/heads), the fold (a copy), proj."""
        n, d = x
        (h, w), (hp, wp) = map_size(self.name, a.size, n), self.pooled(a, x)
        pn, k2, s = hp * wp, a.kernel * a.kernel, a.stride
        k4h = k2 * k2 * a.heads
        return (Cost("linear", gemm=(n, d, d), tensors=(d * d,) + ((d,) if a.bias else ())),
                Cost("copy", elements=sym.norm(pn * k2 * d)),
                pool_cost("avgpool", a, (d, h, w), (d, hp, wp), (s, s), (s, s)),
                Cost("linear", gemm=(pn, k4h, d), tensors=(d * k4h, k4h)),
                Cost("softmax", elements=sym.norm(pn * k4h)),
                Cost("linear", gemm=(sym.norm(pn * a.heads * k2), sym.exact_div(d, a.heads),
                                     k2)),
                Cost("copy", elements=sym.norm(pn * k2 * d)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the input (v's and the pool's), the pooled map (attn's, a copy: it
        # is channels-last), the softmax's output (the weights), the unfolded
        # values (a copy for the product), the folded map (proj's, a copy)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        if len(x) != 2:
            return Saved(input=True)
        pn, k2 = self.pooled_n(a, x), a.kernel * a.kernel
        return Saved(input=True, extra=((sym.norm(pn * d), None),
                                        (sym.norm(pn * k2 * k2 * a.heads), None),
                                        (sym.norm(pn * k2 * d), None), (sym.norm(n * d), None)))

    def build(self, a, x):
        from .volo_torch import OutlookAttention as Module
        return Module(x[1], a.heads, map_size(self.name, a.size, x[0]), a.kernel, a.padding,
                      a.stride, a.bias, a.dropout, a.proj_dropout)

    torch_modules = ("archcalc.layers.volo_torch.OutlookAttention",
                     "timm.models.volo.OutlookAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's OutlookAttention (v, attn, proj, unfold, pool)
        on tokens: timm's reads a channels-last B x H x W x C map."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"outlook attention on a {len(call.x)}-d input (it takes tokens)")
        if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v is not None]:
            raise NoMapping("outlook attention called with more than its map")
        size = getattr(m, "size", None)      # archcalc's holds it; timm's reads its input's
        if size is None:
            if len(call.x_torch) != 3:
                raise NoMapping(f"outlook attention on a {list(call.x_torch)} input (it "
                                "takes B x H x W x C)")
            size = call.x_torch[:2]
        h, w = int(size[0]), int(size[1])
        d, heads = call.x[1], int(m.num_heads)
        k, p, s = int(m.kernel_size), int(m.padding), int(m.stride)
        _check_modules(m, d, heads, k, p, s)
        if _blocks(h, k, p, s) != -(-h // s) or _blocks(w, k, p, s) != -(-w // s):
            raise NoMapping(f"outlook attention whose unfold (kernel {k}, padding {p}, stride "
                            f"{s}) does not give one window per pooled position of {h} x {w}")
        found = {"kernel": k, "padding": p, "stride": s,
                 "size": None if h == w else [h, w], "bias": m.v.bias is not None,
                 "dropout": float(m.attn_drop.p), "proj_dropout": float(m.proj_drop.p)}
        defaults = {key: arg.default for key, arg in self.args.items()}
        return row("outlook_attention", heads=heads,
                   **{key: v for key, v in found.items() if v != defaults[key]})


def _check_modules(m, d, heads, k, p, s):
    """timm's submodules as the kind computes them: v (D -> D), attn (D ->
    k^4*heads, biased), proj (D -> D, biased), the unfold's window and the
    pool's (kernel = stride = s, ceil_mode), the scale 1/sqrt(D/heads)."""
    from .from_torch import NoMapping
    if d % heads:
        raise NoMapping(f"outlook attention of {heads} heads on a width of {d}")
    for lin, out, bias, what in ((m.v, d, m.v.bias is not None, "v"),
                                 (m.attn, k ** 4 * heads, True, "attn"),
                                 (m.proj, d, True, "proj")):
        if (lin.in_features, lin.out_features, lin.bias is not None) != (d, out, bias):
            raise NoMapping(f"outlook attention's {what}: a Linear {lin.in_features} -> "
                            f"{lin.out_features}, not {d} -> {out}"
                            + (" with a bias" if bias else ""))
    u = m.unfold
    if (_pair(u.kernel_size), _pair(u.padding), _pair(u.stride), _pair(u.dilation)) != \
            ((k, k), (p, p), (s, s), (1, 1)):
        raise NoMapping(f"outlook attention whose unfold is not kernel {k}, padding {p}, "
                        f"stride {s}")
    pool = m.pool
    if (_pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding), pool.ceil_mode,
            pool.divisor_override) != ((s, s), (s, s), (0, 0), True, None):
        raise NoMapping(f"outlook attention whose pool is not a {s} x {s} average at "
                        f"stride {s} with ceil_mode")
    if abs(float(m.scale) * (d // heads) ** 0.5 - 1) > 1e-9:
        raise NoMapping(f"outlook attention scaled by {m.scale}, not 1/sqrt(D/heads)")


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
