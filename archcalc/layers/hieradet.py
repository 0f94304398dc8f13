"""HieraDet's block (SAM 2's Hiera image encoder, Ravi et al. 2024), as timm's
``hieradet_sam2.MultiScaleBlock``, on the tokens of an h x w map (its
channels-last B x H x W x C input read flat): a layer norm; where the width
grows, the shortcut a linear C -> C' then a max pool by the q stride; the
map padded with zeros to whole ws x ws windows (or kept whole, window 0);
attention within each (qkv, q max-pooled by the q stride inside the window,
softmax(q k^T / sqrt(d)) v per head, proj); the windows put back and the
padding cut; an optional layer scale, added to the shortcut; then x + MLP
(layer norm, C' -> hidden, GELU, hidden -> C'). The position embedding
before the blocks is hiera.py's position_grid and position_window.

Why one row: the windows fold into the batch (no row can), so the whole
block is the kind, with timm's submodule names (its state_dict loads strictly).

MACs (FlopCounterMode's: the linears and F.scaled_dot_product_attention's
two products; the pools count none): on N positions in, P attended
(the padded map's), Q queries (after the q pool), T keys per query, M
positions out: shortcut N*C*C' + qkv 3*P*C*C' + 2*Q*T*C' + proj Q*C'^2 +
MLP 2*M*C'*hidden."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .hiera import (
    SDPA_MISSED,
    block_tail_costs,
    check_linear,
    check_mlp,
    drop_prob,
    layer_norm_eps,
    layer_scales,
)
from .window_attention import _require_tokens, _square_or_pair, map_size

FP32 = 4


@register
class HieraDetBlock(Kind):
    name = "hieradet_block"
    torch_classes = ("HieraDetBlock",)  # in hieradet_torch.py
    primary = "num_heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("HieraDet's (SAM 2's) block on the tokens of an h x w map: window (or "
               "global) attention with q max-pooled at a stage's start, the shortcut "
               "projected and pooled alike; an MLP")
    flops_rule = ("2 x MACs + 7 per normalized element (N*C, M*C') + the biases (N*C' "
                  "shortcut, 3*P*C' qkv, Q*C' proj, M*hidden + M*C' MLP) + (sy*sx - 1) per "
                  "pooled element (the shortcut's M*C', q's Q*C') + 4 per attention score "
                  "(heads*Q*T) + 5 per MLP hidden element (GELU) + M*C' per layer scale + "
                  "2*M*C' (the residual adds); MACs = N*C*C' (shortcut) + 3*P*C*C' + "
                  "2*Q*T*C' + Q*C'^2 + 2*M*C'*hidden")
    args = {
        "num_heads": Arg("int", min=1, numeric=True, doc="attention heads; C' divides by it"),
        "out": Arg("int", None, min=1, numeric=True, doc="C': the output width (default C)"),
        "q_stride": Arg("pair", 1, min=1, numeric=True,
                        doc="[sy, sx]: the max pool of q and of the shortcut (1: none)"),
        "window": Arg("int", 0, min=0, numeric=True,
                      doc="ws: the windows' side (0: attention over the whole map)"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the map, h*w = N; default the square"),
        "hidden": Arg("int", None, min=1, numeric=True, doc="the MLP's width (default 4C')"),
        "gamma": Arg("float", None, doc="the layer scales' initial gamma (none: no layer "
                                        "scale)"),
        "drop_prob": Arg("float", 0.0, min=0.0, max=1.0,
                         doc="stochastic depth of both residual branches (per sample)"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="of the layer norms"),
    }
    arg_examples = {"num_heads": (1, 2), "out": (None, lambda x: 2 * x[1]),
                    "q_stride": (1, 2), "window": (0, 1, 2), "hidden": (None, 3),
                    "gamma": (None, 0.1),
                    "size": (None, lambda x: [1, x[0]],
                             lambda x: [2, x[0] // 2] if x[0] % 2 == 0 else [x[0], 1])}

    def geometry(self, a, x):
        """(C', (h, w), M out, P attended, Q queries, T keys per query)."""
        n, c = x
        co = a.out if a.out is not None else c
        (h, w), (sy, sx), ws = map_size(self.name, a.size, n), a.q_stride, a.window
        pooled = (sy, sx) != (1, 1)
        if isinstance(co, int) and co % a.num_heads:
            raise SpecError(f"{self.name}: the width {co} does not divide into {a.num_heads} "
                            f"heads. Received: num_heads={a.num_heads}")
        if pooled and co == c:
            raise SpecError(f"{self.name}: q_stride pools the map only where the width grows "
                            "(out); here the shortcut keeps the map")
        m = sym.norm(sym.floordiv(h, sy) * sym.floordiv(w, sx))
        if ws == 0:
            return co, (h, w), m, sym.norm(h * w), m, sym.norm(h * w)
        bh, bw = sym.ceildiv(h, ws), sym.ceildiv(w, ws)      # windows down, across
        qy, qx = ws // sy, ws // sx
        if qy < 1 or qx < 1 or (all(isinstance(v, int) for v in (h, w)) and (
                -(-(h // sy) // qy), -(-(w // sx) // qx)) != (bh, bw)):
            raise SpecError(f"{self.name}: q_stride {[sy, sx]} leaves windows of {ws} "
                            f"that do not tile the pooled map")
        return co, (h, w), m, sym.norm(bh * bw * ws * ws), sym.norm(bh * bw * qy * qx), ws * ws

    def output_shape(self, a, x):
        co, _, m, _, _, _ = self.geometry(a, x)
        return (m, co)

    def size_arithmetic(self, a, x):
        co, (h, w), m, p, q, t = self.geometry(a, x)
        where = f"in {a.window} x {a.window} windows" if a.window else "over the whole map"
        return [f"{sym.plain(h)} x {sym.plain(w)} map, {sym.plain(p)} positions attended "
                f"{where}, {sym.plain(q)} queries of {t} keys, {sym.plain(m)} positions out"]

    def hidden(self, a, co):
        return a.hidden if a.hidden is not None else 4 * co

    def params(self, a, x):
        c = x[1]
        co = self.geometry(a, x)[0]
        hid = self.hidden(a, co)
        return sym.norm(2 * c + (c * co + co if co != c else 0) + 3 * c * co + 3 * co
                        + co * co + co + 2 * co + 2 * co * hid + hid + co
                        + (2 * co if a.gamma is not None else 0))

    def params_formula(self, a, x):
        c, co = x[1], self.geometry(a, x)[0]
        hid, cs, cos = sym.plain(self.hidden(a, co)), sym.plain(c), sym.plain(co)
        return (f"2*{cs} + " + (f"({cs}*{cos} + {cos}) (proj) + " if co != c else "")
                + f"({cs}*3*{cos} + 3*{cos}) + ({cos}*{cos} + {cos}) (attention) + 2*{cos} + "
                f"({cos}*{hid} + {hid}) + ({hid}*{cos} + {cos}) (MLP)"
                + (f" + 2*{cos} (layer scales)" if a.gamma is not None else ""))

    def macs(self, a, x, y):
        n, c = x
        co, _, m, p, q, t = self.geometry(a, x)
        return sym.norm((n * c * co if co != c else 0) + 3 * p * c * co + 2 * q * t * co
                        + q * co * co + 2 * m * co * self.hidden(a, co))

    def macs_missed_by(self, a, x, y):
        co, _, _, _, q, t = self.geometry(a, x)
        return {"fvcore": (sym.norm(2 * q * t * co), SDPA_MISSED)}

    def flops(self, a, x, y):
        n, c = x
        co, _, m, p, q, t = self.geometry(a, x)
        hid, k = self.hidden(a, co), a.q_stride[0] * a.q_stride[1]
        shortcut = n * co + (k - 1) * m * co if co != c else 0
        scales = 2 * m * co if a.gamma is not None else 0
        return sym.norm(2 * self.macs(a, x, y) + 7 * n * c + shortcut + 3 * p * co
                        + (k - 1) * q * co + 4 * a.num_heads * q * t + q * co + 7 * m * co
                        + m * hid + 5 * m * hid + m * co + scales + 2 * m * co)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The norm, the shortcut's GEMM and pool, the padding and windows'
        copy, the qkv GEMM and q's pool, the scores, softmax and weighted
        values, the projection, the windows put back, the residual; the MLP's
        norm, GEMMs and GELU, the residual."""
        n, c = x
        co, _, m, p, q, t = self.geometry(a, x)
        hid = self.hidden(a, co)
        pooled = tuple(a.q_stride) != (1, 1)
        out = [Cost("layer_norm", elements=sym.norm(n * c), tensors=(c, c))]
        if co != c:
            out.append(Cost("linear", gemm=(n, co, c), tensors=(c * co, co)))
        if pooled:
            out.append(Cost("maxpool2s2", elements=sym.norm(n * co)))
        if a.window:
            out.append(Cost("copy", elements=sym.norm(p * c)))
        out.append(Cost("linear", gemm=(p, 3 * co, c), tensors=(3 * c * co, 3 * co)))
        if pooled:
            out.append(Cost("maxpool2s2", elements=sym.norm(p * co)))
        out += [Cost("linear", gemm=(q, t, co)),
                Cost("softmax", elements=sym.norm(a.num_heads * q * t)),
                Cost("linear", gemm=(q, co, t)),
                Cost("linear", gemm=(q, co, co), tensors=(co * co, co))]
        if a.window:
            out.append(Cost("copy", elements=sym.norm(q * co)))
        return (*out, *block_tail_costs(m, co, hid, a.gamma))

    def saved(self, a, x, y):
        # the norm's statistics and output, the shortcut's projection, the
        # windows, q, k, v, pooled q, the scores per head, the heads' output;
        # the MLP's norm input, statistics and output, hidden before and after GELU
        n, c = x[0], x[-1]
        try:
            co, _, m, p, q, t = self.geometry(a, (n, c))
        except SpecError:       # the engine may ask with a placeholder shape
            co, m, p, q, t = c, n, n, n, n
        hid = self.hidden(a, co)
        return Saved(input=True, extra=tuple((sym.norm(e), s) for e, s in (
            (2 * n, FP32), (n * c, None), (n * co, None), (p * c, None), (3 * p * co, None),
            (q * co, None), (a.num_heads * q * t, None), (q * co, None), (m * co, None),
            (2 * m, FP32), (m * co, None), (m * hid, None), (m * hid, None))))

    def build(self, a, x):
        from .hieradet_torch import HieraDetBlock as Module
        co, (h, w), _, _, _, _ = self.geometry(a, x)
        stride = tuple(a.q_stride) if tuple(a.q_stride) != (1, 1) else None
        return Module(x[1], co, a.num_heads, h, w, stride, a.window, self.hidden(a, co),
                      a.gamma, a.drop_prob, a.eps)

    torch_modules = ("archcalc.layers.hieradet_torch.HieraDetBlock",
                     "timm.models.hieradet_sam2.MultiScaleBlock")

    def from_torch(self, call, m):
        """timm's MultiScaleBlock on B x H x W x C (or archcalc's on the tokens)."""
        from .from_torch import NoMapping, row
        _require_tokens(call, "a MultiScaleBlock")
        own = getattr(m, "map_size", None)
        if own is None and len(call.x_torch) != 3:
            raise NoMapping(f"a MultiScaleBlock on a {list(call.x_torch)} input (it takes "
                            "B x H x W x C)")
        h, w = (int(v) for v in (own or call.x_torch[:2]))
        n, c = call.x
        at, co = m.attn, int(m.dim_out)
        heads, ws = int(at.num_heads), tuple(int(v) for v in m.window_size)
        if n != h * w or int(m.dim) != c or co % heads or ws[0] != ws[1] or \
                (getattr(at, "scale", None) is not None and
                 abs(float(at.scale) * (co // heads) ** 0.5 - 1) > 1e-9):
            raise NoMapping(f"a MultiScaleBlock of width {m.dim} -> {co} with {heads} heads, "
                            f"windows {list(ws)}, on {h} x {w} x {c}")
        check_linear(at.qkv, c, 3 * co, "MultiScaleBlock")
        check_linear(at.proj, co, co, "MultiScaleBlock")
        if co != c:
            check_linear(m.proj, c, co, "MultiScaleBlock")
        stride = _q_stride(m)
        eps = layer_norm_eps(m.norm1, c, "MultiScaleBlock")
        if layer_norm_eps(m.norm2, co, "MultiScaleBlock") != eps:
            raise NoMapping("a MultiScaleBlock whose two layer norms differ")
        hidden = check_mlp(m.mlp, co, "MultiScaleBlock")
        found = {"num_heads": heads, "out": co if co != c else None,
                 "q_stride": stride[0] if stride[0] == stride[1] else list(stride),
                 "window": ws[0], "size": _square_or_pair(h, w),
                 "hidden": hidden if hidden != 4 * co else None,
                 "gamma": layer_scales(m.ls1, m.ls2, co, "MultiScaleBlock"),
                 "drop_prob": drop_prob(m, "MultiScaleBlock"), "eps": eps}
        return row("hieradet_block", **{k: v for k, v in found.items()
                                        if k == "num_heads" or v != self.args[k].default})


def _q_stride(m) -> tuple:
    """The block's q stride: its pool and its attention's q_pool both a max pool
    of that kernel and stride (no padding, floor), or neither (1, 1)."""
    from .from_torch import NoMapping
    if m.q_stride is None:
        if m.pool is not None or m.attn.q_pool is not None:
            raise NoMapping("a MultiScaleBlock with a pool but no q_stride")
        return (1, 1)
    stride = tuple(int(v) for v in m.q_stride)
    for pool in (m.pool, m.attn.q_pool):
        if type(pool).__name__ != "MaxPool2d":
            raise NoMapping(f"a MultiScaleBlock whose pool is a {type(pool).__name__}")
        k = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
        s = pool.stride if isinstance(pool.stride, tuple) else (pool.stride,) * 2
        p = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,) * 2
        d = pool.dilation if isinstance(pool.dilation, tuple) else (pool.dilation,) * 2
        if tuple(k) != stride or tuple(s) != stride or tuple(p) != (0, 0) or \
                tuple(d) != (1, 1) or pool.ceil_mode:
            raise NoMapping(f"a MultiScaleBlock whose pools are not max pools of {stride}")
    return stride
