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
    name = "class_token"
    flat = True
    torch_classes = ('ClassToken',)  # in tokens_torch.py
    aliases = ("cls_token",)
    summary = "a learned token put before the others: N x D -> (N + 1) x D; D params"
    flops_rule = "0 (a concatenation)"
    inputs = "tokens"
    args = {}

    def output_shape(self, a, x):
        return (sym.norm(x[0] + 1), x[1])

    def params(self, a, x):
        return x[1]

    def params_formula(self, a, x):
        return sym.plain(x[1])

    def cost(self, a, x, y):
        return (Cost("cat", elements=sym.prod(y), tensors=(x[1],)),)

    def build(self, a, x):
        from .tokens_torch import ClassToken as Module
        return Module(x[1])

    torch_modules = ("archcalc.layers.tokens_torch.ClassToken",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("class_token")


@register
class PositionEmbedding(Kind):
    name = "position_embedding"
    flat = True
    torch_classes = ('PositionEmbedding',)  # in tokens_torch.py
    aliases = ("pos_embedding",)
    summary = "a learned N x D embedding added to the tokens (N*D params)"
    flops_rule = "N*D (one addition per element)"
    inputs = "tokens"
    args = {}

    def params(self, a, x):
        return sym.prod(x)

    def params_formula(self, a, x):
        return f"{sym.plain(x[0])}*{sym.plain(x[1])}"

    def flops(self, a, x, y):
        return sym.prod(y)

    def cost(self, a, x, y):
        return (Cost("add", elements=sym.prod(x), tensors=(sym.prod(x),)),)

    def build(self, a, x):
        from .tokens_torch import PositionEmbedding as Module
        return Module(x[0], x[1])

    torch_modules = ("archcalc.layers.tokens_torch.PositionEmbedding",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("position_embedding")


@register
class SelfAttention(Kind):
    name = "attention"
    torch_classes = ('SelfAttention',)  # in tokens_torch.py
    aliases = ("self_attention", "mhsa")
    primary = "heads"
    weighted = True
    autocast = "low"
    summary = ("multi-head self-attention over N x D tokens: QKV and output projections "
               "(4*D^2 + 4*D params), softmax(Q K^T / sqrt(D/heads)) V per head")
    flops_rule = ("2 x MACs + 4 per attention score (scale, exp, sum, divide: "
                  "4*heads*N^2); MACs = 4*N*D^2 + 2*N^2*D")
    inputs = "tokens"
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "bias": Arg("bool", True),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
    }

    def output_shape(self, a, x):
        d = x[1]
        if isinstance(d, int) and isinstance(a.heads, int) and d % a.heads:
            raise SpecError(f"attention: the width {d} does not divide into {a.heads} heads. "
                            f"Received: heads={a.heads}")
        return x

    def params(self, a, x):
        d = x[1]
        return sym.norm(4 * d * d + (4 * d if a.bias else 0))

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        return f"(3*{d}*{d} + 3*{d}) + ({d}*{d} + {d})" if a.bias else f"4*{d}*{d}"

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(4 * n * d * d + 2 * n * n * d)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return f"4*{n}*{d}^2 + 2*{n}^2*{d}"

    def flops(self, a, x, y):
        n = x[0]
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * n * n)

    def macs_missed_by(self, a, x, y):
        n, d = x
        return {"fvcore": (sym.norm(2 * n * n * d),
                           "fvcore has no handler for aten::scaled_dot_product_attention "
                           "(the two attention matmuls, 2*N^2*D per layer)")}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The QKV projection (a GEMM: N tokens, 3D out, D in), the scores and
        the weighted sum (two GEMMs of N x N x D MACs, rated as such), the
        softmax over heads*N*N scores, the output projection (N, D, D)."""
        n, d = x
        bias = (3 * d,) if a.bias else ()
        return (Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d,) + bias),
                Cost("linear", gemm=(n, n, d), backward=True),
                Cost("softmax", elements=sym.norm(a.heads * n * n)),
                Cost("linear", gemm=(n, d, n)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d,) + ((d,) if a.bias else ())))

    def receptive_field(self, a, x, rf, jump):
        # every token sees every other: the window is the token grid, taken
        # as isqrt(N) tokens a side (the class token adds none)
        side = isqrt(x[0]) if isinstance(x[0], int) else x[0] ** 0.5
        return ((sym.norm(rf[0] + (side - 1) * jump[0]), sym.norm(rf[1] + (side - 1) * jump[1])),
                jump)

    def saved(self, a, x, y):
        # in a training step (nn.MultiheadAttention, need_weights=False): the
        # input (for the QKV projection), the QKV projection's output q, k, v
        # (3*N*D), the attention output before the output projection (N*D),
        # and the softmax statistics per head and query (fp32)
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        return Saved(input=True, extra=((sym.norm(3 * n * d), None), (sym.norm(n * d), None),
                                        (sym.norm(a.heads * n), FP32)))

    def build(self, a, x):
        from .tokens_torch import SelfAttention as Module
        return Module(x[1], a.heads, a.bias, a.dropout)

    # from_torch reads them (nn.MultiheadAttention is mapped in the importer)
    torch_modules = ("archcalc.layers.tokens_torch.SelfAttention",)

    def from_torch(self, call, m):
        from .from_torch import row
        return row("attention", heads=m.num_heads, bias=m.in_proj_bias is not None,
                   dropout=float(m.dropout))


@register
class TokenPool(Kind):
    name = "token_pool"
    torch_classes = ('TokenPool',)  # in tokens_torch.py
    primary = "mode"
    summary = "N x D tokens -> D: the first (class) token, or the mean of all"
    flops_rule = "first: 0 (a view); mean: N*D"
    inputs = "tokens"
    args = {"mode": Arg("str", "first", choices=("first", "mean"))}

    def output_shape(self, a, x):
        return (x[1],)

    def shares_storage(self, a):
        return a.mode == "first"   # x[:, 0] is a view

    def flops(self, a, x, y):
        return 0 if a.mode == "first" else sym.prod(x)

    def cost(self, a, x, y):
        if a.mode == "first":
            return (Cost("view"),)
        return (Cost("global_avgpool", elements=sym.prod(x)),)

    def build(self, a, x):
        from .tokens_torch import TokenPool as Module
        return Module(a.mode)

    torch_modules = ("archcalc.layers.tokens_torch.TokenPool",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("token_pool", mode=m.mode)


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
           "TokensToMap"]
