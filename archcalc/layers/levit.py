"""LeViT's attention on a map (Graham et al. 2021), as timm's levit Attention
and AttentionDownsample in their conv form (the levit_conv models): per head,
keys of key_dim and values of val_dim from 1x1 convs + batch norm; queries
from the same conv (stride 1) or from the map subsampled by the stride (a
1 x 1 average pool at stride s, then a 1x1 conv + batch norm); scores
q k^T / sqrt(key_dim) plus a learned bias per head and |dy|, |dx| offset
(``attention_biases``, heads x H*W, gathered by a fixed index); softmax;
weighted values; Hardswish (or SiLU), then a 1x1 conv + batch norm to ``out``. One
row: each head's q, k and v are interleaved slices of one conv's output."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, lookup, register


FP32 = 4
ACTIVATIONS = ("hardswish", "silu")     # timm's levit act_layer (nn.Hardswish, nn.SiLU)
TORCH_ACTIVATIONS = {"Hardswish": "hardswish", "SiLU": "silu"}


@register
class LevitAttention(Kind):
    name = "levit_attention"
    torch_classes = ("LevitAttention",)  # in levit_torch.py
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "any"
    summary = ("LeViT's attention on a map: 1x1 conv + BN projections, a learned bias per "
               "head and offset on the scores, queries subsampled at stride s")
    flops_rule = ("2 x MACs + 5 per score (scale, bias, exp, sum, divide: 5*heads*Q*P) + 2 "
                  "per batch-normalized element + the activation's rule on Q*heads*val_dim; "
                  "MACs = P*C*heads*(key_dim + val_dim) + Q*C*heads*key_dim + "
                  "heads*Q*P*(key_dim + val_dim) + Q*heads*val_dim*out, P = H*W, Q the "
                  "queries' positions")
    args = {
        "heads": Arg("int", min=1, doc="attention heads"),
        "key_dim": Arg("int", min=1, doc="q's and k's width per head"),
        "val_dim": Arg("int", min=1, doc="v's width per head"),
        "out": Arg("int", None, min=1, doc="the output's channels (default C; stride 1: C)"),
        "stride": Arg("int", 1, min=1, doc="the queries' subsampling (1: AttentionDownsample "
                                           "not used)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norms"),
        "activation": Arg("str", "hardswish", choices=ACTIVATIONS,
                          doc="before the output conv (timm: act_layer)"),
        "grid": Arg("pair", None, min=1, numeric=True,
                    doc="the input is N x D tokens of this [h, w] grid (LeViT's linear form: "
                        "Linear + BatchNorm1d projections; the output is tokens too)"),
    }
    arg_examples = {"heads": (1, 2), "key_dim": (1, 4), "val_dim": (2, 4),
                    "out": (None, 3), "stride": (1, 2)}

    @staticmethod
    def _out(a, x):
        return a.out if a.out is not None else x[0]

    @staticmethod
    def queries(a, x):
        """The queries' map: ceil(H/s) x ceil(W/s)."""
        return tuple(sym.norm(-(-side // a.stride)) for side in x[1:])

    def check_input(self, x):
        if len(x) not in (2, 3):
            raise SpecError(f"levit_attention needs a C x H x W map, or N x D tokens with "
                            f"grid = [h, w]; its input is {' x '.join(map(str, x))}")

    def map_of(self, a, x):
        """The C x H x W map the tokens are (the linear form), else x."""
        if len(x) == 3:       # a map, or the tokens' map already
            return x
        if a.grid is None:
            raise SpecError("levit_attention on N x D tokens needs grid = [h, w] (the "
                            "tokens' grid)")
        h, w = a.grid
        if isinstance(x[0], int) and h * w != x[0]:
            raise SpecError(f"levit_attention: a {h} x {w} grid has {h * w} positions, but "
                            f"there are {x[0]} tokens. Received: grid={[h, w]}")
        return (x[1], h, w)

    def output_shape(self, a, x):
        if len(x) == 3 and a.grid is not None:
            raise SpecError("levit_attention: grid is for N x D tokens; its input is a map. "
                            f"Received: grid={list(a.grid)}")
        c, *q = self.map_output(a, self.map_of(a, x))
        return (sym.norm(q[0] * q[1]), c) if len(x) == 2 else (c, *q)

    def map_output(self, a, x):
        if a.stride == 1 and a.out is not None and a.out != x[0]:
            raise SpecError(f"levit_attention: at stride 1 the output keeps the input's "
                            f"{x[0]} channels. Received: out={a.out}")
        return (self._out(a, x), *self.queries(a, x))

    def params(self, a, x):
        x = self.map_of(a, x)
        c, h, kd, vd, o = x[0], a.heads, a.key_dim, a.val_dim, self._out(a, x)
        convs = c * h * (kd + vd) + c * h * kd + h * vd * o
        norms = 2 * (h * (2 * kd + vd) + o)
        return sym.norm(convs + norms + h * x[1] * x[2])

    def params_formula(self, a, x):
        x = self.map_of(a, x)
        c, o = sym.plain(x[0]), sym.plain(self._out(a, x))
        h, kd, vd = a.heads, a.key_dim, a.val_dim
        return (f"{c}*{h}*({2 * kd + vd}) + {h}*{vd}*{o} (convs) + 2*({h * (2 * kd + vd)} "
                f"+ {o}) (batch norms) + {h}*{sym.plain(x[1])}*{sym.plain(x[2])} "
                "(attention biases)")

    def buffers(self, a, x):
        x = self.map_of(a, x)
        return sym.norm(2 * (a.heads * (2 * a.key_dim + a.val_dim) + self._out(a, x)))

    def macs(self, a, x, y):
        x = self.map_of(a, x)
        c, hh, ww = x
        qh, qw = self.queries(a, x)
        p, q = hh * ww, qh * qw
        h, kd, vd, o = a.heads, a.key_dim, a.val_dim, self._out(a, x)
        return sym.norm(p * c * h * (kd + vd) + q * c * h * kd + h * q * p * (kd + vd)
                        + q * h * vd * o)

    def flops(self, a, x, y):
        x = self.map_of(a, x)
        c, hh, ww = x
        qh, qw = self.queries(a, x)
        p, q = hh * ww, qh * qw
        h, kd, vd, o = a.heads, a.key_dim, a.val_dim, self._out(a, x)
        norms = 2 * (p * h * (kd + vd) + q * h * kd + q * o)
        act = lookup(a.activation)
        shape = (h * vd, qh, qw)
        return sym.norm(2 * self.macs(a, x, y) + 5 * h * q * p + norms
                        + act.flops(act.read_args({}, {}), shape, shape))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The k/v (and q) 1x1 convs and norms, the scores, the softmax, the
        weighted values, Hardswish, the output conv and its norm."""
        x = self.map_of(a, x)
        c, hh, ww = x
        qh, qw = self.queries(a, x)
        p, q = sym.norm(hh * ww), sym.norm(qh * qw)
        h, kd, vd, o = a.heads, a.key_dim, a.val_dim, self._out(a, x)
        return (Cost("linear", gemm=(p, h * (kd + vd), c), tensors=(c * h * (kd + vd),)),
                Cost("linear", gemm=(q, h * kd, c), tensors=(c * h * kd,)),
                Cost("batch_norm", elements=sym.norm(p * h * (kd + vd) + q * h * kd),
                     tensors=(h * (2 * kd + vd),) * 2),
                Cost("linear", gemm=(h * q, p, kd), tensors=(h * p,)),
                Cost("softmax", elements=sym.norm(h * q * p)),
                Cost("linear", gemm=(h * q, vd, p)),
                *lookup(a.activation).cost(lookup(a.activation).read_args({}, {}),
                                             (h * vd, qh, qw), (h * vd, qh, qw)),
                Cost("linear", gemm=(q, o, h * vd), tensors=(h * vd * o,)),
                Cost("batch_norm", elements=sym.norm(q * o), tensors=(o, o)))

    def saved(self, a, x, y):
        # the input, the convs' and norms' outputs, the scores, the softmax's
        # output, the weighted values, Hardswish's input, the output conv's
        if len(x) != 3:
            return Saved(input=True)
        x = self.map_of(a, x)
        c, hh, ww = x
        qh, qw = self.queries(a, x)
        p, q = hh * ww, qh * qw
        h, kd, vd, o = a.heads, a.key_dim, a.val_dim, self._out(a, x)
        return Saved(input=True, extra=((sym.norm(2 * (p * h * (kd + vd) + q * h * kd)), None),
                                        (sym.norm(2 * h * q * p), None),
                                        (sym.norm(2 * q * h * vd), None), (sym.norm(q * o), None)))

    def build(self, a, x):
        from .levit_torch import LevitAttention as Module
        x = self.map_of(a, x)
        return Module(x[0], self._out(a, x), a.heads, a.key_dim, a.val_dim, (x[1], x[2]),
                      a.stride, a.eps, lookup(a.activation).torch_name, a.grid is not None)

    torch_modules = ("archcalc.layers.levit_torch.LevitAttention",
                     "timm.models.levit.Attention", "timm.models.levit.AttentionDownsample")

    def from_torch(self, call, m):
        """archcalc's and timm's levit Attention and AttentionDownsample, in the
        conv form (a map) or the linear form (tokens of its resolution's grid)."""
        from .from_torch import NoMapping, row
        linear = not m.use_conv
        if len(call.x) != (2 if linear else 3):
            raise NoMapping(f"LeViT attention ({'linear' if linear else 'conv'} form) on a "
                            f"{len(call.x)}-d input")
        r0, r1 = (int(v) for v in m.resolution)
        c = call.x[1] if linear else call.x[0]
        if (linear and r0 * r1 != call.x[0]) or (not linear and (r0, r1) != tuple(call.x[1:])):
            raise NoMapping(f"LeViT attention of resolution {(r0, r1)} on an input of "
                            f"{list(call.x)}")
        h, kd, vd = int(m.num_heads), int(m.key_dim), int(m.val_dim)
        if abs(float(m.scale) * kd ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"LeViT attention scaled by {m.scale}")
        stride = int(getattr(m, "stride", 1))
        if hasattr(m, "kv"):
            eps = _conv_norm(m.kv, c, h * (kd + vd), linear)
            down = m.q.down
            if linear:
                subsampled = type(down).__name__ == "Downsample" and down.pool is None and \
                    int(down.stride) == stride and tuple(down.resolution) == (r0, r1)
            else:
                subsampled = type(down).__name__ == "AvgPool2d" and \
                    down.kernel_size in (1, (1, 1)) and down.stride in (stride, (stride, stride)) \
                    and down.padding in (0, (0, 0))
            if not subsampled:
                raise NoMapping("LeViT attention whose queries are pooled, not subsampled")
            eps = {eps, _conv_norm(m.q.ln, c, h * kd, linear)}
        else:
            eps = {_conv_norm(m.qkv, c, h * (2 * kd + vd), linear)}
        activation = TORCH_ACTIVATIONS.get(type(m.proj.act).__name__)
        if activation is None:
            raise NoMapping(f"LeViT attention with {type(m.proj.act).__name__}")
        proj = m.proj.ln.linear
        out = proj.out_features if linear else proj.out_channels
        eps.add(_conv_norm(m.proj.ln, h * vd, out, linear))
        if len(eps) > 1:
            raise NoMapping("LeViT attention with norms of several eps")
        found = {"heads": h, "key_dim": kd, "val_dim": vd, "out": out if out != c else None,
                 "stride": stride, "eps": eps.pop(), "activation": activation,
                 "grid": [r0, r1] if linear else None}
        return row("levit_attention", **{k: v for k, v in found.items()
                                         if k in ("heads", "key_dim", "val_dim") or
                                         v != self.args[k].default})


def _conv_norm(part, cin, cout, linear=False) -> float:
    """timm's levit ConvNorm (a 1x1 conv without a bias, a BatchNorm2d) or
    LinearNorm (a Linear without a bias, a BatchNorm1d over the tokens) as
    the kind computes it, with weights and statistics: its eps."""
    from .from_torch import NoMapping
    conv, bn = part.linear, part.bn
    if linear:
        if type(conv).__name__ != "Linear" or \
                (conv.in_features, conv.out_features, conv.bias is None) != (cin, cout, True):
            raise NoMapping(f"LeViT attention whose linears are not {cin} -> {cout} without "
                            "a bias")
    elif type(conv).__name__ != "Conv2d" or (conv.in_channels, conv.out_channels,
                                             tuple(conv.kernel_size), tuple(conv.stride),
                                             tuple(conv.padding), conv.groups,
                                             conv.bias is None) != \
            (cin, cout, (1, 1), (1, 1), (0, 0), 1, True):
        raise NoMapping(f"LeViT attention whose convs are not 1x1 {cin} -> {cout} without a bias")
    norm = "BatchNorm1d" if linear else "BatchNorm2d"
    if type(bn).__name__ != norm or not (bn.affine and bn.track_running_stats):
        raise NoMapping(f"LeViT attention with a {type(bn).__name__}")
    return float(bn.eps)


@register
class LinearNorm(Kind):
    """LeViT's LinearNorm (timm's, the linear form): a Linear without a bias on
    N x D tokens, then a batch norm over the ``out`` channels with the tokens
    of every sample as its batch (BatchNorm1d on the tokens flattened), the
    statistics per channel."""
    name = "linear_norm"
    torch_classes = ("LinearNorm",)  # in levit_torch.py
    primary = "out"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("LeViT's LinearNorm on N x D tokens: a Linear D -> out without a bias, a "
               "batch norm over the out channels (the tokens as the batch)")
    flops_rule = "2 x MACs + 2 per output element (the norm at inference); MACs = N*D*out"
    args = {"out": Arg("int", min=1, numeric=True, doc="output width"),
            "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norm")}

    def output_shape(self, a, x):
        return (x[0], a.out)

    def params(self, a, x):
        return sym.norm(x[1] * a.out + 2 * a.out)

    def params_formula(self, a, x):
        return f"{sym.plain(x[1])}*{a.out} + 2*{a.out}"

    def buffers(self, a, x):
        return 2 * a.out

    def macs(self, a, x, y):
        return sym.norm(x[0] * x[1] * a.out)

    def flops(self, a, x, y):
        return sym.norm(2 * self.macs(a, x, y) + 2 * sym.prod(y))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(self.flops(a, x, y) * (2 if needs_input_grad else 1))

    def cost(self, a, x, y):
        return (Cost("linear", gemm=(x[0], a.out, x[1]), tensors=(x[1] * a.out,)),
                Cost("batch_norm", elements=sym.prod(y), tensors=(a.out, a.out)))

    def saved(self, a, x, y):
        # the Linear's input, the norm's input (the Linear's output), the batch
        # mean and inverse std (fp32)
        return Saved(input=True, extra=((sym.prod(y) if len(y) == 2 else 0, None),),
                     per_batch=((2 * a.out, FP32),))

    def build(self, a, x):
        from .levit_torch import LinearNorm as Module
        return Module(x[1], a.out, a.eps)

    torch_modules = ("archcalc.layers.levit_torch.LinearNorm", "timm.models.levit.LinearNorm")

    def from_torch(self, call, m):
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"LinearNorm on a {len(call.x)}-d input (it takes tokens)")
        lin, bn = m.linear, m.bn
        if lin.bias is not None or lin.in_features != call.x[1] or \
                type(bn).__name__ != "BatchNorm1d" or not (bn.affine and bn.track_running_stats):
            raise NoMapping("LinearNorm whose Linear has a bias or whose norm is not an "
                            "affine BatchNorm1d with statistics")
        return row("linear_norm", out=int(lin.out_features),
                   **({"eps": float(bn.eps)} if float(bn.eps) != 1e-5 else {}))
