"""DaViT's (Ding et al. 2022, "Dual Attention Vision Transformers") two
attentions, as timm.models.davit computes them:

- ``channel_attention``: attention across the channels of N x D tokens, per
  head a D/h x D/h score matrix summed over the N tokens (timm's
  ChannelAttention: softmax(k^T v / sqrt(D/h)) applied to q; Florence-2's
  ChannelAttentionV2: softmax(q^T k * s) applied to v, s = N^-0.5 or
  (D/h)^-0.5). MACs = 4*N*D^2 + 2*N*D*(D/h).
- ``davit_spatial_block``: timm's SpatialBlock on a C x H x W map, one row:
  x + dwconv3x3(x) (the conv position encoding), tokens, + window attention
  of norm1 (the map padded with zeros to whole M x M windows, no shift, no
  relative position bias), back to the map, x + dwconv3x3(x), + MLP of
  norm2. Why one row: timm folds the windows into the batch (B*windows x M*M
  x C) inside the block's forward, which no row can say (a row keeps the
  batch), as MaxViT's partition transformer.

MACs are FlopCounterMode's on the meta device divided by two: the
projections, the attention's two products (scaled_dot_product_attention
counted as its two matmuls), the convs and the MLP. The padded positions are
computed and counted, as timm does (they attend and are attended to)."""
from __future__ import annotations

from types import SimpleNamespace

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .cait import FP32, _TokenAttention
from .composite import Composite, Part, between, part
from .window_attention import WindowAttention

ORDERS = ("kvq", "qkv")
SCALES = ("head", "tokens")


@register
class ChannelAttention(_TokenAttention):
    name = "channel_attention"
    torch_classes = ("ChannelAttention",)  # in davit_torch.py
    aliases = ("davit_channel_attention",)
    summary = ("DaViT's channel attention on N x D tokens: per head, D/h x D/h scores "
               "of two of q, k, v over the N tokens, applied to the third")
    flops_rule = ("2 x MACs + N*D (the scaling) + 3 per score (exp, sum, divide: "
                  "3*D*D/h); MACs = 4*N*D^2 + 2*N*D*(D/h)")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "qkv_bias": Arg("bool", True, doc="the qkv Linear's bias"),
        "order": Arg("str", "kvq", choices=ORDERS,
                     doc="kvq: softmax(k^T v) applied to q (timm's ChannelAttention); qkv: "
                         "softmax(q^T k) applied to v (ChannelAttentionV2)"),
        "scaled_by": Arg("str", "head", choices=SCALES,
                     doc="the scale on the first of the scores' operands: head (D/h)^-0.5, "
                         "or tokens N^-0.5 (ChannelAttentionV2's dynamic_scale)"),
    }
    arg_examples = {"heads": (1, 2, 4)}

    def output_shape(self, a, x):
        self.head_dim(a, x)
        if a.order == "kvq" and a.scaled_by != "head":
            raise SpecError(f"{self.name}: order kvq (timm's ChannelAttention) scales by the "
                            f"head width. Received: scaled_by={a.scaled_by!r}")
        return x

    def params(self, a, x):
        d = x[1]
        return sym.norm(4 * d * d + (3 * d if a.qkv_bias else 0) + d)

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        return f"(3*{d}*{d}{' + 3*' + d if a.qkv_bias else ''}) + ({d}*{d} + {d})"

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(4 * n * d * d + 2 * n * d * self.head_dim(a, x))

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return f"4*{n}*{d}^2 + 2*{n}*{d}*{sym.plain(self.head_dim(a, x))}"

    def flops(self, a, x, y):
        n, d = x
        return sym.norm(2 * self.macs(a, x, y) + n * d + 3 * d * self.head_dim(a, x))

    def cost(self, a, x, y):
        """The qkv GEMM, the channel scores (GEMMs over the N tokens), the
        softmax, the weighted channels, the projection."""
        n, d = x
        hd = self.head_dim(a, x)
        return (Cost("linear", gemm=(n, 3 * d, d),
                     tensors=(3 * d * d,) + ((3 * d,) if a.qkv_bias else ())),
                Cost("linear", gemm=(d, hd, n)),
                Cost("softmax", elements=sym.norm(d * hd)),
                Cost("linear", gemm=(d, n, hd)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the input, q, k, v (the scaled one a copy), the softmax's output,
        # the heads' output (proj's input), the softmax statistics (fp32)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        return Saved(input=True, extra=((sym.norm(4 * n * d), None),
                                        (sym.norm(d * d / a.heads), None),
                                        (sym.norm(n * d), None), (d, FP32)))

    def build(self, a, x):
        from .davit_torch import ChannelAttention as Module
        return Module(x[1], a.heads, a.qkv_bias, a.order, a.scaled_by)

    torch_modules = ("archcalc.layers.davit_torch.ChannelAttention",
                     "timm.models.davit.ChannelAttention", "timm.models.davit.ChannelAttentionV2")

    def from_torch(self, call, m):
        """archcalc's, and timm's ChannelAttention (k^T v applied to q, scaled
        by the head width) and ChannelAttentionV2 (q^T k applied to v)."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"channel attention on a {len(call.x)}-d input (it takes tokens)")
        if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v is not None]:
            raise NoMapping("channel attention called with more than its tokens")
        d = call.x[1]
        heads = int(getattr(m, "num_heads", getattr(m, "groups", 0)))
        if not heads or d % heads or (m.qkv.in_features, m.qkv.out_features) != (d, 3 * d) or \
                (m.proj.in_features, m.proj.out_features) != (d, d) or m.proj.bias is None:
            raise NoMapping(f"channel attention of {heads} heads whose qkv and proj are not "
                            f"Linears {d} -> 3*{d} and {d} -> {d} (with a bias)")
        own = getattr(m, "init_args", None)
        if own is not None:
            order, scale = own[3], own[4]
        elif hasattr(m, "dynamic_scale"):       # ChannelAttentionV2
            order, scale = "qkv", "tokens" if m.dynamic_scale else "head"
        else:
            order, scale = "kvq", "head"
            if abs(float(m.scale) * (d // heads) ** 0.5 - 1) > 1e-9:
                raise NoMapping(f"ChannelAttention scaled by {m.scale}, not "
                                f"1/sqrt(head_dim = {d // heads})")
        return row("channel_attention", heads=heads, qkv_bias=m.qkv.bias is not None,
                   order=order, scaled_by=scale)


class _PlainWindowAttention(WindowAttention):
    """window_attention without the relative position bias (DaViT's), a part
    of the spatial block (not registered: it never stands alone, its windows
    being in the batch): no table, no index buffer, no bias add."""

    def bias_params(self, a):
        return 0

    def buffers(self, a, x):
        return 0

    def flops(self, a, x, y):
        _, (ph, pw), t, _ = self.geometry(a, x)
        n = sym.norm(ph * pw)
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * n * t + n * x[1])

    def saved(self, a, x, y):
        return Saved(extra=WindowAttention.saved(self, a, x, y).extra)


_PLAIN = _PlainWindowAttention()


@register
class DavitSpatialBlock(Composite, Kind):
    """timm's DaViT SpatialBlock on a C x H x W map: x + cpe1(x), where cpe
    is a depthwise 3x3 conv with a bias (then GELU where ``cpe_act``); read
    as tokens, + window attention of norm1 (the map padded with zeros to
    whole M x M windows, heads of C/heads, q scaled by (C/heads)^-0.5, no
    shift, no relative position bias, the padding cut); back to the map,
    x + cpe2(x); as tokens, + MLP (C -> hidden -> C, GELU) of norm2; back to
    the map. Receptive field: the two 3x3 convs and a window of M positions
    (capped at the map) per axis: the field's shape, not the exact set of
    positions a token sees near a window's edge."""
    name = "davit_spatial_block"
    torch_classes = ("SpatialBlock",)  # in davit_torch.py
    aliases = ("davit_spatial",)
    primary = "heads"
    inputs = "chw"
    summary = ("DaViT's spatial block on a C x H x W map: conv position encodings, window "
               "attention (no shift, no bias, padded to whole windows) and an MLP, residual")
    flops_rule = ("the parts' FLOPs (two depthwise 3x3 convs, two layer norms, the window "
                  "attention on the padded map, the MLP) + 4*H*W*C (the residual adds); "
                  "MACs = 18*H*W*C + 4*N'*C^2 + 2*N'*M^2*C + 2*H*W*C*hidden, N' = the "
                  "padded map's positions")
    args = {
        "heads": Arg("int", min=1, numeric=True, doc="attention heads; C must divide by it"),
        "window": Arg("pair", 7, min=1, numeric=True, doc="the window M"),
        "hidden": Arg("int", None, min=1, numeric=True, doc="the MLP's width (default 4C)"),
        "qkv_bias": Arg("bool", True, doc="the qkv Linear's bias"),
        "cpe_act": Arg("bool", False, doc="GELU on each conv position encoding's conv"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the two layer norms"),
    }
    arg_examples = {"heads": (1, 2), "window": (1, 2, 3, [2, 3]), "hidden": (None, 3)}

    def widths(self, a, x):
        c, h, w = x
        if isinstance(c, int) and c % a.heads:
            raise SpecError(f"{self.name}: the width {c} does not divide into {a.heads} heads. "
                            f"Received: heads={a.heads}")
        return sym.norm(h * w), c, (a.hidden if a.hidden is not None else sym.norm(4 * c))

    def attention(self, a, x):
        n, c, _ = self.widths(a, x)
        args = SimpleNamespace(heads=a.heads, window=tuple(a.window), shift=(0, 0),
                               size=(x[1], x[2]), qkv_bias=a.qkv_bias, proj_bias=True,
                               roll_first=False, attention_dropout=0.0, dropout=0.0)
        return Part(_PLAIN, args, (n, c), (n, c))

    def parts(self, a, x):
        n, c, hidden = self.widths(a, x)
        cpe = [part("conv", x, out=c, kernel=(3, 3), padding=(1, 1), groups=c)]
        cpe += [part("gelu", x)] if a.cpe_act else []
        return [*cpe, part("layer_norm", (n, c), eps=a.eps), self.attention(a, x), *cpe,
                part("layer_norm", (n, c), eps=a.eps), part("fc", (n, c), out=hidden),
                part("gelu", (n, hidden)), part("fc", (n, hidden), out=c)]

    def output_shape(self, a, x):
        self.parts(a, x)
        return tuple(x)

    def between(self, a, x):
        return between(("add", 4 * sym.prod(x)))

    def cost(self, a, x, y):
        """The parts' primitives, the residual adds, and the copies the
        windows make (the padding, the partition, its reverse, the crop)."""
        attn = self.attention(a, x)
        padded = _PLAIN.padded_tokens(attn.a, attn.x)
        copies = Cost("copy", elements=sym.norm(3 * padded * x[0] + sym.prod(x)))
        return (*Composite.cost(self, a, x, y), copies)

    def window(self, a, x):
        return tuple(min(m, side) + 4 if isinstance(side, int) else m + 4
                     for m, side in zip(a.window, x[1:])), (1, 1)

    def build(self, a, x):
        from .davit_torch import SpatialBlock as Module
        _, c, hidden = self.widths(a, x)
        return Module(c, a.heads, tuple(a.window), hidden, a.qkv_bias, a.cpe_act, a.eps)

    torch_modules = ("archcalc.layers.davit_torch.SpatialBlock",
                     "timm.models.davit.SpatialBlock")

    def from_torch(self, call, m):
        """archcalc's and timm's SpatialBlock (cpe1, norm1, attn, cpe2, norm2,
        mlp), checked part by part against what the kind computes."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "DaViT's SpatialBlock")
        c = call.x[0]
        acts = {_cpe_act(m.cpe1, c), _cpe_act(m.cpe2, c)}
        norms = (m.norm1, m.norm2)
        if len(acts) != 1 or any(
                type(nm).__name__ != "LayerNorm" or tuple(nm.normalized_shape) != (c,)
                or nm.weight is None or nm.bias is None for nm in norms) or \
                norms[0].eps != norms[1].eps:
            raise NoMapping("a SpatialBlock whose conv position encodings differ or whose "
                            "norms are not two layer norms of C")
        for name in ("drop_path1", "drop_path2"):
            if getattr(getattr(m, name, None), "drop_prob", 0.0):
                raise NoMapping("stochastic depth (drop_path) in a SpatialBlock")
        heads = _window_attention(m.attn, c)
        hidden = _mlp(getattr(m, "mlp", None), c)
        args = dict(heads=heads, window=_pair(m.window_size), qkv_bias=m.attn.qkv.bias
                    is not None, eps=float(m.norm1.eps))
        if hidden != 4 * c:
            args["hidden"] = hidden
        if acts.pop():
            args["cpe_act"] = True
        return row("davit_spatial_block", **args)


def _pair(v):
    a, b = (int(t) for t in v)
    return a if a == b else [a, b]


def _cpe_act(cpe, c):
    """Whether a ConvPosEnc has its GELU; refused where it is not a depthwise
    3x3 conv with a bias, or its act neither GELU nor nothing."""
    from .from_torch import NoMapping
    conv, act = cpe.proj, type(cpe.act).__name__
    if (conv.in_channels, conv.out_channels, conv.groups, tuple(conv.kernel_size),
            tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation)) != \
            (c, c, c, (3, 3), (1, 1), (1, 1), (1, 1)) or conv.bias is None or \
            conv.padding_mode != "zeros" or act not in ("Identity", "GELU") or \
            getattr(cpe.act, "approximate", "none") != "none":
        raise NoMapping("a conv position encoding other than a depthwise 3x3 conv with a bias "
                        "(and GELU)")
    return act == "GELU"


def _window_attention(attn, c):
    """The heads of DaViT's WindowAttention (qkv, proj with a bias, q scaled
    by the head width's -0.5 power, fused or not)."""
    from .from_torch import NoMapping
    heads = int(attn.num_heads)
    if c % heads or (attn.qkv.in_features, attn.qkv.out_features) != (c, 3 * c) or \
            (attn.proj.in_features, attn.proj.out_features) != (c, c) or \
            attn.proj.bias is None or abs(float(attn.scale) * (c // heads) ** 0.5 - 1) > 1e-9:
        raise NoMapping(f"a window attention of {heads} heads other than qkv {c} -> 3*{c}, "
                        f"proj {c} -> {c} with a bias, scaled by 1/sqrt(head_dim)")
    return heads


def _mlp(mlp, c):
    """The hidden width of timm's Mlp (fc1, GELU, fc2 with biases, no norm, no dropout)."""
    from .from_torch import NoMapping
    if mlp is None:
        raise NoMapping("a SpatialBlock without its MLP (ffn=False)")
    act, norm = mlp.act, getattr(mlp, "norm", None)
    drops = [getattr(getattr(mlp, name, None), "p", 0.0) for name in ("drop1", "drop2")]
    if type(act).__name__ != "GELU" or getattr(act, "approximate", "none") != "none" or \
            (norm is not None and type(norm).__name__ != "Identity") or any(drops) or \
            mlp.fc1.in_features != c or mlp.fc2.out_features != c or \
            mlp.fc2.in_features != mlp.fc1.out_features or \
            mlp.fc1.bias is None or mlp.fc2.bias is None:
        raise NoMapping("a SpatialBlock MLP other than C -> hidden -> C with GELU and biases, "
                        "no dropout")
    return int(mlp.fc1.out_features)


__all__ = ["ChannelAttention", "DavitSpatialBlock"]
