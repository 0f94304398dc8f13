"""Lambda layer (Bello 2021, LambdaNetworks), as timm's LambdaLayer in its
local form: a 1x1 conv to queries (heads x K), keys (K) and values (V), batch
norms on q and v, keys softmaxed over the positions; a content lambda (k v^T,
K x V) and a position lambda per position (a conv of r x r over the map, K
filters, on each value channel), both applied to each head's queries; the
heads' outputs (heads x V = C) as a map, an average pool of 2 at stride 2.
One row: q, k and v are three slices of one conv's output, which a chain of
rows cannot say."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register


@register
class LambdaLayer(Kind):
    name = "lambda_layer"
    torch_classes = ("LambdaLayer",)  # in lambda_layer_torch.py
    aliases = ("lambda",)
    primary = "heads"
    weighted = True
    summary = ("LambdaNetworks' local lambda layer on a map: 1x1 qkv conv, content lambda "
               "k v^T, position lambdas by an r x r conv, applied to each head's queries")
    flops_rule = ("2 x MACs + the batch norms' 2 per q and v element + the keys' softmax (4 "
                  "per element) + 1 per output (content + position) + the pool's 1 per value "
                  "at stride 2; MACs = HW*C*(heads*K + K + V) + HW*K*V*(1 + 2*heads + r^2)")
    inputs = "chw"
    args = {
        "heads": Arg("int", 4, min=1, doc="query heads; C must divide by it (V = C/heads)"),
        "head_dim": Arg("int", 16, min=1, doc="K: the queries' and keys' width per head"),
        "r": Arg("int", 9, min=1, doc="the position lambdas' neighbourhood (odd)"),
        "stride": Arg("int", 1, min=1, doc="2: an average pool of 2 after"),
        "bias": Arg("bool", False, doc="the qkv conv's bias"),
    }

    @staticmethod
    def widths(a, x):
        """(Q, K, V): the queries' channels (heads*K), the keys', the values'."""
        c = x[0]
        if c % a.heads:
            raise SpecError(f"lambda_layer: C must divide by heads (its output is heads x V "
                            f"= C). Received: C={c}, heads={a.heads}")
        return a.heads * a.head_dim, a.head_dim, c // a.heads

    def output_shape(self, a, x):
        self.widths(a, x)
        if a.stride not in (1, 2):
            raise SpecError(f"lambda_layer: stride must be 1 or 2. Received: stride={a.stride}")
        if a.r % 2 == 0:
            raise SpecError(f"lambda_layer: r must be odd (its padding r//2 keeps the map). "
                            f"Received: r={a.r}")
        c, h, w = x
        if a.stride == 2:
            return (c, sym.floordiv(h, 2), sym.floordiv(w, 2))
        return x

    def params(self, a, x):
        q, k, v = self.widths(a, x)
        c = x[0]
        qkv = c * (q + k + v) + ((q + k + v) if a.bias else 0)
        return sym.norm(qkv + 2 * q + 2 * v + k * a.r * a.r + k)

    def buffers(self, a, x):
        q, _, v = self.widths(a, x)
        return sym.norm(2 * (q + v))   # the two batch norms' running statistics

    def macs(self, a, x, y):
        q, k, v = self.widths(a, x)
        c, h, w = x
        n = h * w
        return sym.norm(n * c * (q + k + v) + n * k * v * (1 + 2 * a.heads + a.r * a.r))

    def flops(self, a, x, y):
        q, k, v = self.widths(a, x)
        c, h, w = x
        n = h * w
        pool = n * c if a.stride == 2 else 0
        return sym.norm(2 * self.macs(a, x, y) + 2 * n * (q + v) + 4 * n * k + n * c + pool)

    def cost(self, a, x, y):
        """The qkv GEMM, the lambdas' small GEMMs, the position conv."""
        q, k, v = self.widths(a, x)
        c, h, w = x
        n = h * w
        return (Cost("linear", gemm=(n, q + k + v, c), tensors=(c * (q + k + v),)),
                Cost("linear", gemm=(k, v, n)),
                Cost("linear", gemm=(n * a.heads, v, k)),
                Cost("conv", conv=(1, h, w * v, 1, k, a.r, a.r, 1, 1), tensors=(k * a.r * a.r,)),
                Cost("linear", gemm=(n * a.heads, v, k)))

    def saved(self, a, x, y):
        # measured with saved_tensors_hooks: x; the norms' inputs (q, v) and
        # statistics; the keys' softmax; the position conv's input (v); the
        # content lambda and the position lambdas broadcast to every head
        # (heads x HW x K x V, the largest); q twice, reshaped for each product
        q, k, v = self.widths(a, x)
        n = x[1] * x[2]
        pool = ((n * x[0], None),) if a.stride == 2 else ()
        return Saved(input=True, extra=((n * (3 * q + 2 * v + k), None), (2 * (q + v), None),
                                        (a.heads * k * v, None), (a.heads * n * k * v, None),
                                        *pool))

    def build(self, a, x):
        from .lambda_layer_torch import LambdaLayer as Module
        return Module(x[0], a.heads, a.head_dim, a.r, a.stride, a.bias)

    torch_modules = ("archcalc.layers.lambda_layer_torch.LambdaLayer",
                     "timm.layers.lambda_layer.LambdaLayer")

    def from_torch(self, call, m):
        """archcalc's and timm's local form (conv_lambda); the relative
        position embedding form (pos_emb, "not fully verified" in timm) has no kind."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "LambdaLayer")
        if m.conv_lambda is None:
            raise NoMapping("a LambdaLayer with a relative position embedding (no r)")
        r = m.conv_lambda.kernel_size[0]
        if m.conv_lambda.kernel_size != (r, r, 1) or m.conv_lambda.bias is None:
            raise NoMapping(f"a LambdaLayer whose position conv is {m.conv_lambda.kernel_size}")
        pooled = type(m.pool).__name__ == "AvgPool2d"
        args = {"heads": m.num_heads, "head_dim": m.dim_qk, "r": r}
        if pooled:
            args["stride"] = 2
        if m.qkv.bias is not None:
            args["bias"] = True
        return row("lambda_layer", **args)
