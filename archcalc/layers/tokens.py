"""Tokens and attention (the Vision Transformer, Dosovitskiy et al. 2020):
a C x H x W map read as N = H*W tokens of width D = C, a class token and a
position embedding as parameters, multi-head self-attention, and pooling
the tokens back into one vector. Token shapes are (N, D) per sample; fc rows
on tokens act on each token (nn.Linear on the last dimension).

The multiply-accumulates of one self-attention layer over N tokens of width D:
QKV projections 3*N*D*D, scores Q K^T N*N*D, weighted values N*N*D, output
projection N*D*D: 4*N*D^2 + 2*N^2*D, the count FlopCounterMode makes of
torchvision's vit_b_16 on the meta device (17,563,828,224 MACs in all).
"""
from __future__ import annotations

from math import isqrt

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4


@register
class Tokens(Kind):
    name = "tokens"
    torch_classes = ('MapToTokens',)  # in tokens_torch.py
    aliases = ("patches_to_tokens",)
    summary = "C x H x W -> (H*W) x C: a map read as N = H*W tokens of width D = C (a view)"
    flops_rule = "0 (a reshape and a transpose: views)"
    view = True
    inputs = "chw"
    args = {}

    def output_shape(self, a, x):
        return (sym.norm(x[1] * x[2]), x[0])

    def cost(self, a, x, y):
        """A flatten and a transpose: views, the call only (the next op reads
        the strided tokens)."""
        return (Cost("view", backward=False),)

    def build(self, a, x):
        from .tokens_torch import MapToTokens
        return MapToTokens()

    torch_modules = ("archcalc.layers.tokens_torch.MapToTokens",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("tokens")


@register
class ClassToken(Kind):
    """Learned tokens put before the others: ViT's class token (count 1), DeiT's
    class and distillation tokens and a ViT's register tokens (Darcet et al.
    2023) as one row per parameter (timm's ``cat([cls, reg, x])`` is reg put
    before x, then cls before both)."""
    name = "class_token"
    flat = True
    torch_classes = ('ClassToken',)  # in tokens_torch.py
    aliases = ("cls_token",)
    summary = "learned tokens put before the others: N x D -> (N + count) x D; count*D params"
    flops_rule = "0 (a concatenation)"
    inputs = "tokens"
    args = {"count": Arg("int", 1, min=1, doc="tokens put before the others (4 register tokens)")}

    def output_shape(self, a, x):
        return (sym.norm(x[0] + a.count), x[1])

    def params(self, a, x):
        return sym.norm(a.count * x[1])

    def params_formula(self, a, x):
        return sym.plain(x[1]) if a.count == 1 else f"{sym.plain(a.count)}*{sym.plain(x[1])}"

    def cost(self, a, x, y):
        return (Cost("cat", elements=sym.prod(y), tensors=(self.params(a, x),)),)

    def build(self, a, x):
        from .tokens_torch import ClassToken as Module
        return Module(x[1], a.count)

    torch_modules = ("archcalc.layers.tokens_torch.ClassToken",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        count = int(m.class_token.shape[1])
        return row("class_token", **({"count": count} if count != 1 else {}))


class _StoredShape(Arg):
    """A parameter's shape as stored: one to four positive whole sizes."""

    def read(self, kind, name, value, env):
        if not isinstance(value, list) or not 1 <= len(value) <= 4 or \
                not all(type(v) is int and v > 0 for v in value):
            raise SpecError(f"{kind}: {name} takes the parameter's shape as stored, one to "
                            f"four positive whole sizes such as [24, 24, 768]. "
                            f"Received: {name}={value!r}")
        return tuple(value)


@register
class PositionEmbedding(Kind):
    """A learned embedding added to the tokens or a map. Stored in another shape
    (NaFlexViT's 1 x H x W x D), it is read back in the tokens' order; stored
    for another grid (``resample``), it is interpolated to the tokens' grid on
    every forward pass, as timm does for an input larger than the pretraining
    one."""
    name = "position_embedding"
    flat = True
    torch_classes = ('PositionEmbedding',)  # in tokens_torch.py
    aliases = ("pos_embedding",)
    summary = ("a learned N x D embedding added to the tokens (N*D params), or C x H x W "
               "added to a map (PiT's); stored for another grid, resampled to the tokens'")
    flops_rule = ("one addition per element (N*D; C*H*W); the resampling of a stored grid "
                  "is not counted (once per forward pass, not per sample; FlopCounterMode "
                  "counts no interpolation)")
    inputs = "any"
    args = {
        "stored": _StoredShape("table", None, doc="the parameter's shape as stored, batch "
                                                  "dimension left out (NaFlexViT's [H, W, D] "
                                                  "for N = H*W tokens); default the input's"),
        "resample": Arg("str", "none", choices=("none", "nearest", "bilinear", "bicubic"),
                        doc="stored as [h, w, D] for another grid: interpolated to the "
                            "tokens' grid (F.interpolate's mode)"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="resample: [H, W] of the tokens' grid, H*W = N; default square"),
        "antialias": Arg("bool", False, doc="resample: F.interpolate's antialias"),
        "align_corners": Arg("bool", False, doc="resample (bilinear, bicubic): "
                                                "F.interpolate's align_corners"),
    }

    # the registry's draw: maps (its input shape), stored as given or flipped; the
    # resampled form is compared with timm's NaFlexViT (test_import_attention_families)
    arg_examples = {"stored": (lambda x: list(x), lambda x: list(x[::-1])),
                    "resample": ("none",), "antialias": (False,), "align_corners": (False,)}

    def check_input(self, x):
        if len(x) not in (2, 3):
            raise SpecError(f"position_embedding needs tokens (N x D) or a map (C x H x W), "
                            f"but its input is {' x '.join(sym.fmt_int(d) for d in x)}")

    def grid(self, a, x):
        """The tokens' (H, W) a resampled embedding is interpolated to."""
        from .window_attention import map_size   # here: registration order stays
        return map_size(self.name, a.size, x[0])

    def output_shape(self, a, x):
        received = f"Received: stored={list(a.stored) if a.stored else None}"
        if a.resample != "none":
            if len(x) != 2 or a.stored is None or len(a.stored) != 3 or \
                    (isinstance(x[1], int) and a.stored[2] != x[1]):
                raise SpecError(f"position_embedding: resample interpolates an embedding "
                                f"stored as [h, w, D] for tokens of width D. {received}, "
                                f"input {' x '.join(sym.fmt_int(d) for d in x)}")
            self.grid(a, x)
        elif a.stored is not None and isinstance(sym.prod(x), int) and \
                sym.prod(a.stored) != sym.prod(x):
            raise SpecError(f"position_embedding: stored as {list(a.stored)} it holds "
                            f"{sym.prod(a.stored)} values, but the input has {sym.prod(x)}. "
                            f"{received}")
        if a.resample == "none" and (a.size is not None or a.antialias or a.align_corners):
            raise SpecError("position_embedding: size, antialias and align_corners are for "
                            "resample; it is none")
        return x

    def params(self, a, x):
        return sym.prod(a.stored) if a.stored is not None else sym.prod(x)

    def params_formula(self, a, x):
        return "*".join(sym.plain(d) for d in (a.stored if a.stored is not None else x))

    def flops(self, a, x, y):
        return sym.prod(y)

    def cost(self, a, x, y):
        return (Cost("add", elements=sym.prod(x), tensors=(self.params(a, x),)),)

    def build(self, a, x):
        from .tokens_torch import PositionEmbedding as Module
        resample = None if a.resample == "none" else \
            (a.resample, self.grid(a, x), a.antialias, a.align_corners)
        return Module(*x, stored=None if a.stored is None else tuple(a.stored),
                      resample=resample)

    torch_modules = ("archcalc.layers.tokens_torch.PositionEmbedding",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("position_embedding")


@register
class SelfAttention(Kind):
    """Multi-head self-attention over N x D tokens, in one of two weight layouts
    (``keys``): nn.MultiheadAttention's (torchvision's ViT: ``in_proj_weight``,
    ``out_proj``) or one ``qkv`` Linear and a ``proj`` Linear (timm's
    Attention, the ViT/DeiT family), whose heads may be narrower or wider than
    D/heads (``head_dim``: inner width A = heads*head_dim), with LayerNorms on
    each head's q and k (``qk_norm``) or on the heads' output (``scale_norm``).
    MACs (FlopCounterMode's, which counts F.scaled_dot_product_attention as its
    two products): QKV N*D*3A, scores N*N*A, weighted values N*N*A, output
    projection N*A*D."""
    name = "attention"
    torch_classes = ('SelfAttention', 'QKVAttention', 'BeitAttention')  # in tokens_torch.py
    aliases = ("self_attention", "mhsa")
    primary = "heads"
    weighted = True
    autocast = "low"
    summary = ("multi-head self-attention over N x D tokens: QKV and output projections "
               "(4*D^2 + 4*D params), softmax(Q K^T / sqrt(D/heads)) V per head")
    flops_rule = ("2 x MACs + 4 per attention score (scale, exp, sum, divide: "
                  "4*heads*N^2; 5 with a relative position bias) + 7 per normalized "
                  "element (qk_norm, scale_norm); "
                  "MACs = 4*N*D*A + 2*N^2*A, A = heads*head_dim (D by default)")
    inputs = "tokens"
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "bias": Arg("bool", True, doc="the QKV projection's bias (keys = multihead: the "
                                      "output projection's too, one switch in PyTorch)"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "keys": Arg("str", "multihead", choices=("multihead", "qkv", "beit"),
                    doc="the built module's weights: nn.MultiheadAttention's "
                        "(in_proj_weight, out_proj), timm's (qkv, proj Linears) or "
                        "BEiT's (qkv without a bias, q_bias and v_bias: no key bias)"),
        "head_dim": Arg("int", None, min=1, doc="width of a head (keys = qkv); default D/heads"),
        "proj_bias": Arg("bool", None, doc="the output projection's bias; default: bias"),
        "qk_norm": Arg("bool", False, doc="a LayerNorm on each head's q and k (keys = qkv)"),
        "scale_norm": Arg("bool", False,
                          doc="a LayerNorm on the heads' output before the projection "
                              "(keys = qkv)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the qk_norm and scale_norm"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0,
                            doc="on the projection's output (keys = qkv, beit)"),
        "window": Arg("pair", None, min=1, numeric=True,
                      doc="keys = beit: a relative position bias per head over a window of "
                          "wh x ww patches and the class token (N = wh*ww + 1)"),
    }

    # a window's patches and the class token must be the N tokens drawn
    arg_examples = {"window": (None, None, lambda x: [1, x[0] - 1], lambda x: x[0] - 1)}

    @staticmethod
    def proj_bias(a):
        if a.proj_bias is not None:
            return a.proj_bias
        return True if a.keys == "beit" else a.bias

    def head_dim(self, a, x):
        """The width of one head, checked against the layout."""
        d = x[1]
        if a.head_dim is None:
            if isinstance(d, int) and isinstance(a.heads, int) and d % a.heads:
                raise SpecError(f"attention: the width {d} does not divide into {a.heads} "
                                f"heads. Received: heads={a.heads}")
            return sym.exact_div(d, a.heads)
        if a.keys == "multihead" and isinstance(d, int) and a.head_dim * a.heads != d:
            raise SpecError(f"attention: keys = \"multihead\" has heads of D/heads = "
                            f"{d}/{a.heads}; use keys = \"qkv\". Received: "
                            f"head_dim={a.head_dim}")
        return a.head_dim

    def inner(self, a, x):
        """A = heads*head_dim, the width of q, k and v."""
        self.check_layout(a)
        head_dim = self.head_dim(a, x)
        return x[1] if a.head_dim is None else sym.norm(a.heads * head_dim)

    def check_layout(self, a):
        """The arguments a weight layout has no place for are refused by name."""
        lacks = {"multihead": ("qk_norm", "scale_norm", "proj_dropout", "proj_bias", "window"),
                 "qkv": ("window",), "beit": ("qk_norm", "scale_norm", "proj_bias")}[a.keys]
        given = {"qk_norm": a.qk_norm, "scale_norm": a.scale_norm, "window": a.window,
                 "proj_dropout": a.proj_dropout,
                 # nn.MultiheadAttention's one bias switch; BEiT's projection has one
                 "proj_bias": a.proj_bias is not None and a.proj_bias != (
                     a.bias if a.keys == "multihead" else True)}
        hint = "keys = \"beit\" has one" if a.keys == "qkv" else "use keys = \"qkv\""
        for name in lacks:
            if given[name]:
                value = a.proj_bias if name == "proj_bias" else given[name]
                raise SpecError(f"attention: keys = \"{a.keys}\" takes no {name} = {value!r} "
                                f"({hint}). Received: {name}={value!r}")

    def relative_table(self, a):
        """The rows of BEiT's relative position bias table ((2wh-1)(2ww-1) + 3)."""
        wh, ww = a.window
        return (2 * wh - 1) * (2 * ww - 1) + 3

    def output_shape(self, a, x):
        self.inner(a, x)
        if a.window is not None and isinstance(x[0], int) and \
                a.window[0] * a.window[1] + 1 != x[0]:
            raise SpecError(f"attention: a window of {a.window[0]} x {a.window[1]} patches "
                            f"and the class token are {a.window[0] * a.window[1] + 1} tokens, "
                            f"but there are {x[0]}. Received: window={list(a.window)}")
        return x

    def params(self, a, x):
        d, inner = x[1], self.inner(a, x)
        norms = (4 * self.head_dim(a, x) if a.qk_norm else 0) + (2 * inner if a.scale_norm else 0)
        biases = (2 if a.keys == "beit" else 3) * inner if a.bias else 0
        table = self.relative_table(a) * a.heads if a.window is not None else 0
        return sym.norm(4 * d * inner + biases + (d if self.proj_bias(a) else 0) + norms + table)

    def params_formula(self, a, x):
        d, inner = sym.plain(x[1]), sym.plain(self.inner(a, x))
        if not (a.bias or self.proj_bias(a) or a.qk_norm or a.scale_norm) and inner == d:
            return f"4*{d}*{d}"
        qkv = f"3*{d}*{inner}" + (f" + {2 if a.keys == 'beit' else 3}*{inner}" if a.bias else "")
        proj = f"{inner}*{d}" + (f" + {d}" if self.proj_bias(a) else "")
        norms = ([f"2*2*{sym.plain(self.head_dim(a, x))} (q, k norms)"] if a.qk_norm else []) + \
            ([f"2*{inner} (scale norm)"] if a.scale_norm else []) + \
            ([f"{self.relative_table(a)}*{a.heads} (relative position bias)"]
             if a.window is not None else [])
        return " + ".join([f"({qkv})", f"({proj})"] + norms)

    def macs(self, a, x, y):
        n, d = x
        inner = self.inner(a, x)
        return sym.norm(4 * n * d * inner + 2 * n * n * inner)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        inner = sym.plain(self.inner(a, x))
        if inner == d:
            return f"4*{n}*{d}^2 + 2*{n}^2*{d}"
        return f"4*{n}*{d}*{inner} + 2*{n}^2*{inner}"

    def flops(self, a, x, y):
        n, inner = x[0], self.inner(a, x)
        normalized = (2 * n * inner if a.qk_norm else 0) + (n * inner if a.scale_norm else 0)
        per_score = 5 if a.window is not None else 4     # + the bias add
        return sym.norm(2 * self.macs(a, x, y) + per_score * a.heads * n * n + 7 * normalized)

    def macs_missed_by(self, a, x, y):
        n, inner = x[0], self.inner(a, x)
        return {"fvcore": (sym.norm(2 * n * n * inner),
                           "fvcore has no handler for aten::scaled_dot_product_attention "
                           "(the two attention matmuls, 2*N^2*A per layer)")}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The QKV projection (a GEMM: N tokens, 3A out, D in), the scores and
        the weighted sum (two GEMMs of N x N x A MACs, rated as such), the
        softmax over heads*N*N scores, the output projection (N, D, A)."""
        n, d = x
        inner = self.inner(a, x)
        bias = (3 * inner,) if a.bias else ()
        return (Cost("linear", gemm=(n, 3 * inner, d), tensors=(3 * d * inner,) + bias),
                Cost("linear", gemm=(n, n, inner), backward=True),
                Cost("softmax", elements=sym.norm(a.heads * n * n)),
                Cost("linear", gemm=(n, inner, n)),
                Cost("linear", gemm=(n, d, inner),
                     tensors=(d * inner,) + ((d,) if self.proj_bias(a) else ())))

    def receptive_field(self, a, x, rf, jump):
        # every token sees every other: the window is the token grid, taken
        # as isqrt(N) tokens a side (the class token adds none)
        side = isqrt(x[0]) if isinstance(x[0], int) else x[0] ** 0.5
        return ((sym.norm(rf[0] + (side - 1) * jump[0]), sym.norm(rf[1] + (side - 1) * jump[1])),
                jump)

    def saved(self, a, x, y):
        # in a training step (need_weights=False, or F.scaled_dot_product_attention):
        # the input (for the QKV projection), the QKV projection's output q, k, v
        # (3*N*A), the attention output before the output projection (N*A),
        # and the softmax statistics per head and query (fp32)
        # qk_norm: q and k normalized (2*N*A), the heads' output then copied to
        # (N, A) for the projection (N*A: it no longer follows qkv's strides),
        # mean and 1/std per head and token of q and k; scale_norm: its output
        # (N*A) and mean and 1/std per token (as saved_tensors_hooks sees them)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        inner = self.inner(a, x) if len(x) == 2 else d
        extra = ((sym.norm(3 * n * inner), None), (sym.norm(n * inner), None),
                 (sym.norm(a.heads * n), FP32))
        if a.qk_norm:     # (one head or one token: the reshape to (N, A) is a view)
            copied = 2 if a.heads == 1 or n == 1 else 3
            extra += ((sym.norm(copied * n * inner), None), (sym.norm(4 * a.heads * n), FP32))
        if a.scale_norm:
            extra += ((sym.norm(n * inner), None), (sym.norm(2 * n), FP32))
        return Saved(input=True, extra=extra)

    def build(self, a, x):
        from .tokens_torch import BeitAttention, QKVAttention, SelfAttention as Module
        if a.keys == "multihead":
            return Module(x[1], a.heads, a.bias, a.dropout)
        if a.keys == "beit":
            return BeitAttention(x[1], a.heads, self.head_dim(a, x), a.bias, a.window,
                                 a.dropout, a.proj_dropout)
        return QKVAttention(x[1], a.heads, self.head_dim(a, x), a.bias, self.proj_bias(a),
                            a.qk_norm, a.scale_norm, a.eps, a.dropout, a.proj_dropout)

    # from_torch reads them (nn.MultiheadAttention is mapped in the importer)
    torch_modules = ("archcalc.layers.tokens_torch.SelfAttention",
                     "archcalc.layers.tokens_torch.QKVAttention",
                     "archcalc.layers.tokens_torch.BeitAttention",
                     "timm.layers.attention.Attention", "timm.models.beit.Attention",
                     "timm.models.convit.MHSA", "timm.models.metaformer.Attention",
                     "timm.models.fastvit.Attention",
                     # VOLO's: timm's on a channels-last map, its H*W positions the tokens
                     "timm.models.volo.Attention")

    def from_torch(self, call, m):
        from .from_torch import NoMapping, row, rows
        if len(call.x) == 3 and type(m).__module__ == "timm.models.fastvit":
            # FastViT's Attention flattens its C x H x W map to tokens and back around
            # timm's attention: three rows, the weights the attention's
            from dataclasses import replace
            c, h, w = call.x
            tokens = replace(call, x=(h * w, c))
            return rows(("tokens", {}), *row("attention", **_qkv_attention_args(tokens, m)),
                        ("to_map", {} if h == w else {"size": [h, w]}))
        if len(call.x) != 2:
            raise NoMapping(f"attention on a {len(call.x)}-d input (it takes tokens)")
        if hasattr(m, "in_proj_weight"):      # nn.MultiheadAttention's weights
            return row("attention", heads=m.num_heads, bias=m.in_proj_bias is not None,
                       dropout=float(m.dropout))
        if hasattr(m, "q_bias"):              # BEiT's: q_bias and v_bias, no key bias
            return row("attention", **_beit_attention_args(call, m))
        return row("attention", **_qkv_attention_args(call, m))


def _qkv_attention_args(call, m) -> dict:
    """The attention row of a module with timm's Attention attributes (num_heads,
    head_dim, scale, qkv, q_norm, k_norm, attn_drop, norm, proj, proj_drop);
    what the kind cannot say is refused by name."""
    from .from_torch import NoMapping
    if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v not in (None, False)]:
        raise NoMapping("attention with a mask or a causal flag")
    if getattr(m, "gate", None) is not None:
        raise NoMapping("a gated attention (a sigmoid gate on its output)")
    d, heads = call.x[1], int(m.num_heads)
    # ConViT's MHSA: the same qkv and proj, no head_dim nor norms of its own
    head_dim = int(getattr(m, "head_dim", m.qkv.out_features // (3 * heads)))
    if m.qkv.in_features != d or m.proj.out_features != d:
        raise NoMapping(f"attention from width {m.qkv.in_features} to {m.proj.out_features} "
                        f"on tokens of width {d} (archcalc's keeps the width)")
    if abs(float(m.scale) * head_dim ** 0.5 - 1) > 1e-9:
        raise NoMapping(f"attention scaled by {m.scale}, not 1/sqrt(head_dim = {head_dim})")
    q_eps = _norm_eps(getattr(m, "q_norm", None), head_dim, "q_norm")
    k_eps = _norm_eps(getattr(m, "k_norm", None), head_dim, "k_norm")
    out_eps = _norm_eps(getattr(m, "norm", None), heads * head_dim, "norm")
    epsilons = {e for e in (q_eps, k_eps, out_eps) if e is not None}
    if (q_eps is None) != (k_eps is None) or len(epsilons) > 1:
        raise NoMapping(f"attention with q_norm, k_norm and norm of different kinds or eps "
                        f"({q_eps}, {k_eps}, {out_eps})")
    bias, proj_bias = m.qkv.bias is not None, m.proj.bias is not None
    found = {"heads": heads, "keys": "qkv", "bias": bias, "dropout": float(m.attn_drop.p),
             "head_dim": None if heads * head_dim == d else head_dim,
             "proj_bias": None if proj_bias == bias else proj_bias,
             "qk_norm": q_eps is not None, "scale_norm": out_eps is not None,
             "eps": epsilons.pop() if epsilons else 1e-5,
             "proj_dropout": float(m.proj_drop.p)}
    defaults = {k: arg.default for k, arg in SelfAttention.args.items()}
    return {k: v for k, v in found.items() if k in ("heads", "keys") or v != defaults[k]}


def _beit_attention_args(call, m) -> dict:
    """The attention row of BEiT's Attention (timm.models.beit): num_heads,
    qkv, q_bias/v_bias, window_size (its relative position bias), proj."""
    from .from_torch import NoMapping, pair
    if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v is not None]:
        raise NoMapping("BEiT attention with a shared relative position bias (the model's, "
                        "passed to every block)")
    d, heads = call.x[1], int(m.num_heads)
    head_dim = m.qkv.out_features // (3 * heads)
    if m.qkv.in_features != d or m.proj.out_features != d or m.proj.bias is None:
        raise NoMapping(f"BEiT attention from width {m.qkv.in_features} to "
                        f"{m.proj.out_features} on tokens of width {d}, or without the "
                        "projection's bias")
    if abs(float(m.scale) * head_dim ** 0.5 - 1) > 1e-9:
        raise NoMapping(f"attention scaled by {m.scale}, not 1/sqrt(head_dim = {head_dim})")
    found = {"heads": heads, "keys": "beit", "bias": m.q_bias is not None,
             "dropout": float(m.attn_drop.p), "proj_dropout": float(m.proj_drop.p),
             "head_dim": None if heads * head_dim == d else head_dim,
             "window": None if m.window_size is None else pair(m.window_size)}
    defaults = {k: arg.default for k, arg in SelfAttention.args.items()}
    return {k: v for k, v in found.items() if k in ("heads", "keys") or v != defaults[k]}


def _norm_eps(norm, width, what):
    """The eps of a LayerNorm over ``width`` (with weight and bias), None for an
    identity; anything else has no argument of the attention kind."""
    from .from_torch import NoMapping
    classes = {f"{c.__module__}.{c.__qualname__}" for c in type(norm).__mro__}
    if norm is None or "torch.nn.modules.linear.Identity" in classes:
        return None
    if "torch.nn.modules.normalization.LayerNorm" in classes and \
            tuple(norm.normalized_shape) == (width,) and norm.elementwise_affine and \
            norm.bias is not None:
        return float(norm.eps)
    raise NoMapping(f"attention with a {type(norm).__name__} as its {what} (the kind's is a "
                    f"LayerNorm over {width} with weight and bias)")


@register
class TokenPool(Kind):
    name = "token_pool"
    torch_classes = ('TokenPool',)  # in tokens_torch.py
    primary = "mode"
    summary = ("N x D tokens -> D: one token (the first, the class token, by default), "
               "or the mean or the maximum of all (per channel)")
    flops_rule = "first: 0 (a view); mean: N*D; max: (N - 1)*D comparisons"
    inputs = "tokens"
    args = {"mode": Arg("str", "first", choices=("first", "mean", "max"),
                        doc="max: VOLO's token-labeling head, x.max(1)[0]"),
            "index": Arg("int", 0, min=0, doc="mode first: the token taken (DeiT's "
                                              "distillation token is 1)")}

    def output_shape(self, a, x):
        n = x[0]
        if a.mode == "first" and isinstance(n, int) and isinstance(a.index, int) and \
                a.index >= n:
            raise SpecError(f"token_pool: there are {n} tokens, no token {a.index}. "
                            f"Received: index={a.index}")
        if a.mode != "first" and a.index:
            raise SpecError(f"token_pool: mode {a.mode} reads every token; index is for mode "
                            f"first. Received: index={a.index}")
        return (x[1],)

    def shares_storage(self, a):
        return a.mode == "first"   # x[:, 0] is a view

    def flops(self, a, x, y):
        if a.mode == "max":
            return sym.norm((x[0] - 1) * x[1])
        return 0 if a.mode == "first" else sym.prod(x)

    def cost(self, a, x, y):
        if a.mode == "first":
            return (Cost("view"),)
        if a.mode == "max":     # each token read once, as a 2x2 max pool at stride 2 reads
            return (Cost("maxpool2s2", elements=sym.prod(x)),)
        return (Cost("global_avgpool", elements=sym.prod(x)),)

    def saved(self, a, x, y):
        # max: the index of each channel's maximum (int64), for its backward
        return Saved(extra=((x[-1], 8),)) if a.mode == "max" else Saved()

    def build(self, a, x):
        from .tokens_torch import TokenPool as Module
        return Module(a.mode, a.index)

    torch_modules = ("archcalc.layers.tokens_torch.TokenPool",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("token_pool", mode=m.mode, **({"index": m.index} if m.index else {}))


@register
class SkipTokens(Kind):
    """The tokens after the first ``count``: x[:, count:], a view. A ViT with
    register tokens (timm's ``global_pool = "avg"``) averages the patch tokens
    only, leaving out its class and register tokens."""
    name = "skip_tokens"
    torch_classes = ('SkipTokens',)  # in tokens_torch.py
    primary = "count"
    summary = "N x D tokens -> (N - count) x D: the first count tokens left out (a view)"
    flops_rule = "0 (a slice: a view)"
    view = True
    inputs = "tokens"
    args = {"count": Arg("int", min=1, doc="tokens left out at the start")}

    def output_shape(self, a, x):
        n = x[0]
        if isinstance(n, int) and isinstance(a.count, int) and a.count >= n:
            raise SpecError(f"skip_tokens: {n} tokens leave none after the first {a.count}. "
                            f"Received: count={a.count}")
        return (sym.norm(n - a.count), x[1])

    def cost(self, a, x, y):
        """A slice: a view, the call only."""
        return (Cost("view", backward=False),)

    def build(self, a, x):
        from .tokens_torch import SkipTokens as Module
        return Module(a.count)

    torch_modules = ("archcalc.layers.tokens_torch.SkipTokens",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("skip_tokens", count=m.count)


@register
class FirstTokens(Kind):
    """The first ``count`` tokens: x[:, :count], a view. CaiT's class-attention
    blocks add their output to the class token they read: when that token is
    the learned one the block put before the patch tokens, the import reads it
    back from the concatenation (one parameter, one row that owns it)."""
    name = "first_tokens"
    torch_classes = ('FirstTokens',)  # in tokens_torch.py
    primary = "count"
    summary = "N x D tokens -> count x D: the first count tokens (a view)"
    flops_rule = "0 (a slice: a view)"
    view = True
    inputs = "tokens"
    args = {"count": Arg("int", 1, min=1, doc="tokens kept at the start")}

    def output_shape(self, a, x):
        n = x[0]
        if isinstance(n, int) and isinstance(a.count, int) and a.count > n:
            raise SpecError(f"first_tokens: there are {n} tokens, fewer than {a.count}. "
                            f"Received: count={a.count}")
        return (a.count, x[1])

    def cost(self, a, x, y):
        """A slice: a view, the call only."""
        return (Cost("view", backward=False),)

    def build(self, a, x):
        from .tokens_torch import FirstTokens as Module
        return Module(a.count)

    torch_modules = ("archcalc.layers.tokens_torch.FirstTokens",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("first_tokens", **({"count": m.count} if m.count != 1 else {}))


@register
class TokensToMap(Kind):
    """The inverse of `tokens`: N = H*W tokens of width D read back as a D x H x W
    map (ConvNeXt's permute back to channels first after its per-position
    layer norm and linears)."""
    name = "to_map"
    torch_classes = ('TokensToMap',)  # in tokens_torch.py
    aliases = ("tokens_to_map", "untokens")
    primary = "size"
    summary = ("N x D tokens -> D x H x W with H*W = N (a view): size [h, w], "
               "or a square map by default")
    flops_rule = "0 (a transpose and a reshape: views)"
    view = True
    inputs = "tokens"
    args = {"size": Arg("pair", None, min=1, numeric=True,
                        doc="[h, w] with h*w = N; default: the square sqrt(N) x sqrt(N)")}

    def size(self, a, x):
        n = x[0]
        if a.size is not None:
            h, w = a.size
            if isinstance(n, int) and h * w != n:
                raise SpecError(f"to_map: {h} x {w} = {h * w} positions, but there are "
                                f"{n} tokens")
            return h, w
        if not isinstance(n, int):
            raise SpecError("to_map: give size = [h, w] where the token count is a formula")
        side = isqrt(n)
        if side * side != n:
            raise SpecError(f"to_map: {n} tokens make no square map; give size = [h, w]")
        return side, side

    def output_shape(self, a, x):
        return (x[1], *self.size(a, x))

    def cost(self, a, x, y):
        """A transpose and a reshape: views, the call only."""
        return (Cost("view", backward=False),)

    def build(self, a, x):
        from .tokens_torch import TokensToMap as Module
        return Module(*self.size(a, x))

    torch_modules = ("archcalc.layers.tokens_torch.TokensToMap",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import pair, row
        return row("to_map", size=pair((m.height, m.width)))


__all__ = ["Tokens", "ClassToken", "PositionEmbedding", "SelfAttention", "TokenPool",
           "SkipTokens", "FirstTokens", "TokensToMap"]
