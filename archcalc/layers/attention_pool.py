"""Attention pooling over tokens (timm's AttentionPoolLatent, the "map" head of
SigLIP and its kin, Lee et al. 2019's pooling by multi-head attention): a
learned latent query of L tokens attends to the N input tokens (q from the
latent, k and v from the tokens), the output projection, then, as in a
transformer block, x + MLP(LayerNorm(x)); the first latent token (or their
mean) is the pooled vector.

MACs (FlopCounterMode's on the meta device, which counts
F.scaled_dot_product_attention as its two products): q L*D*D, k and v
N*D*2D, scores and weighted values 2*L*N*D, projection L*D*D, MLP 2*L*D*H.
"""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4


@register
class AttentionPool(Kind):
    name = "attention_pool"
    torch_classes = ("AttentionPool",)  # in attention_pool_torch.py
    aliases = ("attention_pool_latent", "map_head")
    primary = "heads"
    weighted = True
    autocast = "low"
    summary = ("a learned latent query attends to the N x D tokens (multi-head), then "
               "x + MLP(LayerNorm(x)): N x D -> D (the first latent token, or their mean)")
    flops_rule = ("2 x MACs + 4 per attention score (4*heads*L*N) + the MLP's activation and "
                  "the residual (L*H + L*D) + the LayerNorm's 7 per element (7*L*D); "
                  "MACs = 2*L*D^2 + 2*N*D^2 + 2*L*N*D + 2*L*D*H")
    inputs = "tokens"
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "latent": Arg("int", 1, min=1, doc="latent query tokens L"),
        "bias": Arg("bool", True, doc="the q and kv projections' biases"),
        "qk_norm": Arg("bool", False, doc="a LayerNorm on each head's q and k"),
        "mlp": Arg("int", None, min=1, doc="the MLP's hidden width H (none: no MLP, no norm)"),
        "approximate": Arg("str", "none", choices=("none", "tanh"), doc="the MLP's GELU"),
        "norm": Arg("bool", True, doc="a LayerNorm before the MLP (timm's default has none)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the LayerNorms"),
        "pool": Arg("str", "token", choices=("token", "avg", "none"),
                    doc="token: the first latent token; avg: their mean; none: L x D"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }

    def output_shape(self, a, x):
        d = x[1]
        if isinstance(d, int) and isinstance(a.heads, int) and d % a.heads:
            raise SpecError(f"attention_pool: the width {d} does not divide into {a.heads} "
                            f"heads. Received: heads={a.heads}")
        return (a.latent, d) if a.pool == "none" else (d,)

    def params(self, a, x):
        d, hidden = x[1], a.mlp or 0
        qkv = 3 * d * d + (3 * d if a.bias else 0)
        norms = (4 * sym.exact_div(d, a.heads) if a.qk_norm else 0) + \
            (2 * d if a.mlp and a.norm else 0)
        mlp = 2 * d * hidden + hidden + d if a.mlp else 0
        return sym.norm(a.latent * d + qkv + d * d + d + norms + mlp)

    def params_formula(self, a, x):
        d, latent = sym.plain(x[1]), sym.plain(a.latent)
        parts = [f"{latent}*{d} (latent)", f"3*{d}*{d}" + (f" + 3*{d}" if a.bias else ""),
                 f"{d}*{d} + {d}"]
        if a.qk_norm:
            parts.append(f"2*2*{sym.plain(sym.exact_div(x[1], a.heads))} (q, k norms)")
        if a.mlp:
            h = sym.plain(a.mlp)
            parts += ([f"2*{d} (norm)"] if a.norm else []) + [f"2*{d}*{h} + {h} + {d} (MLP)"]
        return " + ".join(f"({p})" for p in parts)

    def macs(self, a, x, y):
        n, d = x
        latent, hidden = a.latent, a.mlp or 0
        return sym.norm(2 * latent * d * d + 2 * n * d * d + 2 * latent * n * d
                        + 2 * latent * d * hidden)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        latent = sym.plain(a.latent)
        mlp = f" + 2*{latent}*{d}*{sym.plain(a.mlp)}" if a.mlp else ""
        return f"2*{latent}*{d}^2 + 2*{n}*{d}^2 + 2*{latent}*{n}*{d}{mlp}"

    def flops(self, a, x, y):
        n, d = x
        latent, hidden = a.latent, a.mlp or 0
        block = latent * hidden + latent * d + (7 * latent * d if a.norm else 0) if a.mlp else 0
        pooled = latent * d if a.pool == "avg" else 0
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * latent * n + block + pooled)

    def macs_missed_by(self, a, x, y):
        n, d = x
        return {"fvcore": (sym.norm(2 * a.latent * n * d),
                           "fvcore has no handler for aten::scaled_dot_product_attention "
                           "(the two attention matmuls, 2*L*N*D)")}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The kv projection (N tokens, 2D out, D in), q and the output projection
        on the latent (L, D, D), scores and weighted values (L x N x D each), the
        softmax, the MLP (L, H, D) and (L, D, H)."""
        n, d = x
        latent, hidden = a.latent, a.mlp
        costs = [Cost("linear", gemm=(n, 2 * d, d), tensors=(2 * d * d,)),
                 Cost("linear", gemm=(latent, d, d), tensors=(d * d,)),
                 Cost("linear", gemm=(latent, n, d), backward=True),
                 Cost("softmax", elements=sym.norm(a.heads * latent * n)),
                 Cost("linear", gemm=(latent, d, n)),
                 Cost("linear", gemm=(latent, d, d), tensors=(d * d,))]
        if hidden:
            costs += [Cost("linear", gemm=(latent, hidden, d), tensors=(d * hidden,)),
                      Cost("linear", gemm=(latent, d, hidden), tensors=(d * hidden,))]
        return tuple(costs)

    def saved(self, a, x, y):
        # as saved_tensors_hooks sees them: the input (for kv), k and v (2*N*D),
        # q and the heads' output (L*D each), that output copied to (L, D) for
        # the projection where L > 1 (the kernel's strides), the softmax
        # statistics (fp32); the MLP: its input (L*D), its hidden layer before
        # and after the GELU (2*L*H); qk_norm: the normalized k and q (N*D +
        # L*D) and the norms' mean and 1/std per head and token (fp32)
        n, d = x[0], x[-1]
        latent, hidden = a.latent, a.mlp or 0
        copied = 0 if latent == 1 else latent * d
        extra = ((sym.norm(2 * n * d + 2 * latent * d + copied), None),
                 (sym.norm(a.heads * latent), FP32))
        if hidden:
            extra += ((sym.norm(latent * d + 2 * latent * hidden), None),)
        if a.qk_norm:
            extra += ((sym.norm(n * d + latent * d), None),
                      (sym.norm(2 * a.heads * (latent + n)), FP32))
        return Saved(input=True, extra=extra)

    def build(self, a, x):
        from .attention_pool_torch import AttentionPool as Module
        return Module(x[1], a.heads, a.latent, a.bias, a.qk_norm, a.mlp, a.approximate, a.eps,
                      a.pool, a.dropout, a.norm)

    torch_modules = ("archcalc.layers.attention_pool_torch.AttentionPool",
                     "timm.layers.attention_pool.AttentionPoolLatent")

    def from_torch(self, call, m):
        from .from_torch import NoMapping, row
        from .tokens import _norm_eps
        if len(call.x) != 2:
            raise NoMapping(f"attention pooling on a {len(call.x)}-d input (it takes tokens)")
        if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v is not None]:
            raise NoMapping("attention pooling with a mask")
        d, heads = call.x[1], int(m.num_heads)
        if getattr(m, "pos_embed", None) is not None or m.q.in_features != d or \
                m.proj.out_features != d or heads * int(m.head_dim) != d:
            raise NoMapping("attention pooling with a position embedding or other widths than "
                            f"the tokens' {d}")
        q_eps = _norm_eps(m.q_norm, int(m.head_dim), "q_norm")
        mlp = getattr(m, "mlp", None)
        norm_eps = None
        found = {"heads": heads, "latent": int(m.latent_len), "bias": m.q.bias is not None,
                 "qk_norm": q_eps is not None, "pool": m.pool or "none",
                 "dropout": float(m.proj_drop.p)}
        if mlp is not None:
            norm_eps = _norm_eps(m.norm, d, "norm")
            # nn.GELU says its approximation; timm's GELUTanh (SigLIP's) is tanh's
            approximate = getattr(mlp.act, "approximate", None) or {
                "timm.layers.activations.GELUTanh": "tanh",
                "timm.layers.activations.GELU": "none"}.get(
                    f"{type(mlp.act).__module__}.{type(mlp.act).__name__}")
            if approximate is None or \
                    _norm_eps(mlp.norm, mlp.fc1.out_features, "MLP norm") is not None or \
                    mlp.fc1.bias is None or mlp.fc2.bias is None or mlp.drop1.p or mlp.drop2.p:
                raise NoMapping(f"attention pooling whose MLP is not LayerNorm, fc, GELU, fc "
                                f"({type(mlp.act).__name__})")
            found.update(mlp=int(mlp.fc1.out_features), approximate=approximate,
                         norm=norm_eps is not None)
        epsilons = {e for e in (q_eps, norm_eps if mlp is not None else None) if e is not None}
        if len(epsilons) > 1:
            raise NoMapping(f"attention pooling with norms of different eps {sorted(epsilons)}")
        found["eps"] = epsilons.pop() if epsilons else 1e-5
        defaults = {k: arg.default for k, arg in self.args.items()}
        return row("attention_pool", **{k: v for k, v in found.items()
                                         if k == "heads" or v != defaults[k]})


__all__ = ["AttentionPool"]
