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


ACTIVATIONS = ("hardswish", "silu")     # timm's levit act_layer (nn.Hardswish, nn.SiLU)
TORCH_ACTIVATIONS = {"Hardswish": "hardswish", "SiLU": "silu"}


@register
class LevitAttention(Kind):
    name = "levit_attention"
    torch_classes = ("LevitAttention",)  # in levit_torch.py
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "chw"
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

    def output_shape(self, a, x):
        if a.stride == 1 and a.out is not None and a.out != x[0]:
            raise SpecError(f"levit_attention: at stride 1 the output keeps the input's "
                            f"{x[0]} channels. Received: out={a.out}")
        return (self._out(a, x), *self.queries(a, x))

    def params(self, a, x):
        c, h, kd, vd, o = x[0], a.heads, a.key_dim, a.val_dim, self._out(a, x)
        convs = c * h * (kd + vd) + c * h * kd + h * vd * o
        norms = 2 * (h * (2 * kd + vd) + o)
        return sym.norm(convs + norms + h * x[1] * x[2])

    def params_formula(self, a, x):
        c, o = sym.plain(x[0]), sym.plain(self._out(a, x))
        h, kd, vd = a.heads, a.key_dim, a.val_dim
        return (f"{c}*{h}*({2 * kd + vd}) + {h}*{vd}*{o} (convs) + 2*({h * (2 * kd + vd)} "
                f"+ {o}) (batch norms) + {h}*{sym.plain(x[1])}*{sym.plain(x[2])} "
                "(attention biases)")

    def buffers(self, a, x):
        return sym.norm(2 * (a.heads * (2 * a.key_dim + a.val_dim) + self._out(a, x)))

    def macs(self, a, x, y):
        c, hh, ww = x
        qh, qw = self.queries(a, x)
        p, q = hh * ww, qh * qw
        h, kd, vd, o = a.heads, a.key_dim, a.val_dim, self._out(a, x)
        return sym.norm(p * c * h * (kd + vd) + q * c * h * kd + h * q * p * (kd + vd)
                        + q * h * vd * o)

    def flops(self, a, x, y):
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
        c, hh, ww = x
        qh, qw = self.queries(a, x)
        p, q = hh * ww, qh * qw
        h, kd, vd, o = a.heads, a.key_dim, a.val_dim, self._out(a, x)
        return Saved(input=True, extra=((sym.norm(2 * (p * h * (kd + vd) + q * h * kd)), None),
                                        (sym.norm(2 * h * q * p), None),
                                        (sym.norm(2 * q * h * vd), None), (sym.norm(q * o), None)))

    def build(self, a, x):
        from .levit_torch import LevitAttention as Module
        return Module(x[0], self._out(a, x), a.heads, a.key_dim, a.val_dim, (x[1], x[2]),
                      a.stride, a.eps, lookup(a.activation).torch_name)

    torch_modules = ("archcalc.layers.levit_torch.LevitAttention",
                     "timm.models.levit.Attention", "timm.models.levit.AttentionDownsample")

    def from_torch(self, call, m):
        """archcalc's and timm's levit Attention and AttentionDownsample, conv form."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "LeViT attention")
        if not m.use_conv:
            raise NoMapping("LeViT attention on tokens (LinearNorm; its conv form maps)")
        c = call.x[0]
        if tuple(m.resolution) != tuple(call.x[1:]):
            raise NoMapping(f"LeViT attention of resolution {tuple(m.resolution)} on a "
                            f"{call.x[1]} x {call.x[2]} map")
        h, kd, vd = int(m.num_heads), int(m.key_dim), int(m.val_dim)
        if abs(float(m.scale) * kd ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"LeViT attention scaled by {m.scale}")
        stride = int(getattr(m, "stride", 1))
        if hasattr(m, "kv"):
            eps = _conv_norm(m.kv, c, h * (kd + vd))
            down = m.q.down
            if type(down).__name__ != "AvgPool2d" or down.kernel_size not in (1, (1, 1)) or \
                    down.stride not in (stride, (stride, stride)) or down.padding not in (0, (0, 0)):
                raise NoMapping("LeViT attention whose queries are pooled, not subsampled")
            eps = {eps, _conv_norm(m.q.ln, c, h * kd)}
        else:
            eps = {_conv_norm(m.qkv, c, h * (2 * kd + vd))}
        activation = TORCH_ACTIVATIONS.get(type(m.proj.act).__name__)
        if activation is None:
            raise NoMapping(f"LeViT attention with {type(m.proj.act).__name__}")
        out = m.proj.ln.linear.out_channels
        eps.add(_conv_norm(m.proj.ln, h * vd, out))
        if len(eps) > 1:
            raise NoMapping("LeViT attention with norms of several eps")
        found = {"heads": h, "key_dim": kd, "val_dim": vd, "out": out if out != c else None,
                 "stride": stride, "eps": eps.pop(), "activation": activation}
        return row("levit_attention", **{k: v for k, v in found.items()
                                         if k in ("heads", "key_dim", "val_dim") or
                                         v != self.args[k].default})


def _conv_norm(part, cin, cout) -> float:
    """timm's levit ConvNorm as the kind computes it (a 1x1 conv without a
    bias, a BatchNorm2d with weights and statistics): its eps."""
    from .from_torch import NoMapping
    conv, bn = part.linear, part.bn
    if type(conv).__name__ != "Conv2d" or (conv.in_channels, conv.out_channels,
                                           tuple(conv.kernel_size), tuple(conv.stride),
                                           tuple(conv.padding), conv.groups,
                                           conv.bias is None) != \
            (cin, cout, (1, 1), (1, 1), (0, 0), 1, True):
        raise NoMapping(f"LeViT attention whose convs are not 1x1 {cin} -> {cout} without a bias")
    if type(bn).__name__ != "BatchNorm2d" or not (bn.affine and bn.track_running_stats):
        raise NoMapping(f"LeViT attention with a {type(bn).__name__}")
    return float(bn.eps)
