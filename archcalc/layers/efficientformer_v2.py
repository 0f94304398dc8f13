"""EfficientFormer-V2's attentions on a map (Li et al. 2023), as timm's
efficientformer_v2 Attention2d and Attention2dDownsample. Each "conv + BN"
below is timm's ConvNorm: a conv with a bias, then a batch norm.

- ``efficientformer_v2_attention`` (Attention2d): at stride s > 1 the map
  first through a depthwise 3x3 conv + BN at stride s (``stride_conv``); on
  the resulting h x w map (N = h*w positions), q and k (num_heads*key_dim
  channels) and v (num_heads*val_dim) from 1x1 conv + BN; v also through a
  depthwise 3x3 conv + BN (``v_local``); per head scores q k^T / sqrt(key_dim)
  plus LeViT's learned bias per head and |dy|, |dx| offset
  (``attention_biases``, num_heads x N, gathered by a fixed index), mixed
  across the heads by a 1x1 conv (``talking_head1``), softmax, mixed again
  (``talking_head2``); the weighted values plus v_local; at stride s a
  bilinear upsample by s; the activation; a 1x1 conv + BN back to C.
- ``efficientformer_v2_attention_downsample`` (Attention2dDownsample): the
  queries on the map halved (ceil(H/2) x ceil(W/2), Q positions): a
  depthwise 3x3 conv at stride 2 plus the map subsampled (a 1x1 average pool
  at stride 2), then a 1x1 conv + BN (``q.local``, ``q.pool``, ``q.proj``);
  keys and values on all P = H*W positions, v_local a depthwise 3x3 conv + BN
  at stride 2; scores plus the bias of each query's |dy|, |dx| offset to each
  key (queries at the even positions); softmax (no talking heads); the
  activation; a 1x1 conv + BN to ``out``.

Why one row each: the heads' scores are mixed across the heads and biased by
offset, v_local is added to the attention's output, which a chain of rows
cannot say. Figures are the inner layers' (``composite.py``) plus the
attention's products.

MACs (FlopCounterMode's): the convs' (as conv rows count them), the talking
heads 2*num_heads^2*N^2, and num_heads*Q*P*(key_dim + val_dim) for the scores
and the weighted values (Q = P = N in Attention2d)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, lookup, register
from .composite import Composite, part

ACTIVATIONS = {"GELU": "gelu", "ReLU": "relu", "SiLU": "silu", "Hardswish": "hardswish"}


def _conv(x, out, k=1, s=1, groups=1):
    """timm's ConvNorm's conv: a bias, padding k//2 (timm's '' padding for odd k)."""
    return part("conv", x, out=out, kernel=(k, k), stride=(s, s), padding=(k // 2, k // 2),
                groups=groups, bias=True)


def _conv_norm(x, out, eps, k=1, s=1, groups=1):
    conv = _conv(x, out, k, s, groups)
    return [conv, part("batch_norm", conv.y, eps=eps)]


class _V2Attention(Composite, Kind):
    """What the two kinds share: the arguments, the products, the cost."""
    primary = "num_heads"
    inputs = "chw"
    common_args = {
        "num_heads": Arg("int", 8, min=1, numeric=True, doc="attention heads"),
        "val_dim": Arg("int", None, min=1, numeric=True,
                       doc="v's channels per head (default 4*key_dim: timm's attn_ratio 4)"),
        "activation": Arg("str", "gelu", choices=tuple(ACTIVATIONS.values()),
                          doc="before the output conv (timm: act_layer)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norms"),
    }

    @staticmethod
    def val_dim(a):
        return a.val_dim if a.val_dim is not None else 4 * a.key_dim

    def act(self, a, x):
        return part(a.activation, x)

    def scores(self, a, x):
        """(Q, P): the queries' and the keys' positions."""
        raise NotImplementedError  # pragma: no cover - each kind overrides

    def products(self, a, x):
        q, p = self.scores(a, x)
        return sym.norm(a.num_heads * q * p * (a.key_dim + self.val_dim(a)))

    def macs(self, a, x, y):
        return sym.norm(super().macs(a, x, y) + self.products(a, x))

    def flops(self, a, x, y):
        return sym.norm(super().flops(a, x, y) + 2 * self.products(a, x))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        # each product's two input gradients: twice its forward
        return sym.norm(super().backward_flops(a, x, y, needs_input_grad)
                        + 4 * self.products(a, x))

    def between(self, a, x):
        # the scores' scale and bias, the weighted values plus v_local
        q, p = self.scores(a, x)
        h = a.num_heads
        return (Cost("mul", elements=sym.norm(h * q * p)),
                Cost("add", elements=sym.norm(h * q * p)),
                Cost("add", elements=sym.norm(h * q * self.val_dim(a))))

    def cost(self, a, x, y):
        """The parts' primitives, the scores' and the weighted values'
        products, the elementwise work between."""
        q, p = self.scores(a, x)
        h, kd, vd = a.num_heads, a.key_dim, self.val_dim(a)
        return (*super().cost(a, x, y),
                Cost("linear", gemm=(h * q, p, kd), tensors=(h * p,)),
                Cost("linear", gemm=(h * q, vd, p)))

    def kept_between(self, a, x):
        # the products' operands: q, k, v (batch-norm outputs, not kept by the
        # norms) and the weights (the last mix's output)
        q, p = self.scores(a, x)
        h, kd, vd = a.num_heads, a.key_dim, self.val_dim(a)
        return ((sym.norm(h * (q * kd + p * (kd + vd))), None), (sym.norm(h * q * p), None))

    def window(self, a, x):
        return (x[1], x[2]), (1, 1)     # every query attends to the whole map

    def params(self, a, x):
        # the parts' and the attention biases, num_heads x P
        return sym.norm(super().params(a, x) + a.num_heads * self.scores(a, x)[1])

    def params_formula(self, a, x):
        return (f"{sym.plain(super().params(a, x))} (the convs and batch norms) + "
                f"{a.num_heads}*{sym.plain(self.scores(a, x)[1])} (attention biases)")

    def buffers(self, a, x):
        # the batch norms' statistics and the bias index, Q x P (int64)
        q, p = self.scores(a, x)
        return sym.norm(super().buffers(a, x) + q * p)


@register
class EfficientFormerV2Attention(_V2Attention):
    name = "efficientformer_v2_attention"
    torch_classes = ("EfficientFormerV2Attention",)  # in efficientformer_v2_torch.py
    summary = ("EfficientFormer-V2's attention on a map: 1x1 conv + BN q, k, v, a learned "
               "bias per head and offset, talking heads, a local depthwise v added; at "
               "stride s on the map subsampled by a depthwise conv, then upsampled")
    flops_rule = ("the parts' FLOPs (the convs, batch norms, talking heads, softmax, "
                  "upsample, activation) + 2*num_heads*N^2*(key_dim + val_dim) (the "
                  "products) + 2*num_heads*N^2 (scale, bias) + num_heads*N*val_dim (v_local's "
                  "add); MACs = the convs' + 2*num_heads^2*N^2 + num_heads*N^2*(key_dim + "
                  "val_dim), N the attended map's positions")
    args = {**_V2Attention.common_args,
            "key_dim": Arg("int", 32, min=1, numeric=True, doc="q's and k's channels per head"),
            "stride": Arg("int", 1, min=1, numeric=True,
                          doc="s > 1: attend on the map subsampled by a depthwise 3x3 conv "
                              "at stride s, upsampled by s after (bilinear)")}
    arg_examples = {"num_heads": (1, 2), "key_dim": (1, 3), "val_dim": (None, 2),
                    "stride": (1, 2)}

    def attended(self, a, x):
        """The map the attention runs on: x, or the stride conv's output."""
        if a.stride == 1:
            return tuple(x)
        return _conv(x, x[0], 3, a.stride, x[0]).y

    def scores(self, a, x):
        n = sym.prod(self.attended(a, x)[1:])
        return n, n

    def parts(self, a, x):
        c = x[0]
        h, kd, vd, e = a.num_heads, a.key_dim, self.val_dim(a), a.eps
        xs = self.attended(a, x)
        n = sym.prod(xs[1:])
        parts = _conv_norm(x, c, e, 3, a.stride, c) if a.stride > 1 else []
        v = _conv_norm(xs, h * vd, e)
        parts += [*_conv_norm(xs, h * kd, e), *_conv_norm(xs, h * kd, e), *v,
                  *_conv_norm(v[1].y, h * vd, e, 3, 1, h * vd)]
        mix = _conv((h, n, n), h)
        parts += [mix, part("softmax", (sym.norm(h * n), n)), mix]
        out = (h * vd, *xs[1:])
        if a.stride > 1:
            up = part("upsample", out, scale=(a.stride, a.stride), mode="bilinear")
            parts.append(up)
            out = up.y
        return [*parts, self.act(a, out), *_conv_norm(out, c, e)]

    def output_shape(self, a, x):
        y = self.parts(a, x)[-1].y
        if all(isinstance(v, int) for v in (*x, *y)) and tuple(y) != tuple(x):
            raise SpecError(f"efficientformer_v2_attention: at stride {a.stride} the map "
                            f"{x[1]} x {x[2]} comes back as {y[1]} x {y[2]} (timm adds it to "
                            "its input: the stride must divide the map)")
        return tuple(y)

    def build(self, a, x):
        from .efficientformer_v2_torch import EfficientFormerV2Attention as Module
        return Module(x[0], a.key_dim, a.num_heads, self.val_dim(a), tuple(x[1:]),
                      a.stride, lookup(a.activation).torch_name, a.eps)

    torch_modules = ("archcalc.layers.efficientformer_v2_torch.EfficientFormerV2Attention",
                     "timm.models.efficientformer_v2.Attention2d")

    def from_torch(self, call, m):
        """archcalc's and timm's Attention2d (stride_conv, q, k, v, v_local,
        talking_head1/2, upsample, act, proj, attention_biases)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "Attention2d")
        c = call.x[0]
        h, kd, vd = _dims(m, "Attention2d")
        eps = set()
        stride = 1
        if m.stride_conv is not None:
            stride = int(getattr(getattr(m.stride_conv, "conv", None), "stride", (0,))[0])
            eps.add(_check_conv_norm(m.stride_conv, c, c, 3, stride, c))
            up = m.upsample
            if type(up).__name__ != "Upsample" or up.mode != "bilinear" or up.size is not None \
                    or float(up.scale_factor) != stride or up.align_corners:
                raise NoMapping(f"an Attention2d whose upsample is not bilinear by {stride}")
        elif m.upsample is not None:
            raise NoMapping("an Attention2d that upsamples without a stride conv")
        a = self.read_args({"num_heads": h, "key_dim": kd, "val_dim": vd, "stride": stride}, {})
        xs = self.attended(a, call.x)
        if tuple(int(r) for r in m.resolution) != tuple(xs[1:]):
            raise NoMapping(f"an Attention2d of resolution {tuple(m.resolution)} on a "
                            f"{xs[1]} x {xs[2]} map")
        for conv, cin, cout, k, g in ((m.q, c, h * kd, 1, 1), (m.k, c, h * kd, 1, 1),
                                      (m.v, c, h * vd, 1, 1), (m.v_local, h * vd, h * vd, 3,
                                                               h * vd), (m.proj, h * vd, c, 1, 1)):
            eps.add(_check_conv_norm(conv, cin, cout, k, 1, g))
        for mix in (m.talking_head1, m.talking_head2):
            _check_conv(mix, h, h, 1, 1, 1)
        from .efficientformer_v2_torch import EfficientFormerV2Attention as Module
        _check_biases(m, h, xs[1] * xs[2], lambda: Module.bias_index(xs[1:]))
        return row(self.name, **_found(self, h, kd, vd, stride, _activation(m.act), eps))


@register
class EfficientFormerV2AttentionDownsample(_V2Attention):
    name = "efficientformer_v2_attention_downsample"
    torch_classes = ("EfficientFormerV2AttentionDownsample",)  # in efficientformer_v2_torch.py
    summary = ("EfficientFormer-V2's downsampling attention: queries on the map halved (a "
               "depthwise stride-2 conv plus the map subsampled, 1x1 conv + BN), keys and "
               "values on the whole map, a learned bias per head and offset, a local "
               "depthwise stride-2 v added")
    flops_rule = ("the parts' FLOPs (the convs, batch norms, subsampling, softmax, "
                  "activation) + 2*num_heads*Q*P*(key_dim + val_dim) (the products) + "
                  "2*num_heads*Q*P (scale, bias) + Q*C (the queries' add) + "
                  "num_heads*Q*val_dim (v_local's add); MACs = the convs' + "
                  "num_heads*Q*P*(key_dim + val_dim), P = H*W, Q = ceil(H/2)*ceil(W/2)")
    args = {**_V2Attention.common_args,
            "key_dim": Arg("int", 16, min=1, numeric=True, doc="q's and k's channels per head"),
            "out": Arg("int", None, min=1, numeric=True, doc="the output's channels (default C)")}
    arg_examples = {"num_heads": (1, 2), "key_dim": (1, 3), "val_dim": (None, 2),
                    "out": (None, 3)}

    def halved(self, x):
        return _conv(x, x[0], 3, 2, x[0]).y

    def scores(self, a, x):
        return sym.prod(self.halved(x)[1:]), sym.prod(x[1:])

    def parts(self, a, x):
        c = x[0]
        h, kd, vd, e = a.num_heads, a.key_dim, self.val_dim(a), a.eps
        half = self.halved(x)
        q, p = self.scores(a, x)
        v = _conv_norm(x, h * vd, e)
        out = (h * vd, *half[1:])
        return [_conv(x, c, 3, 2, c),
                part("avgpool", x, kernel=(1, 1), stride=(2, 2), padding=(0, 0)),
                *_conv_norm(half, h * kd, e), *_conv_norm(x, h * kd, e), *v,
                *_conv_norm(v[1].y, h * vd, e, 3, 2, h * vd),
                part("softmax", (sym.norm(h * q), p)), self.act(a, out),
                *_conv_norm(out, a.out if a.out is not None else c, e)]

    def between(self, a, x):
        q, _ = self.scores(a, x)
        return (*super().between(a, x), Cost("add", elements=sym.norm(q * x[0])))

    def output_shape(self, a, x):
        return tuple(self.parts(a, x)[-1].y)

    def build(self, a, x):
        from .efficientformer_v2_torch import EfficientFormerV2AttentionDownsample as Module
        return Module(x[0], a.key_dim, a.num_heads, self.val_dim(a), tuple(x[1:]),
                      a.out if a.out is not None else x[0], lookup(a.activation).torch_name,
                      a.eps)

    torch_modules = (
        "archcalc.layers.efficientformer_v2_torch.EfficientFormerV2AttentionDownsample",
        "timm.models.efficientformer_v2.Attention2dDownsample")

    def from_torch(self, call, m):
        """archcalc's and timm's Attention2dDownsample (q.local, q.pool,
        q.proj, k, v, v_local, act, proj, attention_biases)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "Attention2dDownsample")
        c, hh, ww = call.x
        h, kd, vd = _dims(m, "Attention2dDownsample")
        if tuple(int(r) for r in m.resolution) != (hh, ww):
            raise NoMapping(f"an Attention2dDownsample of resolution {tuple(m.resolution)} on "
                            f"a {hh} x {ww} map")
        out = int(m.proj.conv.out_channels)
        _check_conv(m.q.local, c, c, 3, 2, c)
        pool = m.q.pool
        if type(pool).__name__ != "AvgPool2d" or (_two(pool.kernel_size), _two(pool.stride),
                                                  _two(pool.padding), pool.ceil_mode) != \
                ((1, 1), (2, 2), (0, 0), False):
            raise NoMapping("an Attention2dDownsample whose queries are not subsampled by a "
                            "1x1 average pool at stride 2")
        eps = {_check_conv_norm(part_, cin, cout, k, s, g) for part_, cin, cout, k, s, g in (
            (m.q.proj, c, h * kd, 1, 1, 1), (m.k, c, h * kd, 1, 1, 1),
            (m.v, c, h * vd, 1, 1, 1), (m.v_local, h * vd, h * vd, 3, 2, h * vd),
            (m.proj, h * vd, out, 1, 1, 1))}
        from .efficientformer_v2_torch import EfficientFormerV2AttentionDownsample as Module
        _check_biases(m, h, hh * ww, lambda: Module.bias_index((hh, ww)))
        found = _found(self, h, kd, vd, None, _activation(m.act), eps)
        if out != c:
            found["out"] = out
        return row(self.name, **found)


def _two(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _dims(m, what):
    """(num_heads, key_dim, val_dim), the scale checked."""
    from .from_torch import NoMapping
    h, kd, vd = int(m.num_heads), int(m.key_dim), int(m.d)
    if int(m.dh) != h * vd:
        raise NoMapping(f"an {what} whose values are {m.dh} wide for {h} heads of {vd}")
    if abs(float(m.scale) * kd ** 0.5 - 1) > 1e-9:
        raise NoMapping(f"an {what} scaled by {m.scale}")
    return h, kd, vd


def _found(kind, h, kd, vd, stride, activation, eps):
    from .from_torch import NoMapping
    if len(eps) != 1:
        raise NoMapping(f"an EfficientFormer-V2 attention whose norms differ in eps "
                        f"({sorted(eps)})")
    found = {"num_heads": h, "key_dim": kd, "val_dim": vd if vd != 4 * kd else None,
             "stride": stride, "activation": activation, "eps": eps.pop()}
    return {k: v for k, v in found.items()
            if k in kind.args and (k == "num_heads" or v != kind.args[k].default)}


def _activation(act) -> str:
    from .from_torch import NoMapping
    name = ACTIVATIONS.get(type(act).__name__)
    if name is None or getattr(act, "approximate", "none") != "none":
        raise NoMapping(f"an EfficientFormer-V2 attention with {type(act).__name__}")
    return name


def _check_conv(conv, cin, cout, k, s, groups):
    """A k x k conv at stride s, padding k//2, with a bias."""
    from .from_torch import NoMapping
    if type(conv).__name__ != "Conv2d" or (
            conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
            tuple(conv.padding), tuple(conv.dilation), conv.groups, conv.bias is not None,
            conv.padding_mode) != (cin, cout, (k, k), (s, s), (k // 2, k // 2), (1, 1), groups,
                                   True, "zeros"):
        raise NoMapping(f"an EfficientFormer-V2 attention whose conv is not {k}x{k} {cin} -> "
                        f"{cout} at stride {s} in {groups} groups with a bias ({conv})")


def _check_conv_norm(conv_norm, cin, cout, k, s, groups) -> float:
    """timm's ConvNorm as the kind computes it: the conv, a batch norm; its eps."""
    from .from_torch import NoMapping
    _check_conv(getattr(conv_norm, "conv", None), cin, cout, k, s, groups)
    bn = getattr(conv_norm, "bn", None)
    if type(bn).__name__ != "BatchNorm2d" or not (bn.affine and bn.track_running_stats) or \
            bn.momentum is None:
        raise NoMapping(f"an EfficientFormer-V2 attention whose norm is not a batch norm "
                        f"({type(bn).__name__})")
    return float(bn.eps)


def _check_biases(m, h, p, index):
    """attention_biases num_heads x P; the index, where it holds values (not on
    the meta device), the offsets the kind's module computes."""
    from .from_torch import NoMapping
    import torch
    if tuple(m.attention_biases.shape) != (h, p):
        raise NoMapping(f"an EfficientFormer-V2 attention with biases of "
                        f"{tuple(m.attention_biases.shape)} for {h} heads and {p} positions")
    idxs = m.attention_bias_idxs
    if idxs.device.type != "meta" and not torch.equal(idxs.cpu(), index()):
        raise NoMapping("an EfficientFormer-V2 attention whose bias index is not the "
                        "|dy|, |dx| offsets of its grid")
