"""CaiT's two attentions (Touvron et al. 2021, "Going deeper with Image
Transformers"), as timm's ClassAttn and TalkingHeadAttn, and XCiT's
cross-covariance attention (El-Nouby et al. 2021), as timm's XCA: each one
row on N x D tokens, since each reads its tokens in a way the ``attention``
kind does not compute (one query, a mix across heads, channels attending to
channels).

- ``class_attention``: the class token's query (q on the first token only)
  attending to every token's keys and values (k, v Linears on all N), the
  output one token: 1 x D. MACs = D^2 (q) + 2*N*D^2 (k, v) + 2*N*D (scores,
  weighted values) + D^2 (proj).
- ``talking_heads_attention``: one qkv Linear, the scores q k^T / sqrt(D/h)
  mixed across the h heads before the softmax (``proj_l``, an h x h Linear
  with bias) and after it (``proj_w``), weighted values, proj. MACs = 4*N*D^2
  + 2*N^2*D + 2*N^2*h^2.
- ``xca``: one qkv Linear, q and k L2-normalized along the tokens, q scaled by
  a learned temperature per head, the D/h x D/h channel scores softmaxed,
  applied to v, proj. MACs = 4*N*D^2 + 2*N*D*(D/h).

FlopCounterMode counts F.scaled_dot_product_attention as its two products and
every elementwise op as 0, which is what ``macs`` gives."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .tokens import SelfAttention

FP32 = 4


def _args(bias_doc: str) -> dict:
    return {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "bias": Arg("bool", False, doc=bias_doc),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }


class _TokenAttention(Kind):
    """What the three share: heads dividing D, timm's weight names, the
    whole token grid as the receptive field, backward twice the forward."""
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    arg_examples = {"heads": (1, 2, 4)}
    receptive_field = SelfAttention.receptive_field

    def head_dim(self, a, x):
        d = x[1]
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"{self.name}: the width {d} does not divide into {a.heads} heads. "
                            f"Received: heads={a.heads}")
        return sym.exact_div(d, a.heads)

    def output_shape(self, a, x):
        self.head_dim(a, x)
        return x

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    @staticmethod
    def common(call, m, name):
        """heads, bias, dropouts of timm's module (attn_drop, proj_drop, proj
        with a bias), checked against the tokens' width."""
        from .from_torch import NoMapping
        if len(call.x) != 2:
            raise NoMapping(f"{name} on a {len(call.x)}-d input (it takes tokens)")
        if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v is not None]:
            raise NoMapping(f"{name} called with more than its tokens")
        if m.proj.in_features != call.x[1] or m.proj.out_features != call.x[1] or \
                m.proj.bias is None:
            raise NoMapping(f"{name} whose proj is not a Linear {call.x[1]} -> {call.x[1]} "
                            "with a bias")
        heads = int(m.num_heads)
        if call.x[1] % heads:
            raise NoMapping(f"{name} of {heads} heads on a width of {call.x[1]}")
        found = {"heads": heads, "dropout": float(m.attn_drop.p),
                 "proj_dropout": float(m.proj_drop.p)}
        return {k: v for k, v in found.items() if k == "heads" or v}


def _linear(m, d_in, d_out, bias, what):
    from .from_torch import NoMapping
    if (m.in_features, m.out_features, m.bias is not None) != (d_in, d_out, bias):
        raise NoMapping(f"{what}: a Linear {m.in_features} -> {m.out_features} "
                        f"(bias {m.bias is not None}), not {d_in} -> {d_out} (bias {bias})")


def _scaled(m, head_dim, what):
    from .from_torch import NoMapping
    if abs(float(m.scale) * head_dim ** 0.5 - 1) > 1e-9:
        raise NoMapping(f"{what} scaled by {m.scale}, not 1/sqrt(head_dim = {head_dim})")


@register
class ClassAttention(_TokenAttention):
    name = "class_attention"
    torch_classes = ("ClassAttention",)  # in cait_torch.py
    aliases = ("class_attn",)
    summary = ("CaiT's class attention on N x D tokens -> 1 x D: the first token's query "
               "attending to every token's keys and values")
    flops_rule = ("2 x MACs + 4 per attention score (scale, exp, sum, divide: 4*heads*N); "
                  "MACs = 2*N*D^2 + 2*D^2 + 2*N*D")
    args = {**_args("the q, k and v Linears' biases"),
            "kv": Arg("bool", False, doc="k and v as one Linear kv (D -> 2D: VOLO's "
                                         "ClassAttention), not two")}

    def output_shape(self, a, x):
        self.head_dim(a, x)
        return (1, x[1])

    def params(self, a, x):
        d = x[1]
        return sym.norm(4 * d * d + (3 * d if a.bias else 0) + d)

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        return f"3*({d}*{d}{' + ' + str(d) if a.bias else ''}) + ({d}*{d} + {d})"

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(2 * n * d * d + 2 * d * d + 2 * n * d)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return f"2*{n}*{d}^2 + 2*{d}^2 + 2*{n}*{d}"

    def flops(self, a, x, y):
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * x[0])

    def cost(self, a, x, y):
        """q's GEMM (one token), k's and v's (N tokens), the two products of
        one query, the softmax over heads*N scores, the projection."""
        n, d = x
        bias = (d,) if a.bias else ()
        kv = (2 * d * d,) + ((2 * d,) if a.bias else ()) if a.kv else \
            (d * d,) + bias + (d * d,) + bias
        return (Cost("linear", gemm=(1, d, d), tensors=(d * d,) + bias),
                Cost("linear", gemm=(n, 2 * d, d), tensors=kv),
                Cost("linear", gemm=(1, n, d)),
                Cost("softmax", elements=sym.norm(a.heads * n)),
                Cost("linear", gemm=(1, d, n)),
                Cost("linear", gemm=(1, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the input (k, v), q, k, v, the heads' output (proj's input), the
        # softmax statistics per head (fp32)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        return Saved(input=True, extra=((d, None), (sym.norm(2 * n * d), None), (d, None),
                                        (a.heads, FP32)))

    def build(self, a, x):
        from .cait_torch import ClassAttention as Module
        return Module(x[1], a.heads, a.bias, a.dropout, a.proj_dropout, a.kv)

    torch_modules = ("archcalc.layers.cait_torch.ClassAttention", "timm.models.cait.ClassAttn",
                     "timm.models.volo.ClassAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's ClassAttn (q, k, v, proj Linears), and VOLO's
        ClassAttention (q, kv, proj: k and v one Linear)."""
        from .from_torch import row
        found = self.common(call, m, "ClassAttn")
        d = call.x[1]
        bias = m.q.bias is not None
        kv = hasattr(m, "kv")
        _linear(m.q, d, d, bias, "ClassAttn's q")
        if kv:     # VOLO's may set a head_dim: its kv is then not D -> 2D
            _linear(m.kv, d, 2 * d, bias, "ClassAttention's kv")
        else:
            for what in ("k", "v"):
                _linear(getattr(m, what), d, d, bias, f"ClassAttn's {what}")
        _scaled(m, d // found["heads"], "ClassAttn")
        return row("class_attention", **found, **({"bias": True} if bias else {}),
                   **({"kv": True} if kv else {}))


@register
class TalkingHeadsAttention(_TokenAttention):
    name = "talking_heads_attention"
    torch_classes = ("TalkingHeadsAttention",)  # in cait_torch.py
    aliases = ("talking_heads",)
    summary = ("talking-heads attention on N x D tokens: the scores mixed across heads "
               "before and after the softmax (h x h Linears)")
    flops_rule = ("2 x MACs + the two mixes' biases (2*h*N^2) + 4 per attention score "
                  "(scale, exp, sum, divide: 4*h*N^2); MACs = 4*N*D^2 + 2*N^2*D + 2*N^2*h^2")
    args = _args("the qkv Linear's bias")

    def params(self, a, x):
        d, h = x[1], a.heads
        return sym.norm(4 * d * d + (3 * d if a.bias else 0) + d + 2 * (h * h + h))

    def params_formula(self, a, x):
        d, h = sym.plain(x[1]), a.heads
        return (f"(3*{d}*{d}{' + 3*' + str(d) if a.bias else ''}) + ({d}*{d} + {d}) "
                f"+ 2*({h}*{h} + {h}) (proj_l, proj_w)")

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(4 * n * d * d + 2 * n * n * d + 2 * n * n * a.heads * a.heads)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return f"4*{n}*{d}^2 + 2*{n}^2*{d} + 2*{n}^2*{a.heads}^2"

    def flops(self, a, x, y):
        return sym.norm(2 * self.macs(a, x, y) + 6 * a.heads * x[0] * x[0])

    def cost(self, a, x, y):
        """The qkv GEMM, the scores, the two mixes across heads (GEMMs of
        N^2 rows, h x h), the softmax, the weighted values, the projection."""
        n, d = x
        h = a.heads
        mix = Cost("linear", gemm=(n * n, h, h), tensors=(h * h, h))
        return (Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d,) + ((3 * d,) if a.bias else ())),
                Cost("linear", gemm=(n, n, d)), mix,
                Cost("softmax", elements=sym.norm(h * n * n)), mix,
                Cost("linear", gemm=(n, d, n)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the input, q (scaled), k, v, the scores (proj_l's input), the mixed
        # scores and the softmax's output (proj_w's input and the softmax's
        # backward), the weights (the product's), the heads' output
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        scores = sym.norm(a.heads * n * n)
        return Saved(input=True, extra=((sym.norm(3 * n * d), None), (scores, None),
                                        (scores, None), (scores, None), (sym.norm(n * d), None)))

    def build(self, a, x):
        from .cait_torch import TalkingHeadsAttention as Module
        return Module(x[1], a.heads, a.bias, a.dropout, a.proj_dropout)

    torch_modules = ("archcalc.layers.cait_torch.TalkingHeadsAttention",
                     "timm.models.cait.TalkingHeadAttn")

    def from_torch(self, call, m):
        """archcalc's and timm's TalkingHeadAttn (qkv, proj_l, proj_w, proj)."""
        from .from_torch import row
        found = self.common(call, m, "TalkingHeadAttn")
        d, h = call.x[1], found["heads"]
        bias = m.qkv.bias is not None
        _linear(m.qkv, d, 3 * d, bias, "TalkingHeadAttn's qkv")
        _linear(m.proj_l, h, h, True, "TalkingHeadAttn's proj_l")
        _linear(m.proj_w, h, h, True, "TalkingHeadAttn's proj_w")
        _scaled(m, d // h, "TalkingHeadAttn")
        return row("talking_heads_attention", **found, **({"bias": True} if bias else {}))


@register
class CrossCovarianceAttention(_TokenAttention):
    name = "xca"
    torch_classes = ("CrossCovarianceAttention",)  # in cait_torch.py
    aliases = ("cross_covariance_attention",)
    summary = ("XCiT's cross-covariance attention on N x D tokens: per head, D/h x D/h "
               "channel scores from L2-normalized q and k, a learned temperature")
    flops_rule = ("2 x MACs + 3 per normalized element of q and k (square, sum, divide: "
                  "6*N*D) + N*D (the temperature) + 3 per score (exp, sum, divide: "
                  "3*D*D/h); MACs = 4*N*D^2 + 2*N*D*(D/h)")
    args = _args("the qkv Linear's bias")

    def params(self, a, x):
        d = x[1]
        return sym.norm(4 * d * d + (3 * d if a.bias else 0) + d + a.heads)

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        return (f"(3*{d}*{d}{' + 3*' + str(d) if a.bias else ''}) + ({d}*{d} + {d}) "
                f"+ {a.heads} (temperature)")

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(4 * n * d * d + 2 * n * d * self.head_dim(a, x))

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return f"4*{n}*{d}^2 + 2*{n}*{d}*{sym.plain(self.head_dim(a, x))}"

    def flops(self, a, x, y):
        n, d = x
        scores = d * self.head_dim(a, x)
        return sym.norm(2 * self.macs(a, x, y) + 7 * n * d + 3 * scores)

    def cost(self, a, x, y):
        """The qkv GEMM, the normalization of q and k, the channel scores and
        the weighted values (GEMMs over the N tokens), the softmax, proj."""
        n, d = x
        hd = self.head_dim(a, x)
        return (Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d,) + ((3 * d,) if a.bias else ())),
                Cost("softmax", elements=sym.norm(2 * n * d), tensors=(a.heads,)),
                Cost("linear", gemm=(d, hd, n)),
                Cost("softmax", elements=sym.norm(d * hd)),
                Cost("linear", gemm=(d, n, hd)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the input, q, k, v, q and k normalized (and their norms), the
        # scaled q, the heads' output, the softmax statistics (fp32)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        return Saved(input=True, extra=((sym.norm(3 * n * d), None), (sym.norm(3 * n * d), None),
                                        (sym.norm(2 * d), None), (sym.norm(n * d), None),
                                        (d, FP32)))

    def build(self, a, x):
        from .cait_torch import CrossCovarianceAttention as Module
        return Module(x[1], a.heads, a.bias, a.dropout, a.proj_dropout)

    # EdgeNeXt's applies the temperature to the scores, XCiT's to q: the same products
    torch_modules = ("archcalc.layers.cait_torch.CrossCovarianceAttention",
                     "timm.models.xcit.XCA", "timm.models.edgenext.CrossCovarianceAttn")

    def from_torch(self, call, m):
        """archcalc's and timm's XCA (qkv, temperature, proj)."""
        from .from_torch import NoMapping, row
        found = self.common(call, m, "XCA")
        d, h = call.x[1], found["heads"]
        bias = m.qkv.bias is not None
        _linear(m.qkv, d, 3 * d, bias, "XCA's qkv")
        if tuple(m.temperature.shape) != (h, 1, 1):
            raise NoMapping(f"XCA with a temperature of shape {tuple(m.temperature.shape)}")
        return row("xca", **found, **({"bias": True} if bias else {}))
