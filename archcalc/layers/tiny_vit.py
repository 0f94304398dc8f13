"""TinyViT's block (Wu et al. 2022), as timm's TinyVitBlock, on the tokens of
an h x w map (its channels-last B x H x W x C input read flat): the map
padded with zeros on the bottom and right to whole M x M windows, attention
within each window (a layer norm, qkv, per head q, k and v of C/heads each in
turn; scores plus LeViT's learned bias per head and |dy|, |dx| offset,
``attention_biases`` heads x M*M gathered by a fixed index; a projection),
the padding cut, added to the input; a depthwise k x k conv (no bias) and a
batch norm on the map; then x + MLP (layer norm, C -> hidden, GELU, hidden ->
C). Stochastic depth (``drop_prob``) on both residual branches.

Why one row: timm's forward branches on the map's size (fx cannot trace it)
and folds the windows into the batch (no row can), so the whole block is the
kind.

MACs (FlopCounterMode's): on the padded map's N' positions, 3*N'*C^2 (qkv) +
2*N'*M^2*C (scores, weighted values) + N'*C^2 (projection); on the map's N,
N*C*k^2 (the depthwise conv) + 2*N*C*hidden (the MLP). The padded positions
are computed and counted, as PyTorch does."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .composite import mlp_costs
from .window_attention import _require_tokens, _square_or_pair, map_size

FP32 = 4
INT64 = 8
SDPA_MISSED = ("fvcore has no handler for aten::scaled_dot_product_attention (the two "
               "attention matmuls, 2*N'*M^2*C)")


@register
class TinyVitBlock(Kind):
    name = "tiny_vit_block"
    torch_classes = ("TinyVitBlock",)  # in tiny_vit_torch.py
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("TinyViT's block on the tokens of an h x w map: window attention with "
               "LeViT's offset biases (the map padded to whole windows), a depthwise conv "
               "and batch norm, an MLP; pre-norm residuals")
    flops_rule = ("2 x MACs + 5 per attention score (bias, softmax) + 5 per normalized "
                  "element (two layer norms, on N' then N positions) + 2 per batch-normalized "
                  "element + 8 per MLP hidden element (GELU) + the biases + 2*N*C (the "
                  "residual adds); MACs = 4*N'*C^2 + 2*N'*M^2*C + N*C*k^2 + 2*N*C*hidden, "
                  "N' the padded map's positions")
    args = {
        "heads": Arg("int", min=1, numeric=True, doc="attention heads; C must divide by it"),
        "window": Arg("int", 7, min=1, numeric=True, doc="M: the windows' side"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the map, h*w = N; default: the square sqrt(N) x sqrt(N)"),
        "hidden": Arg("int", None, min=1, numeric=True, doc="the MLP's width (default 4C)"),
        "kernel": Arg("int", 3, min=1, numeric=True,
                      doc="k: the depthwise conv's kernel, odd (padding k//2)"),
        "drop_prob": Arg("float", 0.0, min=0.0, max=1.0,
                         doc="stochastic depth of both residual branches (per sample)"),
        "mlp_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="the MLP's two dropouts"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the layer and batch norms"),
    }
    arg_examples = {"heads": (1, 2), "window": (1, 2, 3), "hidden": (None, 3),
                    "kernel": (1, 3),
                    "size": (None, lambda x: [1, x[0]],
                             lambda x: [2, x[0] // 2] if x[0] % 2 == 0 else [x[0], 1])}

    def geometry(self, a, x):
        """(h, w), the padded map's positions N', the window's positions T."""
        c, (h, w) = x[1], map_size(self.name, a.size, x[0])
        if isinstance(c, int) and c % a.heads:
            raise SpecError(f"{self.name}: the width {c} does not divide into {a.heads} heads. "
                            f"Received: heads={a.heads}")
        if a.kernel % 2 == 0:
            raise SpecError(f"{self.name}: the depthwise conv's kernel must be odd (padding "
                            f"k//2 keeps the map). Received: kernel={a.kernel}")
        m = a.window
        padded = sym.norm(sym.ceildiv(h, m) * m * sym.ceildiv(w, m) * m)
        return (h, w), padded, m * m

    def output_shape(self, a, x):
        self.geometry(a, x)
        return x

    def size_arithmetic(self, a, x):
        (h, w), padded, _ = self.geometry(a, x)
        m = a.window
        return [f"ceil({sym.plain(h)}/{m})*{m} x ceil({sym.plain(w)}/{m})*{m} = "
                f"{sym.fmt_int(padded)} positions attended in {m} x {m} windows"]

    def hidden(self, a, x):
        return a.hidden if a.hidden is not None else 4 * x[1]

    def window(self, a, x):
        # a window (the map where smaller), then the depthwise conv
        (h, w), _, _ = self.geometry(a, x)
        k = a.kernel
        return tuple((min(a.window, side) if isinstance(side, int) else a.window) + k - 1
                     for side in (h, w)), (1, 1)

    def params(self, a, x):
        c, hid = x[1], self.hidden(a, x)
        attn = 2 * c + 3 * c * c + 3 * c + c * c + c + a.heads * a.window ** 2
        return sym.norm(attn + c * a.kernel ** 2 + 2 * c + 2 * c + 2 * c * hid + hid + c)

    def params_formula(self, a, x):
        c, hid = sym.plain(x[1]), sym.plain(self.hidden(a, x))
        m, k = a.window, a.kernel
        return (f"2*{c} + ({c}*3*{c} + 3*{c}) + ({c}*{c} + {c}) + {a.heads}*{m}*{m} "
                f"(attention) + {c}*{k}*{k} + 2*{c} (conv, norm) + 2*{c} + ({c}*{hid} + {hid}) "
                f"+ ({hid}*{c} + {c}) (MLP)")

    def buffers(self, a, x):
        # the batch norm's statistics, the bias gather's index (T x T, int64)
        return sym.norm(2 * x[1] + a.window ** 4)

    def macs(self, a, x, y):
        n, c = x
        _, padded, t = self.geometry(a, x)
        return sym.norm(4 * padded * c * c + 2 * padded * t * c + n * c * a.kernel ** 2
                        + 2 * n * c * self.hidden(a, x))

    def macs_missed_by(self, a, x, y):
        _, padded, t = self.geometry(a, x)
        return {"fvcore": (sym.norm(2 * padded * t * x[1]), SDPA_MISSED)}

    def flops(self, a, x, y):
        n, c = x
        _, padded, t = self.geometry(a, x)
        hid = self.hidden(a, x)
        biases = padded * 4 * c + n * (hid + c)
        return sym.norm(2 * self.macs(a, x, y) + 5 * a.heads * padded * t + 5 * padded * c
                        + 5 * n * c + 2 * n * c + 8 * n * hid + biases + 2 * n * c)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The padding and the windows' copy, the layer norm, the qkv GEMM, the
        scores and weighted values, the softmax, the projection, the residual;
        the depthwise conv and its norm; the MLP's norm, GEMMs and GELU, the residual."""
        n, c = x
        (h, w), padded, t = self.geometry(a, x)
        hid = self.hidden(a, x)
        k = a.kernel
        return (Cost("copy", elements=sym.norm(padded * c)),
                Cost("layer_norm", elements=sym.norm(padded * c), tensors=(c, c)),
                Cost("linear", gemm=(padded, 3 * c, c), tensors=(3 * c * c, 3 * c)),
                Cost("linear", gemm=(padded, t, c)),
                Cost("softmax", elements=sym.norm(a.heads * padded * t)),
                Cost("linear", gemm=(padded, c, t)),
                Cost("linear", gemm=(padded, c, c), tensors=(c * c, c)),
                Cost("copy", elements=sym.norm(padded * c)),
                Cost("add", elements=sym.norm(n * c)),
                Cost("conv", conv=(k, k, 1, 1, c, c, h, w, c), tensors=(c * k * k,)),
                Cost("batch_norm", elements=sym.norm(n * c), tensors=(c, c)),
                *mlp_costs(n, c, hid),
                Cost("add", elements=sym.norm(n * c)))

    def saved(self, a, x, y):
        # the windows (the norm's input), its statistics and output, q, k, v,
        # the scores per head and pair, the heads' output; the conv's input and
        # output (the norm's input), the MLP's norm input, statistics, output,
        # hidden before and after GELU
        n, c = x[0], x[-1]
        try:
            _, padded, t = self.geometry(a, x)
        except SpecError:       # the engine may ask with a placeholder shape
            padded, t = n, a.window ** 2
        hid = a.hidden if a.hidden is not None else 4 * c
        return Saved(input=True, extra=tuple(
            (sym.norm(e), s) for e, s in (
                (padded * c, None), (2 * padded, FP32), (padded * c, None), (3 * padded * c, None),
                (a.heads * padded * t, None), (padded * c, None), (n * c, None), (n * c, None),
                (n * c, None), (2 * n, FP32), (n * c, None), (n * hid, None), (n * hid, None))))

    def build(self, a, x):
        from .tiny_vit_torch import TinyVitBlock as Module
        (h, w), _, _ = self.geometry(a, x)
        return Module(x[1], a.heads, a.window, h, w, self.hidden(a, x), a.kernel, a.drop_prob,
                      a.mlp_dropout, a.eps)

    torch_modules = ("archcalc.layers.tiny_vit_torch.TinyVitBlock",
                     "timm.models.tiny_vit.TinyVitBlock")

    def from_torch(self, call, m):
        """timm's TinyVitBlock on B x H x W x C (or archcalc's on the tokens)."""
        from .from_torch import NoMapping, row
        _require_tokens(call, "a TinyVitBlock")
        own = getattr(m, "map_size", None)
        if own is None and len(call.x_torch) != 3:
            raise NoMapping(f"a TinyVitBlock on a {list(call.x_torch)} input (it takes "
                            "B x H x W x C)")
        h, w = (int(v) for v in (own or call.x_torch[:2]))
        n, c = call.x
        heads, ws = int(m.num_heads), int(m.window_size)
        if n != h * w or int(m.dim) != c or c % heads:
            raise NoMapping(f"a TinyVitBlock of width {m.dim} with {heads} heads on "
                            f"{h} x {w} x {c}")
        eps = _check_attention(m.attn, c, heads, ws)
        hidden, dropout = _check_mlp(m.mlp, c, eps)
        k = _check_local_conv(m.local_conv, c, eps)
        drops = {float(m.drop_prob)} if own is not None else \
            {_drop_path(getattr(m, name, None)) for name in ("drop_path1", "drop_path2")}
        if len(drops) != 1:
            raise NoMapping("a TinyVitBlock whose two residual branches drop otherwise")
        found = {"heads": heads, "window": ws, "size": _square_or_pair(h, w),
                 "hidden": hidden if hidden != 4 * c else None, "kernel": k,
                 "drop_prob": drops.pop(), "mlp_dropout": dropout, "eps": eps}
        return row("tiny_vit_block", **{key: v for key, v in found.items()
                                        if key == "heads" or v != self.args[key].default})


def _layer_norm_eps(norm, c) -> float:
    from .from_torch import NoMapping
    if type(norm).__name__ != "LayerNorm" or tuple(norm.normalized_shape) != (c,) or \
            not norm.elementwise_affine or norm.bias is None:
        raise NoMapping(f"a TinyVitBlock norm other than a layer norm over {c} ({type(norm).__name__})")
    return float(norm.eps)


def _is_linear(fc, cin, cout):
    return type(fc).__name__ == "Linear" and (fc.in_features, fc.out_features) == (cin, cout) \
        and fc.bias is not None


def _check_attention(attn, c, heads, ws) -> float:
    """timm's tiny_vit Attention: a layer norm, qkv (per head q, k, v of
    C/heads each), the offset bias table over the M x M window, proj."""
    from .from_torch import NoMapping
    hd = c // heads
    if (int(attn.num_heads), int(attn.key_dim), int(attn.val_dim), int(attn.out_dim)) != \
            (heads, hd, hd, c) or tuple(attn.resolution) != (ws, ws) or \
            tuple(attn.attention_biases.shape) != (heads, ws * ws) or \
            abs(float(attn.scale) * hd ** 0.5 - 1) > 1e-9 or \
            not _is_linear(attn.qkv, c, 3 * c) or not _is_linear(attn.proj, c, c):
        raise NoMapping("a TinyVitBlock attention other than C/heads-wide q, k, v with a bias "
                        f"over its {ws} x {ws} window")
    return _layer_norm_eps(attn.norm, c)


def _check_mlp(mlp, c, eps):
    """NormMlp: a layer norm, fc1, GELU, dropout, fc2, dropout (one p)."""
    from .from_torch import NoMapping
    hidden = int(mlp.fc1.out_features)
    act = mlp.act
    ps = {float(mlp.drop1.p), float(mlp.drop2.p)}
    if _layer_norm_eps(mlp.norm, c) != eps or not _is_linear(mlp.fc1, c, hidden) or \
            not _is_linear(mlp.fc2, hidden, c) or type(act).__name__ != "GELU" or \
            act.approximate != "none" or len(ps) != 1:
        raise NoMapping("a TinyVitBlock MLP other than norm, C -> hidden, GELU, hidden -> C "
                        "with one dropout")
    return hidden, ps.pop()


def _check_local_conv(conv_norm, c, eps) -> int:
    """ConvNorm: a depthwise k x k conv (padding k//2, no bias), a batch norm."""
    from .from_torch import NoMapping
    conv, bn = conv_norm.conv, conv_norm.bn
    k = conv.kernel_size[0]
    if (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
            tuple(conv.padding), tuple(conv.dilation), conv.groups, conv.bias is None,
            conv.padding_mode) != (c, c, (k, k), (1, 1), (k // 2, k // 2), (1, 1), c, True,
                                   "zeros") or k % 2 == 0:
        raise NoMapping("a TinyVitBlock local conv other than a depthwise odd k x k conv "
                        "without a bias")
    if type(bn).__name__ != "BatchNorm2d" or not (bn.affine and bn.track_running_stats) or \
            float(bn.eps) != eps:
        raise NoMapping("a TinyVitBlock local conv's norm other than a batch norm of the "
                        "layer norms' eps")
    return k


def _drop_path(module) -> float:
    """Identity (or none): 0; timm's DropPath, scaled by 1/(1 - p): p."""
    from .from_torch import NoMapping
    name = type(module).__name__
    if name in ("Identity", "NoneType"):
        return 0.0
    if name == "DropPath" and getattr(module, "scale_by_keep", True):
        return float(module.drop_prob)
    if name == "StochasticDepth" and getattr(module, "mode", "row") == "row":
        return float(module.p)
    raise NoMapping(f"a TinyVitBlock residual through {name}")
