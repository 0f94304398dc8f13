"""Attention in windows: Swin (Liu et al. 2021) and Swin V2 (Liu et al. 2022)
shifted-window attention and patch merging, and MaxViT's (Tu et al. 2022)
block and grid partitions with their relative-position attention.

Layout: these kinds act on tokens (N, D), the spec's shape for a
channels-last B x H x W x C map read flat (N = H*W positions, row-major; the
importer's ``Permute([0, 2, 3, 1])`` is the ``tokens`` row). Tokens carry no
height and width, so a kind that needs the map takes ``size = [h, w]``
(h*w = N), a square map by default, as ``to_map`` does. MaxViT's partitions
reorder the positions (window order: P x P windows, each P*P positions in a
row); the attention then runs on each group of P*P consecutive tokens.

MACs are what torch.utils.flop_counter.FlopCounterMode counts of the module
on the meta device (its matrix products), divided by two: a window's
relative-position bias is a gather (no MAC), the shift's mask and the
softmax are elementwise (FLOPs, not MACs). Swin pads the map to whole
windows; the padded positions are computed and counted, as PyTorch does.
"""
from __future__ import annotations

from math import isqrt

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

CPB_HIDDEN = 512     # Swin V2's continuous position bias MLP: 2 -> 512 -> heads
INT64 = 8
FP32 = 4


def map_size(kind: str, size, n):
    """(h, w) of the map whose N positions the tokens are: ``size`` checked
    against N, or the square map by default (as ``to_map``)."""
    if size is not None:
        h, w = size
        if isinstance(n, int) and h * w != n:
            raise SpecError(f"{kind}: a {h} x {w} map has {h * w} positions, but there are "
                            f"{n} tokens. Received: size={[h, w]}")
        return h, w
    if not isinstance(n, int):
        raise SpecError(f"{kind}: give size = [h, w] where the token count is a formula")
    side = isqrt(n)
    if side * side != n:
        raise SpecError(f"{kind}: {n} tokens make no square map; give size = [h, w]")
    return side, side


def _square_or_pair(h, w):
    return None if h == w else [h, w]


def _require_tokens(call, what):
    from .from_torch import NoMapping
    if len(call.x) != 2:
        raise NoMapping(f"{what} on a {len(call.x)}-d input (it takes tokens)")


def _torch_map(call, m, what):
    """(h, w) a module reads: archcalc's own (``map_size``), or the
    channels-last (H, W, C) input PyTorch measured for torchvision's."""
    from .from_torch import NoMapping
    own = getattr(m, "map_size", None)
    if own is not None:
        return tuple(int(v) for v in own)
    if len(call.x_torch) != 3:
        raise NoMapping(f"{what} on a {list(call.x_torch)} input (it takes B x H x W x C)")
    return int(call.x_torch[0]), int(call.x_torch[1])


# --------------------------------------------------------------------------
# Swin: shifted-window attention, V1 and V2


@register
class WindowAttention(Kind):
    """Swin's (shifted) window attention, torchvision's ShiftedWindowAttention:
    the map padded to whole M x M windows, cyclically shifted by ``shift``
    (a mask of -100 keeps the wrapped regions apart), multi-head
    self-attention within each window with a learned relative position bias
    ((2Mh-1)(2Mw-1) x heads table, gathered per pair of positions), the
    output projection, the shift undone and the padding cut. A shift is
    dropped on an axis the (padded) map fits in one window, as torchvision
    does. Receptive field: a window is assumed to be M x M positions (a
    shifted window is another M x M), so each row grows the field by M - 1
    steps per axis (capped at the map): the field's shape, not the exact set
    of positions a token sees near a window's edge. MACs: the four matrix
    products FlopCounterMode counts (QKV, scores, weighted sum, projection);
    it does not see the bias gather, the shift's roll and mask, the scaling
    and the softmax, which are FLOPs (elementwise), not MACs."""
    name = "window_attention"
    torch_classes = ("ShiftedWindowAttention",)  # in window_attention_torch.py
    aliases = ("swin_attention", "shifted_window_attention")
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    v2 = False
    summary = ("Swin's (shifted) window attention over the tokens of an h x w map: "
               "QKV and output projections, a relative position bias table per head")
    flops_rule = ("2 x MACs + 5 per attention score (bias add; softmax: scale, exp, sum, "
                  "divide) + 1 per score where shifted (mask) + N'*D (q scaling); "
                  "MACs = 4*N'*D^2 + 2*N'*M^2*D, N' = the padded map's positions")
    args = {
        "heads": Arg("int", min=1, numeric=True, doc="attention heads; D must divide by it"),
        "window": Arg("pair", min=1, numeric=True, doc="the window M (torchvision's window_size)"),
        "shift": Arg("pair", 0, min=0, numeric=True,
                     doc="cyclic shift, less than the window (M/2 in every second block)"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the map, h*w = N; default: the square sqrt(N) x sqrt(N)"),
        "qkv_bias": Arg("bool", True),
        "proj_bias": Arg("bool", True),
        "roll_first": Arg("bool", False, doc="timm's order: the map rolled, then padded to "
                          "whole windows (the shift kept where they differ)"),
        "attention_dropout": Arg("float", 0.0, min=0.0, max=1.0),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }
    arg_examples = {"heads": (1, 2, 4), "size": (None, lambda x: [1, x[0]], lambda x: [x[0], 1])}

    def geometry(self, a, x):
        """(h, w), the padded (ph, pw), the window's positions T, the shift kept."""
        h, w = map_size(self.name, a.size, x[0])
        (wh, ww), (sh, sw) = a.window, a.shift
        if sh >= wh or sw >= ww:
            raise SpecError(f"{self.name}: the shift must be less than the window. "
                            f"Received: shift={list(a.shift)}, window={list(a.window)}")
        ph, pw = sym.ceildiv(h, wh) * wh, sym.ceildiv(w, ww) * ww
        shift = (sh, sw) if a.roll_first else (0 if wh >= ph else sh, 0 if ww >= pw else sw)
        return (h, w), (ph, pw), wh * ww, shift

    def output_shape(self, a, x):
        d = x[1]
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"{self.name}: the width {d} does not divide into {a.heads} heads. "
                            f"Received: heads={a.heads}")
        self.geometry(a, x)
        return x

    def table(self, a):
        (wh, ww) = a.window
        return (2 * wh - 1) * (2 * ww - 1)

    def params(self, a, x):
        d = x[1]
        projections = 4 * d * d + self.qkv_bias_count(a, d) + (d if a.proj_bias else 0)
        return sym.norm(projections + self.bias_params(a))

    def qkv_bias_count(self, a, d):
        return 3 * d if a.qkv_bias else 0

    def bias_params(self, a):
        return self.table(a) * a.heads

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        qkv = f"(3*{d}*{d}" + (f" + {3 - (not getattr(a, 'k_bias', True))}*{d})"
                               if a.qkv_bias else ")")
        proj = f"({d}*{d}" + (f" + {d})" if a.proj_bias else ")")
        return f"{qkv} + {proj} + {self.bias_formula(a)}"

    def bias_formula(self, a):
        (wh, ww) = a.window
        return f"(2*{wh} - 1)*(2*{ww} - 1)*{a.heads}"

    def buffers(self, a, x):
        (wh, ww) = a.window
        return (wh * ww) ** 2      # relative_position_index

    def macs(self, a, x, y):
        _, (ph, pw), t, _ = self.geometry(a, x)
        n, d = sym.norm(ph * pw), x[1]
        return sym.norm(4 * n * d * d + 2 * n * t * d)

    def macs_formula(self, a, x, y):
        _, (ph, pw), t, _ = self.geometry(a, x)
        n, d = sym.plain(sym.norm(ph * pw)), sym.plain(x[1])
        return f"4*{n}*{d}^2 + 2*{n}*{t}*{d}"

    def flops(self, a, x, y):
        _, (ph, pw), t, shift = self.geometry(a, x)
        n = sym.norm(ph * pw)
        scores = a.heads * n * t
        return sym.norm(2 * self.macs(a, x, y) + (6 if any(shift) else 5) * scores
                        + n * x[1])

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        # a window past the map's edge sees only the map (the rest is padding)
        (h, w), _, _, _ = self.geometry(a, x)
        return tuple(min(m, side) if isinstance(side, int) else m
                     for m, side in zip(a.window, (h, w))), (1, 1)

    def saved(self, a, x, y):
        # a training step keeps (saved_tensors_hooks on the module): the windows
        # (the qkv projection's input, a copy), the scaled q and the contiguous
        # copies of k and v the batched products make (3*N'*D), the softmax's
        # output per head and pair, the attention output before the projection;
        # the relative_position_index the bias gather reads (int64, once per batch)
        n, d = self.padded_tokens(a, x), x[-1]
        scores = sym.norm(a.heads * n * self.geometry(a, x)[2])
        return Saved(extra=((n * d, None), (3 * n * d, None), (scores, None), (n * d, None)),
                     per_batch=((self.buffers(a, x), INT64),))

    def padded_tokens(self, a, x):
        _, (ph, pw), _, _ = self.geometry(a, x)
        return sym.norm(ph * pw)

    def cost(self, a, x, y):
        """The QKV projection (a GEMM: N' tokens, 3D out, D in), the scores and
        the weighted sum (GEMMs of N' x T x D), the softmax over heads*N'*T
        scores, the output projection (N', D, D)."""
        n, d = self.padded_tokens(a, x), x[1]
        t = self.geometry(a, x)[2]
        return (Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d,)
                     + ((3 * d,) if a.qkv_bias else ())),
                Cost("linear", gemm=(n, t, d)),
                Cost("softmax", elements=sym.norm(a.heads * n * t),
                     tensors=(self.bias_params(a),)),
                Cost("linear", gemm=(n, d, t)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d,) + ((d,) if a.proj_bias else ())))

    def build(self, a, x):
        from .window_attention_torch import ShiftedWindowAttention as Module
        (h, w), _, _, _ = self.geometry(a, x)
        v2 = dict(k_bias=a.k_bias, pretrained_window=a.pretrained_window) if self.v2 else {}
        return Module(x[1], list(a.window), list(a.shift), a.heads, h, w, a.qkv_bias,
                      a.proj_bias, a.attention_dropout, a.dropout, v2=self.v2,
                      roll_first=a.roll_first, **v2)

    torch_modules = ("archcalc.layers.window_attention_torch.ShiftedWindowAttention",
                     "torchvision.models.swin_transformer.ShiftedWindowAttention")

    def from_torch(self, call, m):
        """torchvision's ShiftedWindowAttention(V2), or archcalc's (V1 or V2
        by its ``v2``): the window, shift and heads it holds, the map it is
        called on, whether its projections have biases."""
        from .from_torch import NoMapping, pair, row
        _require_tokens(call, "window attention")
        v2 = getattr(m, "v2", hasattr(m, "cpb_mlp"))
        if v2 and (len(m.cpb_mlp) != 3 or m.cpb_mlp[0].out_features != CPB_HIDDEN):
            raise NoMapping("a continuous position bias MLP other than 2 -> 512 -> heads")
        h, w = _torch_map(call, m, "window attention")
        from .swin_timm import v2_args
        return row("window_attention_v2" if v2 else "window_attention", heads=int(m.num_heads),
                   window=pair(m.window_size), shift=pair(m.shift_size),
                   size=_square_or_pair(h, w), qkv_bias=m.qkv.bias is not None
                   or getattr(m, "q_bias", None) is not None, proj_bias=m.proj.bias is not None,
                   attention_dropout=float(m.attention_dropout), dropout=float(m.dropout),
                   roll_first=bool(getattr(m, "roll_first", False)),
                   **(v2_args(m) if v2 else {}))

    torch_methods = {"timm.models.swin_transformer.SwinTransformerBlock._attn": "attn"}

    def from_torch_method(self, call, block):
        """timm's SwinTransformerBlock._attn: the shift, windows and attention
        of ``block.attn`` (timm's WindowAttention: its relative position bias
        table, q scaled by the head width's -0.5 power, a mask of -100)."""
        from .from_torch import NoMapping, pair, row
        from .swin_timm import timm_windows
        window, shift, h, w, roll_first = timm_windows(call, block, "timm's Swin block")
        m, d = block.attn, call.x[1]
        if m.qkv.out_features != 3 * d or m.proj.in_features != d or m.proj.bias is None or \
                tuple(m.relative_position_bias_table.shape) != ((2 * window[0] - 1) *
                                                                (2 * window[1] - 1), m.num_heads):
            raise NoMapping("timm's window attention with a head width other than D/heads")
        return row("window_attention", heads=int(m.num_heads), window=pair(window),
                   shift=pair(shift), size=_square_or_pair(h, w), qkv_bias=m.qkv.bias is not None,
                   roll_first=roll_first, attention_dropout=float(m.attn_drop.p),
                   dropout=float(m.proj_drop.p))


@register
class WindowAttentionV2(WindowAttention):
    """Swin V2's window attention (torchvision's ShiftedWindowAttentionV2):
    cosine attention (q and k normalized) times a learned logit scale per head
    (clamped at log 100, then exp), and a continuous position bias: an MLP
    (2 -> 512 -> heads, ReLU) of log-spaced relative coordinates, through
    16*sigmoid. The k bias is zeroed on every call (kept as a parameter).
    Where FlopCounterMode's count differs: the bias MLP runs once per forward
    pass, whatever the batch, and the MACs here count it per sample (exact at
    batch 1, as `archcalc check` runs)."""
    name = "window_attention_v2"
    torch_classes = ("ShiftedWindowAttention",)  # in window_attention_torch.py
    aliases = ("swin_v2_attention",)
    v2 = True
    summary = ("Swin V2's window attention: cosine attention with a logit scale per head "
               "and a continuous position bias MLP (2 -> 512 -> heads)")
    flops_rule = ("as window_attention, with q and k normalized (6*N'*D) in place of the "
                  "q scaling, 1 more per score (the logit scale); MACs add the bias MLP "
                  "on (2Mh-1)(2Mw-1) coordinates: (2Mh-1)(2Mw-1)*(2*512 + 512*heads)")
    flop_counter_gap = ("the continuous position bias MLP runs once per forward pass, not "
                        "per sample: FlopCounterMode at batch B counts it once where B x "
                        "MACs counts it B times (tests/test_kind_windows.py compares both)")
    args = {**WindowAttention.args,
            "window": Arg("pair", min=2, numeric=True,
                          doc="the window M, at least 2 (the coordinates divide by M - 1)"),
            "k_bias": Arg("bool", True, doc="the qkv bias as torchvision's qkv.bias (3D, its "
                          "k third zeroed on each call); false: timm's q_bias and v_bias (2D), "
                          "the k bias a zero buffer"),
            "pretrained_window": Arg("pair", None, min=1, numeric=True,
                                     doc="timm's pretrained_window_size: the window the "
                                     "coordinates are scaled to (default: the window)")}
    torch_methods = {"timm.models.swin_transformer_v2.SwinTransformerV2Block._attn": "attn"}

    def qkv_bias_count(self, a, d):
        return (3 if a.k_bias else 2) * d if a.qkv_bias else 0

    def from_torch_method(self, call, block):
        """timm's SwinTransformerV2Block._attn: the shift, windows and attention
        of ``block.attn`` (timm's V2 WindowAttention: cosine attention, the
        continuous position bias MLP 2 -> 512 -> heads, q_bias and v_bias)."""
        from .from_torch import NoMapping, pair, row
        from .swin_timm import timm_windows, v2_args
        window, shift, h, w, roll_first = timm_windows(call, block, "timm's Swin V2 block")
        m, d = block.attn, call.x[1]
        if m.qkv.bias is not None or m.qkv.out_features != 3 * d or m.proj.bias is None or \
                len(m.cpb_mlp) != 3 or m.cpb_mlp[0].out_features != CPB_HIDDEN or \
                tuple(m.logit_scale.shape) != (m.num_heads, 1, 1):
            raise NoMapping("timm's V2 window attention other than 3D qkv without bias, "
                            "q_bias and v_bias, a 2 -> 512 -> heads position bias MLP")
        return row("window_attention_v2", heads=int(m.num_heads), window=pair(window),
                   shift=pair(shift), size=_square_or_pair(h, w),
                   qkv_bias=m.q_bias is not None, attention_dropout=float(m.attn_drop.p),
                   roll_first=roll_first,
                   dropout=float(m.proj_drop.p), **v2_args(m))

    def bias_params(self, a):
        return sym.norm(a.heads + 2 * CPB_HIDDEN + CPB_HIDDEN + CPB_HIDDEN * a.heads)

    def bias_formula(self, a):
        return f"{a.heads} + (2*{CPB_HIDDEN} + {CPB_HIDDEN}) + {CPB_HIDDEN}*{a.heads}"

    def buffers(self, a, x):
        return sym.norm(super().buffers(a, x) + 2 * self.table(a))   # + relative_coords_table

    def bias_macs(self, a):
        return self.table(a) * (2 * CPB_HIDDEN + CPB_HIDDEN * a.heads)

    def macs(self, a, x, y):
        return sym.norm(super().macs(a, x, y) + self.bias_macs(a))

    def macs_formula(self, a, x, y):
        (wh, ww) = a.window
        return (f"{super().macs_formula(a, x, y)} + (2*{wh} - 1)*(2*{ww} - 1)*"
                f"(2*{CPB_HIDDEN} + {CPB_HIDDEN}*{a.heads})")

    def flops(self, a, x, y):
        n, d = self.padded_tokens(a, x), x[1]
        scores = a.heads * n * self.geometry(a, x)[2]
        return sym.norm(super().flops(a, x, y) + self.bias_macs(a) - n * d + 6 * n * d
                        + scores)

    def saved(self, a, x, y):
        # (saved_tensors_hooks on the module) the windows (the qkv projection's
        # input), q, k and v (their normalizations keep the 3*N'*D storage), the
        # normalized q and k and the copy of v the batched products make
        # (3*N'*D), the norms and clamped norms (4 per head and position), the
        # cosine scores (for the logit scale) and the softmax's output, the
        # attention output before the projection; once per batch: the index
        # (int64), the bias MLP's input and hidden layer, its sigmoid's output,
        # the exponentiated logit scale
        n, d = self.padded_tokens(a, x), x[-1]
        t = self.geometry(a, x)[2]
        scores = sym.norm(a.heads * n * t)
        return Saved(extra=((n * d, None), (3 * n * d, None), (3 * n * d, None),
                            (sym.norm(4 * a.heads * n), None), (scores, None), (scores, None),
                            (n * d, None)),
                     per_batch=((super().buffers(a, x), INT64),
                                (sym.norm(self.table(a) * (2 + CPB_HIDDEN) + a.heads * t * t
                                          + a.heads), FP32)))

    torch_modules = ("archcalc.layers.window_attention_torch.ShiftedWindowAttention",
                     "torchvision.models.swin_transformer.ShiftedWindowAttentionV2")


# --------------------------------------------------------------------------
# Swin: patch merging


@register
class PatchMerging(Kind):
    """Swin's patch merging (torchvision's PatchMerging, PatchMergingV2): the
    h x w map padded to even sizes, each 2 x 2 block of positions concatenated
    (4D), a layer norm and a linear reduction to 2D without bias (V1: norm of
    4D first; V2, ``post_norm``: the reduction, then a norm of 2D). MACs:
    the reduction, which FlopCounterMode counts; the concatenation (a copy)
    and the norm (elementwise) it does not see."""
    name = "patch_merging"
    torch_classes = ("PatchMerging",)  # in window_attention_torch.py
    aliases = ("patch_merge",)
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("Swin's downsampling: 2 x 2 positions concatenated (4D), layer norm and a "
               "4D -> 2D linear: N x D -> (N/4) x 2D")
    flops_rule = "2 x MACs + 8 per normalized element (the layer norm); MACs = N/4*4D*2D"
    args = {
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the map, h*w = N; default: the square sqrt(N) x sqrt(N)"),
        "post_norm": Arg("bool", False, doc="Swin V2: the norm after the reduction, over 2D"),
        "eps": Arg("float", 1e-5, min=0.0, doc="the layer norm's epsilon"),
    }
    arg_examples = {"size": (None, lambda x: [1, x[0]], lambda x: [x[0], 1])}

    def merged(self, a, x):
        h, w = map_size(self.name, a.size, x[0])
        return h, w, sym.norm(sym.ceildiv(h, 2) * sym.ceildiv(w, 2))

    def output_shape(self, a, x):
        return (self.merged(a, x)[2], sym.norm(2 * x[1]))

    def normalized(self, a, x):
        return sym.norm((2 if a.post_norm else 4) * x[1])

    def params(self, a, x):
        d = x[1]
        return sym.norm(8 * d * d + 2 * self.normalized(a, x))

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        return f"(4*{d})*(2*{d}) + 2*({2 if a.post_norm else 4}*{d})"

    def macs(self, a, x, y):
        return sym.norm(y[0] * 4 * x[1] * 2 * x[1])

    def macs_formula(self, a, x, y):
        d = sym.plain(x[1])
        return f"{sym.plain(y[0])}*(4*{d})*(2*{d})"

    def flops(self, a, x, y):
        return sym.norm(2 * self.macs(a, x, y) + 8 * y[0] * self.normalized(a, x))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        return (2, 2), (2, 2)

    def size_arithmetic(self, a, x):
        h, w, n = self.merged(a, x)
        return [f"ceil({sym.plain(h)}/2) * ceil({sym.plain(w)}/2) = {sym.fmt_int(n)} positions "
                f"of 4*{sym.plain(x[1])} -> 2*{sym.plain(x[1])} features"]

    def saved(self, a, x, y):
        # the concatenation (4D per merged position), the norm's input (V1: the
        # concatenation itself; V2: the reduction's output) and its mean and
        # rstd (fp32), and the reduction's input (V1: the norm's output)
        n, d = y[0], x[1]
        if a.post_norm:
            extra = ((4 * n * d, None), (2 * n * d, None))
        else:
            extra = ((4 * n * d, None), (4 * n * d, None))
        return Saved(extra=tuple((sym.norm(e), s) for e, s in extra) + ((n, FP32), (n, FP32)))

    def cost(self, a, x, y):
        """The concatenation (a copy of the map), the layer norm, and the
        reduction (a GEMM: N/4 positions, 2D out, 4D in)."""
        n, d = y[0], x[1]
        norm = Cost("layer_norm", elements=sym.norm(n * self.normalized(a, x)),
                    tensors=(self.normalized(a, x), self.normalized(a, x)))
        gemm = Cost("linear", gemm=(n, 2 * d, 4 * d), tensors=(8 * d * d,))
        return (Cost("cat", elements=sym.norm(4 * n * d)),
                *((gemm, norm) if a.post_norm else (norm, gemm)))

    def build(self, a, x):
        from .window_attention_torch import PatchMerging as Module
        h, w, _ = self.merged(a, x)
        return Module(x[1], h, w, a.post_norm, a.eps)

    torch_modules = ("archcalc.layers.window_attention_torch.PatchMerging",
                     "torchvision.models.swin_transformer.PatchMerging",
                     "torchvision.models.swin_transformer.PatchMergingV2",
                     "timm.models.swin_transformer.PatchMerging",
                     "timm.models.swin_transformer_v2.PatchMerging",
                     "timm.models.swin_transformer_v2_cr.PatchMerging")

    def from_torch(self, call, m):
        """torchvision's PatchMerging or PatchMergingV2 (the norm after the
        reduction: its width is 2D), archcalc's, or timm's (Swin, V2: the norm
        after, V2-cr), whose 2 x 2 positions concatenate in the same order."""
        from .from_torch import NoMapping, row
        _require_tokens(call, "patch merging")
        d = call.x[1]
        norm, reduction = m.norm, m.reduction
        shape = tuple(getattr(norm, "normalized_shape", ()))
        post = shape == (2 * d,)
        if shape not in ((2 * d,), (4 * d,)) or not getattr(norm, "elementwise_affine", False) \
                or getattr(norm, "bias", None) is None or reduction.bias is not None \
                or (reduction.in_features, reduction.out_features) != (4 * d, 2 * d):
            raise NoMapping("a patch merging other than layer norm and a 4D -> 2D linear "
                            "without bias")
        from .swin_timm import merged_map
        h, w = merged_map(call) if len(call.x_torch) == 2 and \
            getattr(m, "map_size", None) is None else \
            _torch_map(call, m, "patch merging")
        return row("patch_merging", size=_square_or_pair(h, w), post_norm=post,
                   eps=float(norm.eps))




# --------------------------------------------------------------------------
# MaxViT: block and grid partitions, attention within each partition


def _call_arg(call, index, name):
    """An argument torchvision's partition modules take in their forward (the
    window P, the partition counts): as called, or refused by name."""
    from .from_torch import NoMapping
    kwargs, args = getattr(call, "kwargs", {}), getattr(call, "args", ())
    if name in kwargs:
        return int(kwargs[name])
    if index < len(args) and isinstance(args[index], int):
        return int(args[index])
    raise NoMapping(f"a window partition without its {name}")


def _check_windows(kind: str, h, w, window: int):
    """A map of h x w must divide into P x P windows."""
    for side, axis in ((h, "height"), (w, "width")):
        if isinstance(side, int) and side % window:
            raise SpecError(f"{kind}: the {axis} {side} does not divide into windows "
                            f"of {window}. Received: window={window}")


def _one_copy(self, a, x, y):
    """A permute or transpose made contiguous: one copy of its input."""
    return (Cost("copy", elements=sym.prod(x)),)


@register
class WindowPartition(Kind):
    """MaxViT's partition (torchvision's WindowPartition): a C x H x W map read
    as H*W tokens of width C in window order, P x P windows row by row and
    each window's P*P positions row by row. MaxViT's block attention uses
    P = its partition size; its grid attention partitions by H/P and swaps
    the group axes (``group_transpose``), so each group of P*P tokens is a
    grid spread over the whole map. A copy (permuted), no arithmetic."""
    name = "window_partition"
    torch_classes = ("WindowPartition",)  # in window_attention_torch.py
    primary = "window"
    summary = "C x H x W -> (H*W) x C in window order: P x P windows, each P*P tokens"
    flops_rule = "0 (a permuted copy)"
    inputs = "chw"
    args = {"window": Arg("int", min=1, numeric=True,
                          doc="P, the side of a window; H and W must divide by it")}
    arg_examples = {"window": (1, 2, 3)}

    def output_shape(self, a, x):
        c, h, w = x
        _check_windows(self.name, h, w, a.window)
        return (sym.norm(h * w), c)

    cost = _one_copy

    def build(self, a, x):
        from .window_attention_torch import WindowPartition as Module
        return Module(a.window)

    torch_modules = ("archcalc.layers.window_attention_torch.WindowPartition",
                     "torchvision.models.maxvit.WindowPartition")

    def from_torch(self, call, m):
        from .from_torch import require_chw, row
        require_chw(call, "a window partition")
        p = getattr(m, "p", None)
        return row("window_partition", window=int(p) if p is not None
                   else _call_arg(call, 1, "p"))


@register
class GroupTranspose(Kind):
    """Tokens read as G groups of N/G, the two axes swapped: N/G groups of G
    (torchvision MaxViT's SwapAxes(-2, -3) on its (G, P*P, C) partitions,
    which turns P x P windows into P x P grids). A copy, no arithmetic."""
    name = "group_transpose"
    torch_classes = ("GroupTranspose",)  # in window_attention_torch.py
    primary = "groups"
    summary = "N x D tokens as G x (N/G) groups, transposed to (N/G) x G (a copy)"
    flops_rule = "0 (a transposed copy)"
    inputs = "tokens"
    args = {"groups": Arg("int", min=1, numeric=True, doc="G; N must divide by it")}
    arg_examples = {"groups": (1, lambda x: x[0])}

    def output_shape(self, a, x):
        if isinstance(x[0], int) and x[0] % a.groups:
            raise SpecError(f"{self.name}: {x[0]} tokens do not divide into {a.groups} groups. "
                            f"Received: groups={a.groups}")
        return x

    cost = _one_copy

    def build(self, a, x):
        from .window_attention_torch import GroupTranspose as Module
        return Module(a.groups)

    torch_modules = ("archcalc.layers.window_attention_torch.GroupTranspose",
                     "torchvision.models.maxvit.SwapAxes")

    def from_torch(self, call, m):
        from .from_torch import NoMapping, row
        _require_tokens(call, "a group transpose")
        groups = getattr(m, "groups", None)
        if groups is None:      # torchvision's SwapAxes on (B, G, P*P, C)
            if len(call.x_torch) != 3 or {m.a, m.b} not in ({-2, -3}, {1, 2}):
                raise NoMapping(f"swapping axes {m.a} and {m.b} of a "
                                f"{list(call.x_torch)} input (a group transpose swaps the "
                                "two group axes of G x P x C)")
            groups = call.x_torch[0]
        return row("group_transpose", groups=int(groups))


@register
class WindowDepartition(Kind):
    """The inverse of ``window_partition`` (torchvision MaxViT's
    WindowDepartition): tokens in window order (P x P windows) read back as a
    D x h x w map. A copy, no arithmetic."""
    name = "window_departition"
    torch_classes = ("WindowDepartition",)  # in window_attention_torch.py
    primary = "window"
    summary = "tokens in window order (P x P windows) -> D x h x w (a copy)"
    flops_rule = "0 (a permuted copy)"
    inputs = "tokens"
    args = {"window": Arg("int", min=1, numeric=True, doc="P, the side of a window"),
            "size": Arg("pair", None, min=1, numeric=True,
                        doc="[h, w] of the map, h*w = N; default: the square sqrt(N) x sqrt(N)")}
    arg_examples = {"window": (1, 2), "size": (None, lambda x: [1, x[0]], lambda x: [x[0], 1])}

    def output_shape(self, a, x):
        h, w = map_size(self.name, a.size, x[0])
        _check_windows(self.name, h, w, a.window)
        return (x[1], h, w)

    cost = _one_copy

    def build(self, a, x):
        from .window_attention_torch import WindowDepartition as Module
        return Module(a.window, *map_size(self.name, a.size, x[0]))

    torch_modules = ("archcalc.layers.window_attention_torch.WindowDepartition",
                     "torchvision.models.maxvit.WindowDepartition")

    def from_torch(self, call, m):
        from .from_torch import row
        _require_tokens(call, "a window departition")
        own = getattr(m, "map_size", None)
        if own is not None:
            p, (h, w) = int(m.p), own
        else:
            p = _call_arg(call, 1, "p")
            h, w = _call_arg(call, 2, "h_partitions") * p, _call_arg(call, 3, "w_partitions") * p
        return row("window_departition", window=p, size=_square_or_pair(int(h), int(w)))


@register
class PartitionAttention(Kind):
    """MaxViT's relative-position multi-head attention (torchvision's
    RelativePositionalMultiHeadAttention) within each group of P*P consecutive
    tokens (a window or a grid, after ``window_partition``): a QKV projection
    (with bias), a learned (2P-1)^2 x heads relative position bias table
    (gathered per pair), softmax, the merge projection (with bias). As
    torchvision, the keys are scaled by D ** -0.5 (the width, not a head's).
    Receptive field: a group is assumed to be a P x P window of positions;
    after a group_transpose (MaxViT's grid attention) a group is a grid
    spread over the whole map and the field reported is smaller than the
    true one (the rows cannot tell the two orders apart). torchvision's
    module computes the scores and the weighted sum with torch.einsum, which
    FlopCounterMode counts as the batched products it lowers to, except with
    heads of width 1, where einsum contracts by a broadcast multiply that it
    does not count (archcalc counts those MACs all the same; the module
    archcalc builds calls matmul, counted in every case)."""
    name = "partition_attention"
    torch_classes = ("RelativePositionalMultiHeadAttention",)  # in window_attention_torch.py
    aliases = ("relative_attention",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("multi-head attention within each group of P*P tokens, with a relative "
               "position bias table per head (MaxViT's block and grid attention)")
    flops_rule = ("2 x MACs + 5 per attention score (bias add; softmax: exp, sum, divide, "
                  "max) + N*D (k scaling); MACs = 4*N*D^2 + 2*N*P^2*D")
    args = {"heads": Arg("int", min=1, numeric=True, doc="attention heads; D must divide by it"),
            "window": Arg("int", min=2, numeric=True, doc="P: each group is P*P tokens")}
    arg_examples = {"heads": (1, 2, 4), "window": (2,)}

    def output_shape(self, a, x):
        n, d = x
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"{self.name}: the width {d} does not divide into {a.heads} heads. "
                            f"Received: heads={a.heads}")
        if isinstance(n, int) and n % (a.window * a.window):
            raise SpecError(f"{self.name}: {n} tokens do not divide into groups of "
                            f"{a.window}*{a.window}. Received: window={a.window}")
        return x

    def params(self, a, x):
        d = x[1]
        return sym.norm(4 * d * d + 4 * d + (2 * a.window - 1) ** 2 * a.heads)

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        return f"(3*{d}*{d} + 3*{d}) + ({d}*{d} + {d}) + (2*{a.window} - 1)^2*{a.heads}"

    def buffers(self, a, x):
        return a.window ** 4        # relative_position_index, (P*P) x (P*P)

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(4 * n * d * d + 2 * n * a.window ** 2 * d)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return f"4*{n}*{d}^2 + 2*{n}*{a.window ** 2}*{d}"

    def flops(self, a, x, y):
        n, d = x
        return sym.norm(2 * self.macs(a, x, y) + 5 * a.heads * n * a.window ** 2 + n * d)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        return (a.window, a.window), (1, 1)

    def saved(self, a, x, y):
        # the input (the QKV projection's), the copies of q, the scaled k and v
        # einsum's batched products make (3*N*D), the softmax's output per head
        # and pair, the attention output before the merge; the bias gather's
        # index, once per batch (saved_tensors_hooks on the module)
        n, d = x[0], x[-1]
        scores = sym.norm(a.heads * n * a.window ** 2)
        return Saved(input=True, extra=((3 * n * d, None), (scores, None), (n * d, None)),
                     per_batch=((self.buffers(a, x), INT64),))

    def cost(self, a, x, y):
        """The QKV projection (a GEMM: N tokens, 3D out, D in), the scores and
        the weighted sum (GEMMs of N x P*P x D), the softmax, the merge (N, D, D)."""
        n, d = x
        t = a.window ** 2
        return (Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d, 3 * d)),
                Cost("linear", gemm=(n, t, d)),
                Cost("softmax", elements=sym.norm(a.heads * n * t),
                     tensors=((2 * a.window - 1) ** 2 * a.heads,)),
                Cost("linear", gemm=(n, d, t)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def build(self, a, x):
        from .window_attention_torch import RelativePositionalMultiHeadAttention as Module
        return Module(x[1], x[1] // a.heads, a.window ** 2)

    torch_modules = ("archcalc.layers.window_attention_torch.RelativePositionalMultiHeadAttention",
                     "torchvision.models.maxvit.RelativePositionalMultiHeadAttention")

    def from_torch(self, call, m):
        from .from_torch import NoMapping, row
        _require_tokens(call, "partition attention")
        d = call.x[1]
        size, heads = int(m.size), int(m.n_heads)
        if size * size != m.max_seq_len or heads * m.head_dim != d or \
                m.to_qkv.bias is None or m.merge.bias is None or \
                call.x[0] % m.max_seq_len or abs(m.scale_factor - d ** -0.5) > 1e-12:
            raise NoMapping(f"relative attention of {heads} x {m.head_dim} over groups of "
                            f"{m.max_seq_len} tokens on a {list(call.x_torch)} input")
        return row("partition_attention", heads=heads, window=size)


__all__ = ["WindowAttention", "WindowAttentionV2", "PatchMerging", "WindowPartition",
           "GroupTranspose", "WindowDepartition", "PartitionAttention", "map_size"]
