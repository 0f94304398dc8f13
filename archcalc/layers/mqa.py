"""Multi-query attention on a map (Shazeer 2019; MobileNetV4's Mobile MQA, Qin
et al. 2024), as timm's MultiQueryAttention2d without query strides: heads
of queries (a 1x1 conv C -> heads*key_dim), one key and one value head
shared by all (1x1 convs to key_dim and value_dim), each optionally from
the map shrunk first by a depthwise k x k conv at stride s and a batch norm
(M = h'*w' positions), softmax(q k^T / sqrt(key_dim)) v over them, the heads
concatenated and a 1x1 conv to ``out``. One row: the heads share one key
and value tensor, which a chain of rows cannot say."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register


@register
class MultiQueryAttention(Kind):
    name = "mq_attention"
    torch_classes = ("MultiQueryAttention",)  # in mqa_torch.py
    aliases = ("multi_query_attention",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("multi-query attention on a map (MobileNetV4's): query heads sharing one "
               "key and one value head, keys and values from the map shrunk by a strided "
               "depthwise conv")
    flops_rule = ("2 x MACs + 4 per score (4*heads*P*M) + 2 per batch-normalized element "
                  "(2*2*M*C where s > 1) + the biases; MACs = P*C*heads*key_dim + "
                  "2*M*C*k^2 (s > 1) + M*C*(key_dim + value_dim) + heads*P*M*(key_dim + "
                  "value_dim) + P*heads*value_dim*out, P = H*W")
    args = {
        "heads": Arg("int", min=1, doc="query heads"),
        "key_dim": Arg("int", min=1, doc="the width of q (per head) and of the one key"),
        "value_dim": Arg("int", min=1, doc="the width of the one value head"),
        "out": Arg("int", None, min=1, doc="the output's channels (default C)"),
        "kv_stride": Arg("int", 1, min=1, doc="s: the keys' and values' depthwise conv's "
                                              "stride (1: no conv)"),
        "kernel": Arg("int", 3, min=1, doc="k: that conv's kernel (padding (k-1)//2)"),
        "bias": Arg("bool", False, doc="the four 1x1 convs' biases"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norms (s > 1)"),
    }
    arg_examples = {"heads": (1, 2), "key_dim": (1, 4), "value_dim": (2, 4),
                    "out": (None, 3), "kv_stride": (1, 2), "kernel": (1, 3)}

    @staticmethod
    def _out(a, x):
        return a.out if a.out is not None else x[0]

    def reduced(self, a, x):
        """h' x w': the keys' and values' map."""
        if a.kv_stride == 1:
            return x[1], x[2]
        pad = (a.kernel - 1) // 2
        return tuple(sym.norm((side + 2 * pad - a.kernel) // a.kv_stride + 1) for side in x[1:])

    def output_shape(self, a, x):
        if any(isinstance(v, int) and v < 1 for v in self.reduced(a, x)):
            raise SpecError(f"mq_attention: a {x[1]} x {x[2]} map is too small for a "
                            f"{a.kernel} x {a.kernel} conv at stride {a.kv_stride}")
        return (self._out(a, x), x[1], x[2])

    def params(self, a, x):
        c, o = x[0], self._out(a, x)
        kd, vd, h = a.key_dim, a.value_dim, a.heads
        down = 2 * (c * a.kernel * a.kernel + 2 * c) if a.kv_stride > 1 else 0
        bias = h * kd + kd + vd + o if a.bias else 0
        return sym.norm(c * h * kd + c * (kd + vd) + h * vd * o + down + bias)

    def params_formula(self, a, x):
        c, o = sym.plain(x[0]), sym.plain(self._out(a, x))
        kd, vd, h = a.key_dim, a.value_dim, a.heads
        down = f" + 2*({c}*{a.kernel}*{a.kernel} + 2*{c}) (down convs, norms)" \
            if a.kv_stride > 1 else ""
        bias = f" + {h * kd + kd + vd} + {o} (biases)" if a.bias else ""
        return f"{c}*{h}*{kd} + {c}*({kd} + {vd}) + {h}*{vd}*{o}{down}{bias}"

    def buffers(self, a, x):
        return 4 * x[0] if a.kv_stride > 1 else 0

    def macs(self, a, x, y):
        c, hh, ww = x
        o, (rh, rw) = self._out(a, x), self.reduced(a, x)
        p, m = hh * ww, rh * rw
        kd, vd, h = a.key_dim, a.value_dim, a.heads
        down = 2 * m * c * a.kernel * a.kernel if a.kv_stride > 1 else 0
        return sym.norm(p * c * h * kd + down + m * c * (kd + vd) + h * p * m * (kd + vd)
                        + p * h * vd * o)

    def flops(self, a, x, y):
        c, hh, ww = x
        rh, rw = self.reduced(a, x)
        p, m = hh * ww, rh * rw
        norm = 4 * m * c if a.kv_stride > 1 else 0
        bias = p * (a.heads * a.key_dim + self._out(a, x)) + m * (a.key_dim + a.value_dim) \
            if a.bias else 0
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * p * m + norm + bias)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """q's 1x1 conv, the two down convs and norms, k's and v's 1x1 convs,
        the scores, the softmax, the weighted values, the output conv."""
        c, hh, ww = x
        o, (rh, rw) = self._out(a, x), self.reduced(a, x)
        p, m = sym.norm(hh * ww), sym.norm(rh * rw)
        kd, vd, h, k, s = a.key_dim, a.value_dim, a.heads, a.kernel, a.kv_stride
        down = (Cost("conv", conv=(k, k, s, s, c, c, rh, rw, c), tensors=(c * k * k,),
                     scale=2),
                Cost("batch_norm", elements=sym.norm(2 * m * c), tensors=(c, c, c, c))) \
            if s > 1 else ()
        return (Cost("linear", gemm=(p, h * kd, c), tensors=(c * h * kd,)), *down,
                Cost("linear", gemm=(m, kd + vd, c), tensors=(c * kd, c * vd)),
                Cost("linear", gemm=(h * p, m, kd)),
                Cost("softmax", elements=sym.norm(h * p * m)),
                Cost("linear", gemm=(h * p, vd, m)),
                Cost("linear", gemm=(p, o, h * vd), tensors=(h * vd * o,)))

    def saved(self, a, x, y):
        # the input, the down convs' and norms' outputs, q, k, v (contiguous
        # copies), the heads' output and its copy, the softmax statistics
        c = x[0]
        if len(x) != 3:
            return Saved(input=True)
        rh, rw = self.reduced(a, x)
        p, m = x[1] * x[2], rh * rw
        kd, vd, h = a.key_dim, a.value_dim, a.heads
        down = ((sym.norm(4 * m * c), None),) if a.kv_stride > 1 else ()
        return Saved(input=True, extra=(*down, (sym.norm(p * h * kd), None),
                                        (sym.norm(m * (kd + vd)), None),
                                        (sym.norm(2 * p * h * vd), None), (sym.norm(h * p), 4)))

    def build(self, a, x):
        from .mqa_torch import MultiQueryAttention as Module
        return Module(x[0], self._out(a, x), a.heads, a.key_dim, a.value_dim, a.kv_stride,
                      a.kernel, a.bias, a.eps)

    torch_modules = ("archcalc.layers.mqa_torch.MultiQueryAttention",
                     "timm.layers.attention2d.MultiQueryAttention2d")

    def from_torch(self, call, m):
        """archcalc's and timm's MultiQueryAttention2d (query, key, value,
        output Sequentials), without query strides or a mask."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "MultiQueryAttention2d")
        if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v is not None]:
            raise NoMapping("MultiQueryAttention2d with an attention mask")
        if getattr(m, "has_query_strides", False) or getattr(m, "einsum", False):
            raise NoMapping("MultiQueryAttention2d with query strides (an avg pool, a norm "
                            "and a bilinear upsample) or its einsum form")
        c = call.x[0]
        h, kd, vd = int(m.num_heads), int(m.key_dim), int(m.value_dim)
        if abs(float(m.scale) * kd ** 0.5 - 1) > 1e-9 or m.attn_drop.p or m.output.drop.p:
            raise NoMapping("MultiQueryAttention2d scaled otherwise or with dropout")
        bias = m.query.proj.bias is not None
        out = m.output.proj.out_channels
        for proj, cin, cout in ((m.query.proj, c, h * kd), (m.key.proj, c, kd),
                                (m.value.proj, c, vd), (m.output.proj, h * vd, out)):
            if type(proj).__name__ != "Conv2d" or (proj.in_channels, proj.out_channels,
                                                   tuple(proj.kernel_size), proj.groups,
                                                   tuple(proj.padding), proj.bias is not None) \
                    != (cin, cout, (1, 1), 1, (0, 0), bias):
                raise NoMapping("MultiQueryAttention2d whose projections are not 1x1 convs "
                                "alike")
        s = int(m.kv_stride)
        kernel, eps = 3, 1e-5
        if s > 1:
            kernel, eps = _check_down(m.key, c, s), float(m.key.norm.eps)
            if _check_down(m.value, c, s) != kernel or float(m.value.norm.eps) != eps:
                raise NoMapping("MultiQueryAttention2d whose key and value shrink differently")
        found = {"heads": h, "key_dim": kd, "value_dim": vd, "out": out if out != c else None,
                 "kv_stride": s, "kernel": kernel, "bias": bias, "eps": eps}
        return row("mq_attention", **{k: v for k, v in found.items()
                                      if k in ("heads", "key_dim", "value_dim") or
                                      v != self.args[k].default})


def _check_down(part, c, s) -> int:
    """The kernel of a key's or value's down conv: depthwise k x k at stride s,
    padding (k-1)//2, no bias, then a BatchNorm2d with weights and statistics."""
    from .from_torch import NoMapping
    conv, norm = part.down_conv, part.norm
    k = conv.kernel_size[0]
    if type(conv).__name__ != "Conv2d" or (tuple(conv.kernel_size), tuple(conv.stride),
                                           tuple(conv.padding), tuple(conv.dilation),
                                           conv.groups, conv.in_channels, conv.out_channels,
                                           conv.bias is None) != \
            ((k, k), (s, s), ((k - 1) // 2,) * 2, (1, 1), c, c, c, True):
        raise NoMapping("MultiQueryAttention2d whose down conv is not a depthwise k x k conv "
                        "at its stride, padding (k-1)//2")
    if type(norm).__name__ != "BatchNorm2d" or not (norm.affine and norm.track_running_stats):
        raise NoMapping(f"MultiQueryAttention2d with a {type(norm).__name__}")
    return k
