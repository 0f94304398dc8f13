"""SwiftFormer's efficient additive attention (Shaker et al. 2023), as timm's
swiftformer EfficientAdditiveAttention, on a C x H x W map read as its N =
H*W tokens: q and k from two Linears C -> D (D = token_dim * num_heads, with
biases), each L2-normalized per token; one score per token, q w_g /
sqrt(token_dim) (w_g a learned D-vector), L2-normalized over the tokens; the
global query, the scores' weighted sum of q over the tokens (one D-vector);
proj(global query * k) + q (a Linear D -> D with a bias); a Linear D ->
token_dim (``final``); the tokens read back as a token_dim x H x W map.

Why one row: the global query is a sum over the tokens that multiplies
every token's key, and q is added back after proj, which a chain of rows
cannot say.

MACs (FlopCounterMode's): 2*N*C*D (q, k) + N*D (the scores) + N*D^2 (proj)
+ N*D*token_dim (final)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4


@register
class AdditiveAttention(Kind):
    name = "additive_attention"
    torch_classes = ("AdditiveAttention",)  # in swiftformer_torch.py
    primary = "token_dim"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("SwiftFormer's efficient additive attention on a map's tokens: L2-normalized "
               "q and k, one learned score per token, a global query times each key, "
               "projected, plus q; a Linear to token_dim")
    flops_rule = ("2 x MACs + the Linears' biases (N*(3*D + token_dim)) + 3 per normalized "
                  "element and 2 per normalized vector (q, k per token: 6*N*D + 4*N; the "
                  "scores over the tokens: 3*N + 2) + N (the scale) + 2*N*D (the weighted "
                  "sum) + N*D (times k) + N*D (plus q); MACs = 2*N*C*D + N*D + N*D^2 + "
                  "N*D*token_dim, D = token_dim*num_heads, N = H*W")
    args = {
        "token_dim": Arg("int", None, min=1, numeric=True,
                         doc="the output's channels and the scale's width (default C)"),
        "num_heads": Arg("int", 1, min=1, numeric=True,
                         doc="q's and k's width is token_dim * num_heads"),
    }
    arg_examples = {"token_dim": (None, 3), "num_heads": (1, 2)}

    @staticmethod
    def dims(a, x):
        """(N, C, D, T): tokens, input width, q's and k's width, output width."""
        t = a.token_dim if a.token_dim is not None else x[0]
        return sym.norm(x[1] * x[2]), x[0], sym.norm(t * a.num_heads), t

    def output_shape(self, a, x):
        if len(x) != 3:
            raise SpecError(f"additive_attention needs a C x H x W map; its input is "
                            f"{' x '.join(map(str, x))}")
        return (self.dims(a, x)[3], x[1], x[2])

    def params(self, a, x):
        _, c, d, t = self.dims(a, x)
        return sym.norm(2 * (c * d + d) + d + d * d + d + d * t + t)

    def params_formula(self, a, x):
        _, c, d, t = (sym.plain(v) for v in self.dims(a, x))
        return (f"2*({c}*{d} + {d}) (to_query, to_key) + {d} (w_g) + ({d}*{d} + {d}) (proj) "
                f"+ ({d}*{t} + {t}) (final)")

    def macs(self, a, x, y):
        n, c, d, t = self.dims(a, x)
        return sym.norm(2 * n * c * d + n * d + n * d * d + n * d * t)

    def macs_formula(self, a, x, y):
        n, c, d, t = (sym.plain(v) for v in self.dims(a, x))
        return f"2*{n}*{c}*{d} + {n}*{d} + {n}*{d}*{d} + {n}*{d}*{t}"

    def flops(self, a, x, y):
        n, c, d, t = self.dims(a, x)
        return sym.norm(2 * self.macs(a, x, y) + n * (3 * d + t) + 6 * n * d + 4 * n + 3 * n + 2
                        + n + 2 * n * d + n * d + n * d)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        return (x[1], x[2]), (1, 1)     # the global query sums every position

    def cost(self, a, x, y):
        """q's and k's GEMMs, their normalization, the scores' GEMV and
        normalization over the tokens, the weighted sum and the product with
        k, proj, the add of q, final, the map's copy back."""
        n, c, d, t = self.dims(a, x)
        return (Cost("linear", gemm=(n, 2 * d, c), tensors=(c * d, d, c * d, d)),
                Cost("layer_norm", elements=sym.norm(2 * n * d)),
                Cost("linear", gemm=(n, 1, d), tensors=(d,)),
                Cost("mul", elements=n),
                Cost("layer_norm", elements=n),
                Cost("mul", elements=sym.norm(n * d)),
                Cost("add", elements=sym.norm(n * d)),
                Cost("mul", elements=sym.norm(n * d)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)),
                Cost("add", elements=sym.norm(n * d)),
                Cost("linear", gemm=(n, t, d), tensors=(d * t, t)),
                Cost("copy", elements=sym.norm(n * t)))

    def saved(self, a, x, y):
        # the input; q and k before and after their normalization; the scores
        # before and after theirs; the global query; its product with k (proj's
        # input); proj's output plus q (final's input); the norms (fp32)
        n = sym.prod(x[1:])
        d = sym.norm((a.token_dim if a.token_dim is not None else x[0]) * a.num_heads)
        return Saved(input=True, extra=((sym.norm(4 * n * d), None), (sym.norm(2 * n), None),
                                        (d, None), (sym.norm(2 * n * d), None),
                                        (sym.norm(2 * n + 1), FP32)))

    def build(self, a, x):
        from .swiftformer_torch import AdditiveAttention as Module
        _, c, _, t = self.dims(a, x)
        return Module(c, t, a.num_heads)

    torch_modules = ("archcalc.layers.swiftformer_torch.AdditiveAttention",
                     "timm.models.swiftformer.EfficientAdditiveAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's (to_query, to_key, w_g, proj, final)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "EfficientAdditiveAttention")
        c = call.x[0]
        d, t = int(m.to_query.out_features), int(m.final.out_features)
        if d % t:
            raise NoMapping(f"an EfficientAdditiveAttention of width {d} and {t} outputs")
        for fc, cin, cout in ((m.to_query, c, d), (m.to_key, c, d), (m.proj, d, d),
                              (m.final, d, t)):
            if type(fc).__name__ != "Linear" or (fc.in_features, fc.out_features) != \
                    (cin, cout) or fc.bias is None:
                raise NoMapping(f"an EfficientAdditiveAttention whose Linears are not "
                                f"{c} -> {d} (q, k), {d} -> {d}, {d} -> {t}, with biases")
        if tuple(m.w_g.shape) != (d, 1):
            raise NoMapping(f"an EfficientAdditiveAttention with w_g of {tuple(m.w_g.shape)}")
        if abs(float(m.scale_factor) * t ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"an EfficientAdditiveAttention scaled by {m.scale_factor}")
        found = {"token_dim": t if t != c else None, "num_heads": d // t}
        return row("additive_attention", **{k: v for k, v in found.items()
                                            if v != self.args[k].default})


__all__ = ["AdditiveAttention"]
