"""EfficientViT's attentions. MIT's (Cai et al. 2023) multi-scale ReLU linear
attention, as timm's efficientvit_mit LiteMLA: on a C x H x W map, a 1x1 conv
to 3T channels (T = heads*dim; per head, its q, k and v of dim channels in
turn), beside it one aggregated copy per scale k (a depthwise k x k conv,
then a 1x1 conv grouped per head's q, k, v: 3*heads groups), so S*heads
heads in all (S = 1 + the scales; timm: scales=(5,), S = 2); per head
ReLU(q) (ReLU(k)^T [v 1]) over the H*W positions, its last column (the
ReLU(q) . sum ReLU(k) normalizer, + eps) dividing the others; then a 1x1
conv S*T -> out and a batch norm. Linear in H*W: no H*W x H*W scores.

MACs (FlopCounterMode's: convs and matrix products): H*W*(C*3T + sum over
the scales of 3T*(k^2 + dim) + 2*S*T*(dim + 1) + S*T*out)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4


class Kernels(Arg):
    """A list of odd kernel sizes (same padding), one per aggregation scale or
    per head; ``min`` is the shortest list allowed."""

    def read(self, kind, name, value, env):
        received = f"Received: {name}={value!r}"
        if not isinstance(value, list) or len(value) < (self.min or 0) or \
                any(type(v) is not int or v < 1 or v % 2 == 0 for v in value):
            raise SpecError(f"{kind}: {name} takes a list of odd kernel sizes, such as "
                            f"[5] or [7, 5, 3]. {received}")
        return tuple(value)


@register
class LiteMLA(Kind):
    name = "lite_mla"
    torch_classes = ("LiteMLA",)  # in efficientvit_torch.py
    aliases = ("multiscale_linear_attention",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("EfficientViT (MIT)'s multi-scale ReLU linear attention: q, k, v by a 1x1 "
               "conv and by a depthwise + grouped conv beside it, ReLU(q)(ReLU(k)^T v) "
               "normalized, a 1x1 conv + BN")
    flops_rule = ("2 x MACs + the biases + 1 per ReLU'd q and k element (2*S*T*H*W) + 1 "
                  "per normalized value and 1 per normalizer (S*heads*H*W*(dim + 1)) + 2 per "
                  "batch-normalized element; MACs = H*W*(C*3T + sum over the scales k of "
                  "3T*(k^2 + dim) + 2*S*T*(dim + 1) + S*T*out), T = heads*dim, S = 1 + "
                  "the scales")
    args = {
        "heads": Arg("int", min=1, doc="heads of the 1x1 conv's q, k, v (each aggregated "
                                       "copy brings as many more)"),
        "dim": Arg("int", min=1, doc="a head's q, k and v width (timm: dim, head_dim)"),
        "out": Arg("int", None, min=1, doc="the output's channels (default C)"),
        "scales": Kernels("table", [5], min=0, doc="per aggregated copy, its depthwise conv's "
                                                   "odd kernel (padding k//2; timm: scales)"),
        "bias": Arg("bool", False, doc="biases on the q, k, v convs (timm: use_bias[0])"),
        "proj_bias": Arg("bool", False, doc="a bias on the output conv (timm: use_bias[1])"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="added to the normalizer"),
        "norm_eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the output's batch norm"),
    }
    arg_examples = {"heads": (1, 2), "dim": (1, 3), "out": (None, 4),
                    "scales": ([], [1], [3], [3, 1])}

    @staticmethod
    def _out(a, x):
        return a.out if a.out is not None else x[0]

    def output_shape(self, a, x):
        return (self._out(a, x), x[1], x[2])

    def _parts(self, a, x):
        """(C, T, S copies of q, k, v (1 + the scales), positions, out)."""
        return (x[0], a.heads * a.dim, 1 + len(a.scales), sym.norm(x[1] * x[2]),
                self._out(a, x))

    def params(self, a, x):
        c, t, s, _, o = self._parts(a, x)
        b = 1 if a.bias else 0
        aggregation = sum(3 * t * k * k + 3 * t * a.dim + 6 * t * b for k in a.scales)
        return sym.norm(c * 3 * t + 3 * t * b + aggregation + s * t * o
                        + (o if a.proj_bias else 0) + 2 * o)

    def params_formula(self, a, x):
        c, t, s, _, o = self._parts(a, x)
        c, o = sym.plain(c), sym.plain(o)
        b = f" + {3 * t}" if a.bias else ""
        scales = "".join(f" + ({3 * t}*{k}*{k} + {3 * t}*{a.dim}"
                         + (f" + 2*{3 * t}" if a.bias else "") + ")" for k in a.scales)
        proj = f"{s * t}*{o}" + (f" + {o}" if a.proj_bias else "")
        return f"{c}*{3 * t}{b}{scales} (q, k, v) + {proj} + 2*{o} (output conv, batch norm)"

    def buffers(self, a, x):
        return 2 * self._out(a, x)

    def window(self, a, x):
        return (x[1], x[2]), (1, 1)     # every position attends to the whole map

    def macs(self, a, x, y):
        c, t, s, p, o = self._parts(a, x)
        d = a.dim
        aggregation = sum(3 * t * k * k + 3 * t * d for k in a.scales)
        return sym.norm(p * (c * 3 * t + aggregation + 2 * s * t * (d + 1) + s * t * o))

    def flops(self, a, x, y):
        _, t, s, p, o = self._parts(a, x)
        biases = p * (3 * t * (2 * s - 1) if a.bias else 0) + p * (o if a.proj_bias else 0)
        return sym.norm(2 * self.macs(a, x, y) + biases + 2 * s * t * p
                        + s * a.heads * p * (a.dim + 1) + 2 * p * o)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The q, k, v conv, each scale's two convs, the cat, the ReLUs, v
        padded, the two products, the division, the layout copy, the output
        conv and its norm."""
        c, t, s, p, o = self._parts(a, x)
        h, w = x[1], x[2]
        d, b, n = a.dim, 1 if a.bias else 0, s * a.heads
        out = [Cost("conv", conv=(1, 1, 1, 1, c, 3 * t, h, w, 1),
                    tensors=(c * 3 * t,) + (3 * t,) * b)]
        for k in a.scales:
            out += [Cost("conv", conv=(k, k, 1, 1, 3 * t, 3 * t, h, w, 3 * t),
                         tensors=(3 * t * k * k,) + (3 * t,) * b),
                    Cost("conv", conv=(1, 1, 1, 1, 3 * t, 3 * t, h, w, 3 * a.heads),
                         tensors=(3 * t * d,) + (3 * t,) * b)]
        return (*out,
                Cost("cat", elements=sym.norm(3 * s * t * p)),
                Cost("relu", elements=sym.norm(2 * s * t * p)),
                Cost("copy", elements=sym.norm(n * p * (d + 1))),
                Cost("linear", gemm=(n * d, d + 1, p)),
                Cost("linear", gemm=(sym.norm(n * p), d + 1, d)),
                Cost("mul", elements=sym.norm(n * p * (d + 1))),
                Cost("copy", elements=sym.norm(s * t * p)),
                Cost("conv", conv=(1, 1, 1, 1, s * t, o, h, w, 1),
                     tensors=(s * t * o,) + ((o,) if a.proj_bias else ())),
                Cost("batch_norm", elements=sym.norm(o * p), tensors=(o, o)))

    def saved(self, a, x, y):
        # the input; the q, k, v conv's output and each depthwise conv's (the
        # next convs' inputs); ReLU(q), ReLU(k) (their outputs, the products'
        # inputs); v padded; ReLU(k)^T v; the products' output and the
        # normalizer (the division's inputs); the output conv's input and
        # output (the norm's input)
        _, t, s, p, o = self._parts(a, x)
        d, n = a.dim, s * a.heads
        return Saved(input=True, extra=((sym.norm(3 * s * t * p), None),
                                        (sym.norm(2 * s * t * p), None),
                                        (sym.norm(n * p * (d + 1)), None),
                                        (n * d * (d + 1), None),
                                        (sym.norm(n * p * (d + 2)), None),
                                        (sym.norm(s * t * p + o * p), None)),
                     per_batch=((2 * o, FP32),))

    def build(self, a, x):
        from .efficientvit_torch import LiteMLA as Module
        return Module(x[0], self._out(a, x), a.heads, a.dim, a.scales, a.bias, a.proj_bias,
                      a.eps, a.norm_eps)

    torch_modules = ("archcalc.layers.efficientvit_torch.LiteMLA",
                     "timm.models.efficientvit_mit.LiteMLA")

    def from_torch(self, call, m):
        """archcalc's and timm's LiteMLA: q, k, v by
        a 1x1 conv without norm or activation, a ReLU kernel, the output conv
        with a batch norm and no activation."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "LiteMLA")
        c = call.x[0]
        qkv, proj = _conv_part(m.qkv, "qkv"), _conv_part(m.proj, "proj")
        dim, total = int(m.dim), qkv.out_channels // 3
        heads = total // dim
        if qkv.in_channels != c or qkv.out_channels != 3 * heads * dim or \
                tuple(qkv.kernel_size) != (1, 1) or qkv.groups != 1:
            raise NoMapping(f"LiteMLA whose qkv conv is not 1x1 {c} -> 3*heads*{dim}")
        bias = qkv.bias is not None
        scales = [_aggregation(seq, 3 * total, 3 * heads, bias) for seq in m.aggreg]
        kfunc = getattr(m, "kernel_func", None)
        if kfunc is not None and type(kfunc).__name__ != "ReLU":
            raise NoMapping(f"LiteMLA with a {type(kfunc).__name__} kernel (the kind's is ReLU)")
        norm = getattr(m.proj, "norm", None)
        if type(norm).__name__ != "BatchNorm2d" or not (norm.affine and norm.track_running_stats):
            raise NoMapping(f"LiteMLA whose output norm is a {type(norm).__name__}")
        if proj.in_channels != (1 + len(scales)) * total or tuple(proj.kernel_size) != (1, 1) or proj.groups != 1:
            raise NoMapping(f"LiteMLA whose output conv is not 1x1 from {(1 + len(scales)) * total} "
                            "channels")
        found = {"heads": heads, "dim": dim,
                 "out": proj.out_channels if proj.out_channels != c else None,
                 "scales": scales, "bias": bias, "proj_bias": proj.bias is not None,
                 "eps": float(m.eps), "norm_eps": float(norm.eps)}
        return row("lite_mla", **{k: v for k, v in found.items()
                                  if k in ("heads", "dim") or v != self.args[k].default})


def _conv_part(part, what):
    """The conv of timm's ConvNormAct (dropout off, the norm checked by the
    caller for proj; qkv none), with no activation; or archcalc's module's."""
    from .from_torch import NoMapping
    conv = part.conv
    if type(conv).__name__ != "Conv2d" or tuple(conv.stride) != (1, 1) or \
            tuple(conv.dilation) != (1, 1) or tuple(conv.padding) != (0, 0):
        raise NoMapping(f"LiteMLA whose {what} is not a plain 1x1 conv")
    drop = getattr(part, "dropout", None)
    if drop is not None and drop.p:
        raise NoMapping(f"LiteMLA with dropout before its {what} conv")
    for key in ("act",) + (("norm",) if what == "qkv" else ()):
        sub = getattr(part, key, None)
        if sub is not None and type(sub).__name__ != "Identity":
            raise NoMapping(f"LiteMLA with a {type(sub).__name__} in its {what}")
    return conv


def _aggregation(seq, width, groups, bias) -> int:
    """timm's aggregation: a depthwise k x k conv (same padding) and a 1x1 conv
    in ``groups`` groups, both width -> width, biased as the qkv conv: k."""
    from .from_torch import NoMapping
    if len(seq) != 2 or any(type(s).__name__ != "Conv2d" for s in seq):
        raise NoMapping("LiteMLA whose aggregation is not two convs")
    dw, pw = seq
    k = dw.kernel_size[0]
    if tuple(dw.kernel_size) != (k, k) or k % 2 == 0 or tuple(dw.padding) != (k // 2, k // 2) \
            or (dw.in_channels, dw.out_channels, dw.groups) != (width, width, width) \
            or tuple(dw.stride) != (1, 1) or tuple(dw.dilation) != (1, 1) \
            or dw.padding_mode != "zeros" \
            or (pw.in_channels, pw.out_channels, pw.groups) != (width, width, groups) \
            or tuple(pw.kernel_size) != (1, 1) or tuple(pw.stride) != (1, 1) \
            or (dw.bias is not None, pw.bias is not None) != (bias, bias):
        raise NoMapping("LiteMLA whose aggregation is not a depthwise k x k conv (odd k, same "
                        "padding) and a 1x1 conv grouped per head, biased as its qkv conv")
    return int(k)


@register
class CascadedGroupAttention(Kind):
    """EfficientViT (MSRA)'s attention (Liu et al. 2023), as timm's
    efficientvit_msra LocalWindowAttention around its CascadedGroupAttention:
    the map zero-padded to nh x nw windows of ``window`` x ``window`` (W =
    nh*nw, P = W*N padded positions, N = window^2); per window, head i reads
    the i-th of the heads' equal slices of the C channels (g = C/heads), plus
    head i-1's output: a 1x1 conv + BN to q, k (key_dim) and v (val_dim), q
    through a depthwise k_i x k_i conv + BN, scores q k^T / sqrt(key_dim) plus
    a learned bias per head and |dy|, |dx| offset, softmax, weighted values;
    the heads' outputs ReLU'd, a 1x1 conv + BN back to C; the windows put
    back, the map cropped.

    MACs (FlopCounterMode's: convs and matrix products): P*(heads*g*(2*key_dim
    + val_dim) + key_dim*sum k_i^2 + heads*N*(key_dim + val_dim) +
    heads*val_dim*C)."""
    name = "cascaded_group_attention"
    torch_classes = ("CascadedGroupAttention",)  # in efficientvit_torch.py
    aliases = ("local_window_attention",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("EfficientViT (MSRA)'s cascaded group attention in windows: each head on its "
               "slice of the channels plus the previous head's output, a depthwise conv on q, "
               "a learned bias per offset")
    flops_rule = ("2 x MACs + 4 per score (bias, exp, sum, divide: 4*heads*P*N) + per padded "
                  "position 2 per batch-normalized element (2*heads*(3*key_dim + val_dim) + "
                  "2*C), key_dim*heads (q scaled), (heads - 1)*g (the cascade's adds), "
                  "heads*val_dim (ReLU); MACs = P*(heads*g*(2*key_dim + val_dim) + "
                  "key_dim*sum k_i^2 + heads*N*(key_dim + val_dim) + heads*val_dim*C), "
                  "P = windows*N, N = window^2, g = C/heads")
    args = {
        "heads": Arg("int", min=1, doc="attention heads, each on C/heads channels"),
        "key_dim": Arg("int", 16, min=1, doc="q's and k's width per head"),
        "val_dim": Arg("int", None, min=1, doc="v's width per head (default C/heads, as the "
                                               "cascade needs where heads > 1)"),
        "kernels": Kernels("table", None, min=1, doc="per head, the depthwise conv on q's odd "
                                                     "kernel (default 5 for each)"),
        "window": Arg("int", 7, min=1, numeric=True,
                      doc="the windows' side (timm: min(window_resolution, resolution)): the "
                          "attention biases' grid"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norms"),
    }
    arg_examples = {"heads": (1, 2), "key_dim": (1, 3), "val_dim": (None, 2),
                    "kernels": (None, lambda x: [1] * 2, lambda x: [3, 1]),
                    "window": (1, 2, 4)}

    @staticmethod
    def _kernels(a):
        return a.kernels if a.kernels is not None else (5,) * a.heads

    def _dims(self, a, x):
        """(g = C/heads, key_dim, val_dim)."""
        g = sym.exact_div(x[0], a.heads)
        return g, a.key_dim, a.val_dim if a.val_dim is not None else g

    def geometry(self, a, x):
        """(windows, N = window^2, padded positions P, padded height, width)."""
        nh, nw = (sym.ceildiv(side, a.window) for side in x[1:])
        n = a.window * a.window
        return sym.norm(nh * nw), n, sym.norm(nh * nw * n), sym.norm(nh * a.window), \
            sym.norm(nw * a.window)

    def output_shape(self, a, x):
        c = x[0]
        if isinstance(c, int) and c % a.heads:
            raise SpecError(f"cascaded_group_attention: {c} channels do not split into "
                            f"{a.heads} heads' equal slices")
        if len(self._kernels(a)) != a.heads:
            raise SpecError(f"cascaded_group_attention: one kernel per head: {a.heads} heads, "
                            f"{len(a.kernels)} kernels. Received: kernels={list(a.kernels)}")
        g, _, vd = self._dims(a, x)
        if a.heads > 1 and sym.norm(vd - g) != 0:
            raise SpecError(f"cascaded_group_attention: each head adds its output (val_dim) to "
                            f"the next head's slice of C/heads = {sym.plain(g)} channels. "
                            f"Received: val_dim={a.val_dim}")
        return x

    def params(self, a, x):
        c, h = x[0], a.heads
        g, kd, vd = self._dims(a, x)
        return sym.norm(h * (g * (2 * kd + vd) + 2 * (2 * kd + vd) + 2 * kd)
                        + kd * sum(k * k for k in self._kernels(a)) + h * vd * c + 2 * c
                        + h * a.window ** 2)

    def params_formula(self, a, x):
        c, h = sym.plain(x[0]), a.heads
        g, kd, vd = self._dims(a, x)
        g, vd = sym.plain(g), sym.plain(vd)
        kernels = " + ".join(f"{k}*{k}" for k in self._kernels(a))
        return (f"{h}*({g}*(2*{kd} + {vd}) + 2*(2*{kd} + {vd}) + 2*{kd}) + {kd}*({kernels}) "
                f"(q, k, v; q's depthwise convs) + {h}*{vd}*{c} + 2*{c} (output conv, batch "
                f"norm) + {h}*{a.window}*{a.window} (attention biases)")

    def buffers(self, a, x):
        _, kd, vd = self._dims(a, x)
        return sym.norm(2 * a.heads * (3 * kd + vd) + 2 * x[0])

    def macs(self, a, x, y):
        c, h = x[0], a.heads
        g, kd, vd = self._dims(a, x)
        _, n, p, _, _ = self.geometry(a, x)
        return sym.norm(p * (h * g * (2 * kd + vd) + kd * sum(k * k for k in self._kernels(a))
                             + h * n * (kd + vd) + h * vd * c))

    def flops(self, a, x, y):
        c, h = x[0], a.heads
        g, kd, vd = self._dims(a, x)
        _, n, p, _, _ = self.geometry(a, x)
        per_position = 2 * h * (3 * kd + vd) + 2 * c + h * kd + (h - 1) * g + h * vd
        return sym.norm(2 * self.macs(a, x, y) + 4 * h * p * n + p * per_position)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        # a window past the map's edge sees only the map (the rest is padding)
        return tuple(min(a.window, side) if isinstance(side, int) else a.window
                     for side in x[1:]), (1, 1)

    def windowed(self, a, x) -> bool:
        """Whether the map is padded and partitioned (it is not one window)."""
        return not (x[1] == a.window and x[2] == a.window)

    def cost(self, a, x, y):
        """The partition copies (not for one window); per head the cascade's
        add, the q, k, v conv and norm, q's depthwise conv and norm, q scaled,
        the scores, the bias, the softmax, the weighted values; the cat, the
        ReLU, the output conv and norm."""
        c, h = x[0], a.heads
        g, kd, vd = self._dims(a, x)
        w, n, p, hp, wp = self.geometry(a, x)
        move = (Cost("copy", elements=sym.norm(c * p)),) if self.windowed(a, x) else ()
        out = [*move, *move]
        for i, k in enumerate(self._kernels(a)):
            out += ([Cost("add", elements=sym.norm(g * p))] if i else []) + [
                Cost("conv", conv=(1, 1, 1, 1, g, 2 * kd + vd, hp, wp, 1),
                     tensors=(sym.norm(g * (2 * kd + vd)),)),
                Cost("batch_norm", elements=sym.norm((2 * kd + vd) * p),
                     tensors=(2 * kd + vd,) * 2),
                Cost("conv", conv=(k, k, 1, 1, kd, kd, hp, wp, kd), tensors=(kd * k * k,)),
                Cost("batch_norm", elements=sym.norm(kd * p), tensors=(kd, kd)),
                Cost("mul", elements=sym.norm(kd * p)),
                Cost("linear", gemm=(p, n, kd)),
                Cost("add", elements=sym.norm(p * n), tensors=(n,) if i == 0 else ()),
                Cost("softmax", elements=sym.norm(p * n)),
                Cost("linear", gemm=(sym.norm(w * vd), n, n))]
        return (*out,
                Cost("cat", elements=sym.norm(h * vd * p)),
                Cost("relu", elements=sym.norm(h * vd * p)),
                Cost("conv", conv=(1, 1, 1, 1, sym.norm(h * vd), c, hp, wp, 1),
                     tensors=(sym.norm(h * vd * c),)),
                Cost("batch_norm", elements=sym.norm(c * p), tensors=(c, c)),
                *(Cost("copy", elements=sym.prod(x)),) * self.windowed(a, x))

    def saved(self, a, x, y):
        # the input (the windows, a copy, where partitioned); per head the
        # cascade's sum (the conv's input), the q, k, v conv's and norm's
        # outputs, q's depthwise conv's and norm's outputs and q scaled, the
        # softmax's output; the ReLU's output (the output conv's input), the
        # output conv's output (its norm's input); the norms' statistics (fp32)
        c, h = x[0], a.heads
        g, kd, vd = self._dims(a, x)
        _, n, p, _, _ = self.geometry(a, x)
        per_head = (h - 1) * g + h * (2 * (2 * kd + vd) + 3 * kd)
        return Saved(input=True, extra=(
            (sym.norm(c * p) if self.windowed(a, x) else 0, None),
            (sym.norm(per_head * p), None), (sym.norm(h * p * n), None),
            (sym.norm((h * vd + c) * p), None)),
            per_batch=((sym.norm(self.buffers(a, x)), FP32),))

    def build(self, a, x):
        from .efficientvit_torch import CascadedGroupAttention as Module
        _, kd, vd = self._dims(a, x)
        return Module(x[0], a.heads, kd, vd, self._kernels(a), a.window, a.eps)

    torch_modules = ("archcalc.layers.efficientvit_torch.CascadedGroupAttention",
                     "timm.models.efficientvit_msra.LocalWindowAttention")

    def from_torch(self, call, m):
        """archcalc's module and timm's LocalWindowAttention (its attn a
        CascadedGroupAttention of ConvNorms: 1x1 convs, depthwise convs on q
        of same padding, ReLU + ConvNorm as proj)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "LocalWindowAttention")
        c = call.x[0]
        attn = m.attn
        h = len(attn.qkvs)
        kd = int(attn.key_dim)
        vd = int(attn.val_dim)
        ws = int(attn.resolution)
        if c % h or (h > 1 and vd != c // h) or len(attn.dws) != h:
            raise NoMapping(f"CascadedGroupAttention of {h} heads on {c} channels with "
                            f"val_dim {vd}")
        if abs(float(getattr(attn, "scale", kd ** -0.5)) * kd ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"CascadedGroupAttention scaled by {attn.scale}")
        if tuple(attn.attention_biases.shape) != (h, ws * ws):
            raise NoMapping("CascadedGroupAttention whose attention biases are not "
                            f"{h} x {ws}*{ws}")
        eps = {_conv_norm(q, c // h, 2 * kd + vd, 1, 1) for q in attn.qkvs}
        kernels = [int(dw.conv.kernel_size[0]) for dw in attn.dws]
        eps |= {_conv_norm(dw, kd, kd, k, kd) for dw, k in zip(attn.dws, kernels)}
        relu, proj = attn.proj
        if type(relu).__name__ != "ReLU":
            raise NoMapping(f"CascadedGroupAttention whose proj starts with "
                            f"{type(relu).__name__}")
        eps.add(_conv_norm(proj, h * vd, c, 1, 1))
        if len(eps) > 1:
            raise NoMapping("CascadedGroupAttention with norms of several eps")
        found = {"heads": h, "key_dim": kd, "val_dim": vd if vd != c // h else None,
                 "kernels": kernels if kernels != [5] * h else None, "window": ws,
                 "eps": eps.pop()}
        return row("cascaded_group_attention", **{k: v for k, v in found.items()
                                                  if k == "heads" or v != self.args[k].default})


def _conv_norm(part, cin, cout, k, groups) -> float:
    """timm's efficientvit_msra ConvNorm (a conv without a bias, stride 1,
    padding k//2; a BatchNorm2d) as the kind computes it: its eps."""
    from .from_torch import NoMapping
    conv, bn = part.conv, part.bn
    if type(conv).__name__ != "Conv2d" or \
            (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
             tuple(conv.padding), tuple(conv.dilation), conv.groups, conv.bias is None,
             conv.padding_mode) != \
            (cin, cout, (k, k), (1, 1), (k // 2, k // 2), (1, 1), groups, True, "zeros") \
            or k % 2 == 0:
        raise NoMapping(f"CascadedGroupAttention whose ConvNorm is not a {k}x{k} conv "
                        f"{cin} -> {cout} in {groups} groups, same padding, without a bias")
    if type(bn).__name__ != "BatchNorm2d" or not (bn.affine and bn.track_running_stats):
        raise NoMapping(f"CascadedGroupAttention with a {type(bn).__name__}")
    return float(bn.eps)
