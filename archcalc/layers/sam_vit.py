"""SAM's ViT block (Kirillov et al. 2023, "Segment Anything"; Li et al.
2022, ViTDet), as timm.models.vision_transformer_sam's Block, on the tokens
of an h x w map (its channels-last B x H x W x C input read flat):

- x + attention of norm1(x): where ``window`` > 0, the normalized map
  padded with zeros at the bottom and right to whole M x M windows and the
  attention run in each window (the padded positions computed, then cut);
  ``window`` = 0 attends over the whole map. The attention: qkv, per head
  scores plus MViTv2's decomposed relative position bias (``rel_pos``: a
  table per axis of (2s - 1) x head width, s the window's or map's side;
  each query times the table's rows for its offsets, q . R_h[dy] + q . R_w[dx],
  two einsums), softmax, the heads' values, proj;
- x + MLP(norm2(x)) (C -> hidden, GELU, hidden -> C).

Why one row: timm's block pads and partitions the map into windows folded
into the batch, and the attention reads its map's height and width from
the input's shape (its bias tables are gathered by them): no row holds a
B*windows x M x M x C tensor.

MACs (FlopCounterMode's, on the padded map's N' positions): qkv 3*N'*C^2,
the relative position einsums N'*C*(Mh + Mw) (each query against a side's
offsets), scores and weighted values 2*N'*T*C (T = M*M, or N), proj
N'*C^2; the MLP 2*N*C*hidden on the map's N."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .composite import mlp_costs
from .window_attention import _require_tokens, _square_or_pair, map_size

FP32 = 4
SDPA_MISSED = ("fvcore has no handler for aten::scaled_dot_product_attention (the two "
               "attention matmuls, 2*N'*T*C)")


@register
class SamBlock(Kind):
    name = "sam_block"
    torch_classes = ("SamBlock",)  # in sam_vit_torch.py
    aliases = ("vitdet_block",)
    primary = "num_heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("SAM's (ViTDet's) ViT block on the tokens of an h x w map: attention in "
               "M x M windows (the map padded to whole windows) or over the whole map, "
               "with a decomposed relative position bias per axis; an MLP; pre-norm "
               "residuals")
    flops_rule = ("2 x MACs + per attention score 6 (the two bias tables' add, the bias "
                  "add, softmax) + 5 per normalized element (two layer norms, on N' then N "
                  "positions) + 8 per MLP hidden element (GELU) + the biases + 2*N*C (the "
                  "residual adds); MACs = 4*N'*C^2 + N'*C*(Mh + Mw) + 2*N'*T*C + "
                  "2*N*C*hidden, N' the padded map's positions, T a window's")
    args = {
        "num_heads": Arg("int", min=1, numeric=True, doc="attention heads; C must divide by it"),
        "window": Arg("int", 0, min=0, numeric=True,
                      doc="M: the windows' side; 0: global attention over the whole map"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the map, h*w = N; default: the square sqrt(N) x sqrt(N)"),
        "hidden": Arg("int", None, min=1, numeric=True, doc="the MLP's width (default 4C)"),
        "qkv_bias": Arg("bool", True, doc="the qkv Linear's bias"),
        "rel_pos": Arg("bool", True, doc="the decomposed relative position bias (timm's "
                                         "use_rel_pos)"),
        "drop_prob": Arg("float", 0.0, min=0.0, max=1.0,
                         doc="stochastic depth of both residual branches (per sample)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the two layer norms"),
    }
    arg_examples = {"num_heads": (1, 2), "window": (0, 1, 2, 3), "hidden": (None, 3),
                    "size": (None, lambda x: [1, x[0]],
                             lambda x: [2, x[0] // 2] if x[0] % 2 == 0 else [x[0], 1])}

    def geometry(self, a, x):
        """(h, w), the attended (padded) positions N', a window's sides (sh, sw)."""
        c, (h, w) = x[1], map_size(self.name, a.size, x[0])
        if isinstance(c, int) and c % a.num_heads:
            raise SpecError(f"{self.name}: the width {c} does not divide into {a.num_heads} "
                            f"heads. Received: num_heads={a.num_heads}")
        m = a.window
        if not m:
            return (h, w), sym.norm(h * w), (h, w)
        padded = sym.norm(sym.ceildiv(h, m) * m * sym.ceildiv(w, m) * m)
        return (h, w), padded, (m, m)

    def output_shape(self, a, x):
        self.geometry(a, x)
        return x

    def size_arithmetic(self, a, x):
        if not a.window:
            return []
        (h, w), padded, _ = self.geometry(a, x)
        m = a.window
        return [f"ceil({sym.plain(h)}/{m})*{m} x ceil({sym.plain(w)}/{m})*{m} = "
                f"{sym.fmt_int(padded)} positions attended in {m} x {m} windows"]

    def hidden(self, a, x):
        return a.hidden if a.hidden is not None else sym.norm(4 * x[1])

    def tables(self, a, x):
        """The relative position tables' rows, (2*sh - 1) + (2*sw - 1), or 0."""
        (sh, sw) = self.geometry(a, x)[2]
        return sym.norm(2 * sh - 1 + 2 * sw - 1) if a.rel_pos else 0

    def window(self, a, x):
        (h, w), _, (sh, sw) = self.geometry(a, x)
        return tuple(min(s, side) if isinstance(side, int) and isinstance(s, int) else s
                     for s, side in ((sh, h), (sw, w))), (1, 1)

    def params(self, a, x):
        c, hid = x[1], self.hidden(a, x)
        d = sym.exact_div(c, a.num_heads)
        attn = 3 * c * c + (3 * c if a.qkv_bias else 0) + c * c + c + self.tables(a, x) * d
        return sym.norm(2 * c + attn + 2 * c + c * hid + hid + hid * c + c)

    def params_formula(self, a, x):
        c, hid = sym.plain(x[1]), sym.plain(self.hidden(a, x))
        qkv = f"({c}*3*{c} + 3*{c})" if a.qkv_bias else f"{c}*3*{c}"
        rel = ""
        if a.rel_pos:
            (sh, sw) = (sym.plain(s) for s in self.geometry(a, x)[2])
            rel = f" + (2*{sh} - 1 + 2*{sw} - 1)*{c}/{a.num_heads} (relative position tables)"
        return (f"2*{c} + {qkv} + ({c}*{c} + {c}){rel} + 2*{c} + ({c}*{hid} + {hid}) + "
                f"({hid}*{c} + {c})")

    def attended(self, a, x):
        """(N', T, sh + sw): the positions attended, a window's, the bias's offsets."""
        _, padded, (sh, sw) = self.geometry(a, x)
        return padded, sym.norm(sh * sw), (sym.norm(sh + sw) if a.rel_pos else 0)

    def macs(self, a, x, y):
        n, c = x
        padded, t, offsets = self.attended(a, x)
        return sym.norm(4 * padded * c * c + padded * c * offsets + 2 * padded * t * c
                        + 2 * n * c * self.hidden(a, x))

    def macs_missed_by(self, a, x, y):
        padded, t, _ = self.attended(a, x)
        return {"fvcore": (sym.norm(2 * padded * t * x[1]), SDPA_MISSED)}

    def flops(self, a, x, y):
        n, c = x
        padded, t, _ = self.attended(a, x)
        hid = self.hidden(a, x)
        per_score = 6 if a.rel_pos else 4
        biases = padded * ((3 if a.qkv_bias else 0) * c + c) + n * (hid + c)
        return sym.norm(2 * self.macs(a, x, y) + per_score * a.num_heads * padded * t
                        + 5 * padded * c + 5 * n * c + 8 * n * hid + biases + 2 * n * c)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The norm, the padding and windows' copy, the qkv GEMM, the bias
        einsums, the scores and weighted values, the softmax, the projection,
        the windows back, the residual; the MLP's norm, GEMMs, GELU, residual."""
        n, c = x
        padded, t, offsets = self.attended(a, x)
        hid = self.hidden(a, x)
        rel = (Cost("linear", gemm=(padded, offsets, sym.exact_div(c, a.num_heads)),
                    tensors=(sym.norm(self.tables(a, x) * sym.exact_div(c, a.num_heads)),)),
               Cost("add", elements=sym.norm(a.num_heads * padded * t))) if a.rel_pos else ()
        return (Cost("layer_norm", elements=sym.norm(n * c), tensors=(c, c)),
                Cost("copy", elements=sym.norm(padded * c)),
                Cost("linear", gemm=(padded, 3 * c, c),
                     tensors=(3 * c * c,) + ((3 * c,) if a.qkv_bias else ())),
                *rel,
                Cost("linear", gemm=(padded, t, c)),
                Cost("softmax", elements=sym.norm(a.num_heads * padded * t)),
                Cost("linear", gemm=(padded, c, t)),
                Cost("linear", gemm=(padded, c, c), tensors=(c * c, c)),
                Cost("copy", elements=sym.norm(padded * c)),
                Cost("add", elements=sym.norm(n * c)),
                *mlp_costs(n, c, hid),
                Cost("add", elements=sym.norm(n * c)))

    def saved(self, a, x, y):
        # the norm's input, statistics and output, the padded windows (the
        # qkv's input), q, k, v, the bias (a score per head and pair), the
        # softmax's output, the heads' output; the MLP's norm input,
        # statistics, output, hidden before and after GELU
        n, c = x[0], x[-1]
        try:
            padded, t, _ = self.attended(a, x)
        except SpecError:       # the engine may ask with a placeholder shape
            padded, t = n, n
        hid = a.hidden if a.hidden is not None else 4 * c
        scores = a.num_heads * padded * t
        return Saved(input=True, extra=tuple(
            (sym.norm(e), s) for e, s in (
                (2 * n, FP32), (n * c, None), (padded * c, None), (3 * padded * c, None),
                *(((scores, None),) if a.rel_pos else ()), (scores, None), (padded * c, None),
                (n * c, None), (2 * n, FP32), (n * c, None), (n * hid, None),
                (n * hid, None))))

    def build(self, a, x):
        from .sam_vit_torch import SamBlock as Module
        (h, w), _, (sh, sw) = self.geometry(a, x)
        return Module(x[1], a.num_heads, a.window, h, w, self.hidden(a, x), a.qkv_bias,
                      a.rel_pos, (sh, sw), a.drop_prob, a.eps)

    torch_modules = ("archcalc.layers.sam_vit_torch.SamBlock",
                     "timm.models.vision_transformer_sam.Block")

    def from_torch(self, call, m):
        """timm's SAM Block on B x H x W x C (or archcalc's on the tokens)."""
        from .from_torch import NoMapping, row
        _require_tokens(call, "a SAM block")
        if hasattr(m, "init_args"):     # archcalc's own, as built
            (c, heads, ws, h, w, hidden, qkv_bias, rel_pos, _, drop, eps) = m.init_args
        else:
            if len(call.x_torch) != 3:
                raise NoMapping(f"a SAM block on a {list(call.x_torch)} input (it takes "
                                "B x H x W x C)")
            (h, w), (n, c) = (int(v) for v in call.x_torch[:2]), call.x
            ws = int(m.window_size)
            if n != h * w:
                raise NoMapping(f"a SAM block on {n} tokens of a {h} x {w} map")
            heads, qkv_bias, rel_pos = _check_attention(m.attn, c, (ws, ws) if ws else (h, w))
            eps = {_layer_norm_eps(m.norm1, c), _layer_norm_eps(m.norm2, c)}
            hidden = _check_mlp(m.mlp, c)
            if any(type(getattr(m, name, None)).__name__ not in ("Identity", "NoneType")
                   for name in ("ls1", "ls2")):
                raise NoMapping("a SAM block with layer scales (init_values)")
            drops = {_drop_path(getattr(m, name, None)) for name in ("drop_path1", "drop_path2")}
            if len(drops) != 1 or len(eps) != 1:
                raise NoMapping("a SAM block whose two residual branches drop otherwise, or "
                                "whose norms' eps differ")
            drop, eps = drops.pop(), eps.pop()
        found = {"num_heads": heads, "window": ws, "size": _square_or_pair(h, w),
                 "hidden": hidden if hidden != 4 * c else None, "qkv_bias": qkv_bias,
                 "rel_pos": rel_pos, "drop_prob": drop, "eps": eps}
        return row("sam_block", **{key: v for key, v in found.items()
                                   if key == "num_heads" or v != self.args[key].default})


def _layer_norm_eps(norm, c) -> float:
    from .from_torch import NoMapping
    if type(norm).__name__ != "LayerNorm" or tuple(norm.normalized_shape) != (c,) or \
            not norm.elementwise_affine or norm.bias is None:
        raise NoMapping(f"a SAM block norm other than a layer norm over {c} "
                        f"({type(norm).__name__})")
    return float(norm.eps)


def _is_linear(fc, cin, cout, bias=True):
    return type(fc).__name__ == "Linear" and (fc.in_features, fc.out_features) == (cin, cout) \
        and (fc.bias is not None) == bias


def _check_attention(attn, c, sides):
    """(heads, qkv_bias, rel_pos) of timm's SAM Attention: qkv, no q/k norm,
    no rotary embedding, relative position tables of 2s - 1 rows per axis
    (none to interpolate), proj with a bias, no dropout."""
    from .from_torch import NoMapping
    heads = int(attn.num_heads)
    hd = c // heads
    qkv_bias = attn.qkv.bias is not None
    rel_pos = bool(attn.use_rel_pos)
    if c % heads or int(attn.head_dim) != hd or abs(float(attn.scale) * hd ** 0.5 - 1) > 1e-9 \
            or not _is_linear(attn.qkv, c, 3 * c, qkv_bias) or not _is_linear(attn.proj, c, c) \
            or getattr(attn, "rope", None) is not None or \
            any(type(getattr(attn, n, None)).__name__ not in ("Identity", "NoneType")
                for n in ("q_norm", "k_norm")) or attn.attn_drop.p or attn.proj_drop.p:
        raise NoMapping("a SAM attention other than C/heads-wide heads, qkv and proj, no "
                        "q/k norm, no rotary embedding, no dropout")
    if rel_pos and (tuple(attn.rel_pos_h.shape) != (2 * sides[0] - 1, hd) or
                    tuple(attn.rel_pos_w.shape) != (2 * sides[1] - 1, hd)):
        raise NoMapping(f"SAM relative position tables of {list(attn.rel_pos_h.shape)} and "
                        f"{list(attn.rel_pos_w.shape)} for a {sides[0]} x {sides[1]} "
                        "attention (timm interpolates them)")
    return heads, qkv_bias, rel_pos


def _check_mlp(mlp, c):
    """timm's Mlp: fc1, GELU, fc2 (no norm, no dropout)."""
    from .from_torch import NoMapping
    hidden = int(mlp.fc1.out_features)
    act = mlp.act
    if not _is_linear(mlp.fc1, c, hidden) or not _is_linear(mlp.fc2, hidden, c) or \
            type(act).__name__ != "GELU" or act.approximate != "none" or \
            type(getattr(mlp, "norm", None)).__name__ not in ("Identity", "NoneType") or \
            any(getattr(getattr(mlp, n, None), "p", 0.0) for n in ("drop1", "drop2")):
        raise NoMapping("a SAM block MLP other than C -> hidden, GELU, hidden -> C, no dropout")
    return hidden


def _drop_path(module) -> float:
    """Identity (or none): 0; timm's DropPath, scaled by 1/(1 - p): p."""
    from .from_torch import NoMapping
    name = type(module).__name__
    if name in ("Identity", "NoneType"):
        return 0.0
    if name == "DropPath" and getattr(module, "scale_by_keep", True):
        return float(module.drop_prob)
    raise NoMapping(f"a SAM block residual through {name}")


__all__ = ["SamBlock"]
