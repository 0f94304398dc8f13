"""Attention pooling of a map (CLIP's ResNet head, timm's AttentionPool2d):
the H*W positions read as tokens, their mean (or a learned class token) put
first, a learned position embedding added to all T = H*W + 1 tokens,
multi-head self-attention over all of them (q, k, v from C to E channels),
the output projection to ``out`` features on every token, then the first
token is the pooled vector (``pool = "none"``: the other tokens as an
out x H x W map).

MACs (FlopCounterMode's on the meta device, which counts
F.scaled_dot_product_attention as its two products): q, k, v 3*T*C*E, scores
and weighted values 2*T*T*E, projection T*E*out."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4


@register
class AttentionPool2d(Kind):
    name = "attention_pool_2d"
    torch_classes = ("AttentionPool2d",)  # in attention_pool_2d_torch.py
    aliases = ("clip_attention_pool",)
    primary = "heads"
    weighted = True
    autocast = "low"
    summary = ("CLIP's attention pooling of a C x H x W map: the mean (or a class token) "
               "and the H*W positions, plus a position embedding, multi-head "
               "self-attention, a projection; the first token (or the map)")
    flops_rule = ("2 x MACs + the mean (H*W*C) + the position embedding's add (T*C) + 4 per "
                  "attention score (4*heads*T^2) + the biases (3*T*E with bias, T*out with "
                  "a projection), T = H*W + 1; MACs = 3*T*C*E + 2*T^2*E + T*E*out")
    inputs = "chw"
    args = {
        "heads": Arg("int", min=1, doc="attention heads; the width E must divide by it"),
        "width": Arg("int", None, min=1, numeric=True,
                     doc="E, the attention's channels (none: the input's C)"),
        "out": Arg("int", None, min=0, numeric=True,
                   doc="the projection's output features (none: C; 0: no projection)"),
        "bias": Arg("bool", True, doc="the q, k and v projections' biases"),
        "fused": Arg("bool", False, doc="q, k and v as one linear layer (timm's qkv) or "
                                        "three (CLIP's q, k, v)"),
        "first": Arg("str", "mean", choices=("mean", "learned"),
                     doc="the first token: the positions' mean, or a learned class token"),
        "pool": Arg("str", "token", choices=("token", "none"),
                    doc="token: the first token's features; none: the others as a map"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention's output"),
    }
    arg_examples = {"heads": (1, 2), "width": (None, 4, 8), "out": (None, 0, 3)}

    @staticmethod
    def sizes(a, x):
        """(T tokens, C in, E attention width, features out, projected?)."""
        c, h, w = x
        e = c if a.width is None else a.width
        projected = a.out != 0
        out = (c if a.out is None else a.out) if projected else e
        return sym.norm(h * w + 1), c, e, out, projected

    def output_shape(self, a, x):
        _, _, e, out, _ = self.sizes(a, x)
        if isinstance(e, int) and e % a.heads:
            raise SpecError(f"attention_pool_2d: the width {e} does not divide into "
                            f"{a.heads} heads. Received: heads={a.heads}, width={a.width}")
        return (out,) if a.pool == "token" else (out, x[1], x[2])

    def params(self, a, x):
        t, c, e, out, projected = self.sizes(a, x)
        qkv = 3 * c * e + (3 * e if a.bias else 0)
        proj = e * out + out if projected else 0
        return sym.norm(t * c + (c if a.first == "learned" else 0) + qkv + proj)

    def params_formula(self, a, x):
        t, c, e, out, projected = (sym.plain(v) if not isinstance(v, bool) else v
                                   for v in self.sizes(a, x))
        parts = [f"{t}*{c} (position embedding)"] + ([f"{c} (class token)"]
                                                     if a.first == "learned" else [])
        parts.append(f"3*{c}*{e}" + (f" + 3*{e}" if a.bias else "") + " (q, k, v)")
        if projected:
            parts.append(f"{e}*{out} + {out} (projection)")
        return " + ".join(f"({p})" for p in parts)

    def macs(self, a, x, y):
        t, c, e, out, projected = self.sizes(a, x)
        return sym.norm(3 * t * c * e + 2 * t * t * e + (t * e * out if projected else 0))

    def macs_formula(self, a, x, y):
        t, c, e, out, projected = (sym.plain(v) if not isinstance(v, bool) else v
                                   for v in self.sizes(a, x))
        proj = f" + {t}*{e}*{out}" if projected else ""
        return f"3*{t}*{c}*{e} + 2*{t}^2*{e}{proj}"

    def flops(self, a, x, y):
        t, c, e, out, projected = self.sizes(a, x)
        mean = 0 if a.first == "learned" else x[1] * x[2] * c
        biases = (3 * t * e if a.bias else 0) + (t * out if projected else 0)
        return sym.norm(2 * self.macs(a, x, y) + mean + t * c + 4 * a.heads * t * t + biases)

    def macs_missed_by(self, a, x, y):
        t, _, e, _, _ = self.sizes(a, x)
        return {"fvcore": (sym.norm(2 * t * t * e),
                           "fvcore has no handler for aten::scaled_dot_product_attention "
                           "(the two attention matmuls, 2*T^2*E)")}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The mean (or nothing), the cat and the position embedding's add,
        q, k, v (T, E, C each), scores and weighted values (T x T x E), the
        softmax, the projection (T, out, E)."""
        t, c, e, out, projected = self.sizes(a, x)
        costs = [] if a.first == "learned" else [Cost("global_avgpool", elements=sym.prod(x))]
        costs += [Cost("cat", elements=sym.norm(t * c)), Cost("add", elements=sym.norm(t * c)),
                  Cost("linear", gemm=(t, 3 * e, c), tensors=(3 * c * e,)),
                  Cost("linear", gemm=(t, t, e), backward=True),
                  Cost("softmax", elements=sym.norm(a.heads * t * t)),
                  Cost("linear", gemm=(t, e, t))]
        if projected:
            costs.append(Cost("linear", gemm=(t, out, e), tensors=(e * out,)))
        return tuple(costs)

    def saved(self, a, x, y):
        # as saved_tensors_hooks sees them: the tokens with their position
        # embedding (T*C, for q, k, v), q, k, v and the heads' output (4*T*E),
        # that output for the projection (T*E), the softmax statistics (fp32)
        t, c, e, _, projected = self.sizes(a, x)
        extra = ((sym.norm(t * c + 4 * t * e + (t * e if projected else 0)), None),
                 (sym.norm(a.heads * t), FP32))
        return Saved(input=False, extra=extra)

    def build(self, a, x):
        from .attention_pool_2d_torch import AttentionPool2d as Module
        t, c, e, out, projected = self.sizes(a, x)
        return Module(c, (x[1], x[2]), e, a.heads, out if projected else 0, a.bias, a.fused,
                      a.first == "learned", a.pool, a.dropout)

    torch_modules = ("archcalc.layers.attention_pool_2d_torch.AttentionPool2d",
                     "timm.layers.attention_pool2d.AttentionPool2d")

    def from_torch(self, call, m):
        """timm's AttentionPool2d (and archcalc's) at its own grid: the
        position embedding resampled to another grid has no kind."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "AttentionPool2d")
        if type(m).__module__.startswith("archcalc."):    # archcalc's own: its arguments
            c, feat, width, heads, out, bias, fused, learned, pool, dropout = m.init_args
            if tuple(feat) != tuple(call.x[1:]) or c != call.x[0]:
                raise NoMapping(f"AttentionPool2d built for a {c} x {feat} map, on "
                                f"{list(call.x)}")
            found = {"heads": heads, "width": width, "out": out, "bias": bias, "fused": fused,
                     "first": "learned" if learned else "mean", "pool": pool,
                     "dropout": dropout}
            defaults = {k: arg.default for k, arg in self.args.items()}
            defaults.update(width=c, out=c)
            return row("attention_pool_2d", **{k: v for k, v in found.items()
                                                if k == "heads" or v != defaults[k]})
        c, h, w = call.x
        if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v]:
            raise NoMapping("AttentionPool2d called for its pre-logits")
        if tuple(m.feat_size) != (h, w) or m.in_features != c:
            raise NoMapping(f"AttentionPool2d whose position embedding is for a "
                            f"{tuple(m.feat_size)} grid of {m.in_features} channels, on a "
                            f"{c} x {h} x {w} map")
        e, heads = int(m.embed_dim), int(m.num_heads)
        if heads * int(m.head_dim) != e or float(m.scale) != int(m.head_dim) ** -0.5:
            raise NoMapping(f"AttentionPool2d whose {heads} heads of {m.head_dim} are not "
                            f"its width {e}, or scaled otherwise")
        fused = m.qkv is not None
        first = m.qkv if fused else m.q
        projected = type(m.proj).__name__ == "Linear"
        found = {"heads": heads, "width": e, "out": int(m.proj.out_features) if projected else 0,
                 "bias": first.bias is not None, "fused": fused,
                 "first": "mean" if m.cls_token is None else "learned", "pool": m.pool_type or "none",
                 "dropout": float(m.drop.p)}
        if m.pool_type not in ("token", ""):
            raise NoMapping(f"AttentionPool2d pooled by {m.pool_type!r}")
        defaults = {k: arg.default for k, arg in self.args.items()}
        defaults.update(width=c, out=c)
        return row("attention_pool_2d", **{k: v for k, v in found.items()
                                            if k == "heads" or v != defaults[k]})


__all__ = ["AttentionPool2d"]
