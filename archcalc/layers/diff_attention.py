"""Differential attention (Ye et al. 2024, DIFF Transformer; timm's
DiffAttention): each head's q and k are split in two halves of head_dim =
D / heads / 2, giving two softmax attention maps over the same values of
2*head_dim; the output is map1 - lambda * map2 applied to v, with
lambda = exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init
(or exp(lambda_a) - exp(lambda_b) + lambda_init, ``dual_lambda``), then an
RMS norm per head (eps 1e-5), times 1 - lambda_init, an optional RMS norm
over D, the output projection.

MACs (FlopCounterMode's, as timm computes it: two F.scaled_dot_product_attention
calls of q1, k1 and q2, k2 with v of 2*head_dim): qkv 3*N*D^2, each call's
scores N^2*D/2 and weighted values N^2*D (3*N^2*D for both), projection
N*D^2. The lambdas (vectors of head_dim) are not counted."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4


@register
class DiffAttention(Kind):
    name = "diff_attention"
    torch_classes = ("DiffAttention",)  # in diff_attention_torch.py
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("differential attention: two softmax maps per head from q, k halves, "
               "their difference (map1 - lambda * map2) on the values, a per-head RMS norm")
    flops_rule = ("2 x MACs + 4 per attention score (2 maps: 8*heads*N^2) + the difference "
                  "(2*N*D) + the per-head RMS norm and 1 - lambda_init scale (5*N*D) + the "
                  "biases (3*N*D with bias, N*D with proj_bias) + the RMS norm over D "
                  "(4*N*D, with norm); MACs = 3*N*D^2 + 3*N^2*D + N*D^2")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by 2*heads"),
        "lambda_init": Arg("float", 0.8, min=0.0, max=1.0,
                           doc="lambda's constant (timm: 0.8 - 0.6*exp(-0.3*depth))"),
        "dual_lambda": Arg("bool", False, doc="lambda from two scalars (else four vectors "
                                              "of head_dim)"),
        "bias": Arg("bool", False, doc="the qkv projection's bias"),
        "proj_bias": Arg("bool", True, doc="the output projection's bias"),
        "norm": Arg("bool", False, doc="an RMS norm over D before the projection "
                                       "(timm: scale_norm)"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="of that norm"),
    }
    arg_examples = {"heads": (1, 2)}

    @staticmethod
    def head_dim(a, x):
        return sym.exact_div(x[1], 2 * a.heads)

    def output_shape(self, a, x):
        d = x[1]
        if isinstance(d, int) and d % (2 * a.heads):
            raise SpecError(f"diff_attention: the width {d} does not divide into 2 x {a.heads} "
                            f"half-heads. Received: heads={a.heads}")
        return x

    def params(self, a, x):
        d = x[1]
        hd = self.head_dim(a, x)
        lambdas = 2 if a.dual_lambda else 4 * hd
        return sym.norm(3 * d * d + (3 * d if a.bias else 0) + d * d + (d if a.proj_bias else 0)
                        + lambdas + 2 * hd + (d if a.norm else 0))

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        hd = sym.plain(self.head_dim(a, x))
        return (f"3*{d}*{d}" + (f" + 3*{d}" if a.bias else "") + f" + {d}*{d}" +
                (f" + {d}" if a.proj_bias else "") +
                (" + 2 (lambdas)" if a.dual_lambda else f" + 4*{hd} (lambdas)") +
                f" + 2*{hd} (sub_norm)" + (f" + {d} (norm)" if a.norm else ""))

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(3 * n * d * d + 3 * n * n * d + n * d * d)

    def flops(self, a, x, y):
        n, d = x
        return sym.norm(2 * self.macs(a, x, y) + 8 * a.heads * n * n + 2 * n * d + 5 * n * d
                        + (3 * n * d if a.bias else 0) + (n * d if a.proj_bias else 0)
                        + (4 * n * d if a.norm else 0))

    def macs_missed_by(self, a, x, y):
        n, d = x
        return {"fvcore": (sym.norm(3 * n * n * d),
                           "fvcore has no handler for aten::scaled_dot_product_attention "
                           "(the two maps' matmuls, 3*N^2*D)")}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """qkv, two attentions (scores N x N x D/2, values N x N x D each),
        their difference, the per-head norm, the projection."""
        n, d = x
        half = sym.exact_div(d, 2)
        costs = [Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d,))]
        for _ in range(2):
            costs += [Cost("linear", gemm=(n, n, half), backward=True),
                      Cost("softmax", elements=sym.norm(a.heads * n * n)),
                      Cost("linear", gemm=(n, d, n))]
        costs += [Cost("add", elements=sym.norm(n * d)),   # the difference
                  Cost("layer_norm", elements=sym.norm(n * d), tensors=(2 * self.head_dim(a, x),)),
                  Cost("linear", gemm=(n, d, d), tensors=(d * d,))]
        return tuple(costs)

    def saved(self, a, x, y):
        # the input, q, k, v, the two attentions' outputs and softmax
        # statistics (fp32), the difference (the norm's input) and the norm's
        # statistics, the projection's input
        n, d = x[0], x[-1]   # any shape: a merge asks with a dummy
        return Saved(input=True, extra=((sym.norm(3 * n * d + 2 * n * d + n * d + n * d), None),
                                        (sym.norm(2 * a.heads * n + a.heads * n), FP32)))

    def build(self, a, x):
        from .diff_attention_torch import DiffAttention as Module
        return Module(x[1], a.heads, a.lambda_init, a.dual_lambda, a.bias, a.proj_bias, a.norm,
                      a.eps)

    torch_modules = ("archcalc.layers.diff_attention_torch.DiffAttention",
                     "timm.layers.diff_attention.DiffAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's DiffAttention on tokens, with no mask, no q or
        k norm, in timm's fused form (two scaled_dot_product_attention calls,
        what FlopCounterMode counts)."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2 or [v for v in list(call.args[1:]) + list(call.kwargs.values())
                                if v not in (None, False)]:
            raise NoMapping("DiffAttention with a mask, or not on N x D tokens")
        d, heads = call.x[1], int(m.num_heads)
        if type(m).__module__.startswith("archcalc."):    # archcalc's own: its arguments
            names = ("dim", "heads", "lambda_init", "dual_lambda", "bias", "proj_bias", "norm",
                     "eps")
            found = dict(zip(names, m.init_args))
            if found.pop("dim") != d:
                raise NoMapping(f"DiffAttention of another width than the tokens' {d}")
            defaults = {k: arg.default for k, arg in self.args.items()}
            return row("diff_attention", **{k: v for k, v in found.items()
                                             if k in ("heads", "lambda_init") or
                                             v != defaults[k]})
        if not getattr(m, "fused_attn", True):
            raise NoMapping("DiffAttention in its unfused form (one softmax over both halves: "
                            "other MACs)")
        if any(type(n).__name__ != "Identity" for n in (m.q_norm, m.k_norm)):
            raise NoMapping("DiffAttention with q and k norms")
        if m.qkv.in_features != d or m.qkv.out_features != 3 * d or \
                int(m.head_dim) * 2 * heads != d or \
                abs(float(m.scale) * int(m.head_dim) ** 0.5 - 1) > 1e-9 or \
                float(m.sub_norm.eps) != 1e-5:
            raise NoMapping(f"DiffAttention of other widths than the tokens' {d}, or scaled "
                            "otherwise")
        norm = type(m.norm).__name__ != "Identity"
        if norm and (type(m.norm).__name__ != "RmsNorm" or m.norm.weight is None):
            raise NoMapping(f"DiffAttention with a {type(m.norm).__name__} scale norm")
        found = {"heads": heads, "lambda_init": float(m.lambda_init),
                 "dual_lambda": bool(m.dual_lambda), "bias": m.qkv.bias is not None,
                 "proj_bias": m.proj.bias is not None, "norm": norm,
                 "eps": float(m.norm.eps) if norm else 1e-6}
        if float(m.attn_drop.p) or float(m.proj_drop.p):
            raise NoMapping("DiffAttention with dropout")
        defaults = {k: arg.default for k, arg in self.args.items()}
        return row("diff_attention", **{k: v for k, v in found.items()
                                         if k in ("heads", "lambda_init") or v != defaults[k]})


__all__ = ["DiffAttention"]
