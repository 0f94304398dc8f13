"""Pooling: max pool (dilation, ceil mode), average pool (divisor override),
power-average (LP) pool, global average pool, adaptive average and max pools
(a size entry "none" keeps that dimension), LeNet's trainable subsampling,
max unpool, and ResNet's option-A shortcut.

What autograd keeps: max pools their input and int64 indices; average pools
their input, except an adaptive pool to 1 x 1 (and so the global average
pool), which PyTorch computes as a mean: a mean's backward needs only the
input's shape, so nothing is kept."""
from __future__ import annotations

import math

from types import SimpleNamespace

from .. import sym
from ..errors import SpecError
from .base import (NOTHING_SAVED, Arg, Cost, Kind, Saved, fmt_shape, register,
                   sliding_arithmetic)
from .window import (CEIL_MODE, DILATION, KERNEL, PADDING, POOL_WINDOW, STRIDE_OF_KERNEL,
                     effective_window, sliding_findings, sliding_shape)

INT64 = 8


def pool_cost(family: str, a, x, y, kernel, stride, scale: float = 1.0) -> Cost:
    """A sliding-window pool rated by the calibrated pool of its family nearest
    in (kernel, stride), on the input's elements: 3x3 stride 2 (ResNet's stem),
    2x2 stride 2 (VGG, DenseNet's transitions), 3x3 stride 1 (Inception's pool
    branch). Another window scales that time by its reads per input element
    (kh*kw x outputs / inputs; the calibrated pools read kh*kw / (sh*sw)),
    within [1/4, 4]: a 7x7 window over a 7x7 map reads each input once."""
    kk = kernel[0] * kernel[1]
    ss = stride[0] * stride[1]
    calibrated = {f"{family}3s2": (9, 4), f"{family}2s2": (4, 4), f"{family}3s1": (9, 1)}
    name = min(calibrated, key=lambda n: (abs(calibrated[n][1] - ss), abs(calibrated[n][0] - kk)))
    ref_kk, ref_ss = calibrated[name]
    inputs, outputs = sym.prod(x), sym.prod(y)
    reads = kk * outputs / inputs if isinstance(inputs, int) and isinstance(outputs, int) \
        and inputs else kk / ss
    ratio = reads / (ref_kk / ref_ss)
    return Cost(name, elements=sym.prod(x), scale=scale * min(4.0, max(0.25, ratio)))


class _Pool(Kind):
    primary = "kernel"
    inputs = "chw"
    args = dict(POOL_WINDOW)

    def stride(self, a):
        return a.stride if a.stride is not None else a.kernel

    def dilation(self, a):
        return getattr(a, "dilation", (1, 1))

    def _check_padding(self, a):
        for p, f in zip(a.padding, a.kernel):
            if isinstance(p, int) and isinstance(f, int) and 2 * p > f:
                raise SpecError(f"padding must be at most half the kernel (PyTorch's rule). "
                                f"Received: padding={list(a.padding)}, kernel={list(a.kernel)}")

    def output_shape(self, a, x):
        self._check_padding(a)
        ceil = getattr(a, "ceil_mode", False)
        return (x[0], *sliding_shape(self, a, x, a.kernel, self.stride(a), self.dilation(a),
                                     ceil))

    def window(self, a, x):
        return effective_window(a.kernel, self.stride(a), self.dilation(a))

    def size_arithmetic(self, a, x):
        return sliding_arithmetic(x, a.kernel, self.stride(a), a.padding, self.dilation(a),
                                  getattr(a, "ceil_mode", False))

    def findings(self, a, x):
        if getattr(a, "ceil_mode", False):  # ceil mode covers the rest on purpose
            return []
        return sliding_findings(a, x, a.kernel, self.stride(a), self.dilation(a))


@register
class MaxPool(_Pool):
    name = "maxpool"
    gives_indices = True
    op_relatives = {"maxpool3s1": "maxpool3s2", "maxpool2s2": "maxpool3s2", "maxpool3s2": "copy"}
    pads_input = True
    aliases = ("max_pool", "maxpool2d")
    summary = "max pool: kernel, stride (default kernel), padding, dilation, ceil_mode"
    flops_rule = "kh*kw - 1 comparisons per output element"
    args = {**_Pool.args, "dilation": DILATION}

    def flops(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(sym.prod(y) * (kh * kw - 1))

    def cost(self, a, x, y):
        return (pool_cost("maxpool", a, x, y, a.kernel, self.stride(a)),)

    def saved(self, a, x, y):
        # max_pool2d_with_indices keeps its input and int64 indices of the output size
        return Saved(input=True, extra=((sym.prod(y), INT64),))

    def build(self, a, x):
        from torch import nn
        return nn.MaxPool2d(tuple(a.kernel), tuple(self.stride(a)), tuple(a.padding),
                            tuple(a.dilation), ceil_mode=a.ceil_mode)


@register
class AvgPool(_Pool):
    name = "avgpool"
    op_relatives = {"avgpool2s2": "maxpool2s2", "avgpool3s1": "maxpool3s1",
                    "avgpool3s2": "maxpool3s2"}
    pads_input = True
    aliases = ("avg_pool", "avgpool2d")
    summary = ("average pool: kernel, stride (default kernel), padding, ceil_mode, "
               "count_include_pad, divisor_override")
    flops_rule = "kh*kw per output element (kh*kw - 1 additions and one division)"
    args = {**_Pool.args, "count_include_pad": Arg("bool", True),
            "divisor_override": Arg("int", None, min=1, numeric=True,
                                    doc="divide every window's sum by this")}

    def flops(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(sym.prod(y) * kh * kw)

    def cost(self, a, x, y):
        return (pool_cost("avgpool", a, x, y, a.kernel, self.stride(a)),)

    def saved(self, a, x, y):
        return Saved(input=True)

    def build(self, a, x):
        from torch import nn
        return nn.AvgPool2d(tuple(a.kernel), tuple(self.stride(a)), tuple(a.padding),
                            ceil_mode=a.ceil_mode, count_include_pad=a.count_include_pad,
                            divisor_override=a.divisor_override)

    torch_modules = ("torch.nn.AvgPool2d",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import pair, require_chw, row
        require_chw(call, "AvgPool2d")
        return row("avgpool", kernel=pair(m.kernel_size), stride=pair(m.stride or m.kernel_size),
                   padding=pair(m.padding), ceil_mode=m.ceil_mode,
                   count_include_pad=m.count_include_pad, divisor_override=m.divisor_override)


@register
class GlobalAvgPool(Kind):
    name = "global_avgpool"
    op_relatives = {"global_avgpool": "copy"}
    aliases = ("gap", "global_avg_pool")
    summary = "global average pool: C x H x W -> C x 1 x 1"
    flops_rule = "H*W per channel (H*W - 1 additions and one division)"
    inputs = "chw"
    args = {}

    def output_shape(self, a, x):
        return (x[0], 1, 1)

    def flops(self, a, x, y):
        return sym.prod(x)

    def cost(self, a, x, y):
        """A mean over H x W: its calibrated op, on the input's elements."""
        return (Cost("global_avgpool", elements=sym.prod(x)),)

    def window(self, a, x):
        return (x[1], x[2]), (x[1], x[2])

    def saved(self, a, x, y):
        return NOTHING_SAVED  # PyTorch computes it as a mean: backward needs only the shape

    def build(self, a, x):
        from torch import nn
        return nn.AdaptiveAvgPool2d((1, 1))


__all__ = ["MaxPool", "AvgPool", "GlobalAvgPool"]


@register
class Subsample(_Pool):
    """LeCun 1998's S2/S4: the sum of each 2x2 window times a trainable
    coefficient plus a trainable bias, per map (2 parameters a map)."""
    name = "subsample"
    pads_input = True
    torch_classes = ('Subsample',)  # in pool_torch.py
    aliases = ("lecun_subsample",)
    summary = "LeNet-5 subsampling: average pool times a learned coefficient plus a learned bias, per map"
    flops_rule = "kh*kw + 1 per output element (average, then scale and shift)"
    weighted = True
    fusable = True
    args = {k: v for k, v in _Pool.args.items() if k != "ceil_mode"}

    def params(self, a, x):
        return 2 * x[0]

    def params_formula(self, a, x):
        return f"2*{sym.plain(x[0])}"

    def flops(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(sym.prod(y) * (kh * kw + 1))

    def cost(self, a, x, y):
        """An average pool, then a per-map scale and shift (two passes)."""
        return (pool_cost("avgpool", a, x, y, a.kernel, self.stride(a)),
                Cost("mul", elements=sym.prod(y), tensors=(x[0], x[0])),
                Cost("add", elements=sym.prod(y)))

    def saved(self, a, x, y):
        # the average pool keeps its input; the per-map scale keeps the pooled map
        return Saved(input=True, extra=((sym.prod(y), None),))

    def build(self, a, x):
        from .pool_torch import Subsample as Module
        return Module(x[0], tuple(a.kernel), tuple(self.stride(a)), tuple(a.padding))

    torch_modules = ("archcalc.layers.pool_torch.Subsample",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import pair, row
        pool = m.pool
        return row("subsample", kernel=pair(pool.kernel_size), stride=pair(pool.stride),
                   padding=pair(pool.padding))


def adaptive_windows(n: int, m: int):
    """PyTorch's adaptive pooling windows: [floor(i*n/m), ceil((i+1)*n/m))."""
    return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]


def adaptive_window_stats(n: int, m: int) -> tuple[int, int]:
    """(total length, longest) of the m windows over n, in closed form: an
    output size of 10^8 must not list 10^8 windows. Window i has length
    ceil((r_i + n) / m) with r_i = i*n mod m, the multiples of g = gcd(n, m)
    below m: the longest has r = m - g, and the lengths add up to n + m - g."""
    g = math.gcd(n, m)
    return n + m - g, -(-(m - g + n) // m)


class _AdaptivePool(Kind):
    primary = "size"
    inputs = "chw"
    args = {"size": Arg("size", min=1, numeric=True,
                        doc='h or [h, w]; "none" keeps that dimension of the input')}

    def size(self, a, x):
        """The output H, W: a "none" entry takes the input's."""
        return tuple(n if s is None else s for s, n in zip(a.size, x[1:]))

    def output_shape(self, a, x):
        return (x[0], *self.size(a, x))

    def _stats(self, a, x):
        if not all(isinstance(v, int) for v in x[1:]):
            return None
        return [adaptive_window_stats(n, m) for n, m in zip(x[1:], self.size(a, x))]

    def _covered(self, a, x):
        """Input elements summed over every output's window (windows may overlap)."""
        stats = self._stats(a, x)
        if stats is None:  # symbolic: each input element once
            return sym.prod(x)
        (rows, _), (cols, _) = stats
        return x[0] * rows * cols

    def window(self, a, x):
        stats = self._stats(a, x)
        if stats is None:
            return (1, 1), (1, 1)
        kernel = tuple(longest for _, longest in stats)
        stride = tuple(max(1, n // m) for n, m in zip(x[1:], self.size(a, x)))
        return kernel, stride

    def _torch_size(self, a):
        return tuple(a.size)

    def from_size(self, call, size):
        """An adaptive pool of the call's input to ``size`` (int, pair, None
        keeps a side): this kind's row; to 1 x 1 on average the global pool."""
        from .from_torch import NoMapping, pair, require_chw, row
        require_chw(call, "an adaptive pool")
        size = size if isinstance(size, (list, tuple)) else (size, size)
        if len(size) != 2:
            raise NoMapping(f"an adaptive pool to a {len(size)}-d size")
        if self.name == "adaptive_avgpool" and tuple(size) == (1, 1):
            return row("global_avgpool")
        if None in size:   # "none" keeps that side of the input
            sides = ["none" if v is None else int(v) for v in size]
            return row(self.name, size=sides[0] if sides[0] == sides[1] else sides)
        return row(self.name, size=pair(size))


@register
class AdaptiveAvgPool(_AdaptivePool):
    name = "adaptive_avgpool"
    aliases = ("adaptive_avg_pool",)
    summary = 'adaptive average pool to a fixed output size (h, w); "none" keeps a dimension'
    flops_rule = "one per input element in each output's window (windows may overlap)"

    def flops(self, a, x, y):
        return self._covered(a, x)

    def cost(self, a, x, y):
        """To 1 x 1 a mean (the global pool); otherwise a pool over its windows."""
        if self.size(a, x) == (1, 1):
            return (Cost("global_avgpool", elements=sym.prod(x)),)
        kernel, stride = self.window(a, x)
        return (pool_cost("avgpool", a, x, y, kernel, stride),)

    def saved(self, a, x, y):
        if self.size(a, x) == (1, 1):  # computed as a mean: nothing kept
            return NOTHING_SAVED
        return Saved(input=True)

    def build(self, a, x):
        from torch import nn
        return nn.AdaptiveAvgPool2d(self._torch_size(a))

    torch_modules = ("torch.nn.AdaptiveAvgPool2d",)   # from_torch reads them

    def from_torch(self, call, m):
        return self.from_size(call, m.output_size)


@register
class AdaptiveMaxPool(_AdaptivePool):
    name = "adaptive_maxpool"
    aliases = ("adaptive_max_pool",)
    summary = 'adaptive max pool to a fixed output size (h, w); "none" keeps a dimension'
    flops_rule = "window size - 1 comparisons per output element (windows may overlap)"

    def flops(self, a, x, y):
        return sym.norm(self._covered(a, x) - sym.prod(y))

    def cost(self, a, x, y):
        kernel, stride = self.window(a, x)
        return (pool_cost("maxpool", a, x, y, kernel, stride),)

    def saved(self, a, x, y):
        return Saved(input=True, extra=((sym.prod(y), INT64),))

    def build(self, a, x):
        from torch import nn
        return nn.AdaptiveMaxPool2d(self._torch_size(a))

    torch_modules = ("torch.nn.AdaptiveMaxPool2d",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import NoMapping
        if m.return_indices:
            raise NoMapping("AdaptiveMaxPool2d with return_indices")
        return self.from_size(call, m.output_size)


@register
class LPPool(_Pool):
    """Power-average pooling, as nn.LPPool2d: (sum over the window of x^p)^(1/p).
    PyTorch computes it as avg_pool(x^p), then sign(o)*relu(|o|), times kh*kw,
    to the power 1/p; no padding."""
    name = "lp_pool"
    pads_input = True
    aliases = ("lppool", "lppool2d", "lp_pool2d")
    summary = "power-average pool (LPPool2d): (sum of x^p over the window)^(1/p); no padding"
    flops_rule = ("1 per input element (x^p) + kh*kw + 6 per output element "
                  "(average, sign, abs, relu, product, scale, root)")
    args = {
        "kernel": KERNEL,
        "norm_type": Arg("float", 2.0, doc="p: 1 is a sum pool, 2 an L2 pool"),
        "stride": STRIDE_OF_KERNEL,
        "ceil_mode": CEIL_MODE,
    }

    @staticmethod
    def _padded(a):
        return SimpleNamespace(**vars(a), padding=(0, 0))

    def output_shape(self, a, x):
        p = a.norm_type
        if p == 0 or p != p or p in (float("inf"), float("-inf")):
            raise SpecError(f"norm_type must be a finite non-zero number (an infinite one is a "
                            f"max pool of |x|: use maxpool). Received: norm_type={p}")
        return super().output_shape(self._padded(a), x)

    def size_arithmetic(self, a, x):
        return super().size_arithmetic(self._padded(a), x)

    def findings(self, a, x):
        return super().findings(self._padded(a), x)

    def flops(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(sym.prod(x) + sym.prod(y) * (kh * kw + 6))

    def cost(self, a, x, y):
        """x^p over the input, an average pool, then five elementwise ops on its output."""
        return (Cost("sigmoid", elements=sym.prod(x)),
                pool_cost("avgpool", a, x, y, a.kernel, self.stride(a)),
                Cost("relu", elements=sym.prod(y), scale=5.0))

    def saved(self, a, x, y):
        # pow keeps x; avg_pool keeps x^p; abs, relu, the product (sign and relu
        # output) and the root keep four tensors of the output's size
        return Saved(input=True, extra=((sym.prod(x), None), (sym.norm(4 * sym.prod(y)), None)))

    def build(self, a, x):
        from torch import nn
        return nn.LPPool2d(a.norm_type, tuple(a.kernel), tuple(self.stride(a)),
                           ceil_mode=a.ceil_mode)

    torch_modules = ("torch.nn.LPPool2d",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import pair, row
        return row("lp_pool", kernel=pair(m.kernel_size), norm_type=float(m.norm_type),
                   stride=pair(m.stride or m.kernel_size), ceil_mode=m.ceil_mode)


@register
class MaxUnpool(Kind):
    """Places each value back where its max pool found it (DeconvNet, SegNet);
    `of` names the max pool whose indices it uses."""
    name = "max_unpool"
    indices_from = "of"
    needs_context = "its indices come from the max pool that `of` names"
    not_mapped_back = ("its row names the max pool whose indices it reads: the importer maps "
                       "the call, which carries those indices, not the module alone")
    arg_examples = {"of": ("pool1",)}
    aliases = ("maxunpool", "unpool")
    primary = "kernel"
    summary = "max unpool: out = (N - 1)S - 2P + F; of = the max pool whose indices it uses"
    flops_rule = "0 (a scatter)"
    inputs = "chw"
    args = {
        "kernel": KERNEL,
        "stride": STRIDE_OF_KERNEL,
        "padding": PADDING,
        "of": Arg("str", doc="name of the max pool layer"),
    }

    def output_shape(self, a, x):
        stride = a.stride or a.kernel
        return (x[0], *(sym.norm((n - 1) * s - 2 * p + f)
                        for n, f, s, p in zip(x[1:], a.kernel, stride, a.padding)))

    def receptive_field(self, a, x, rf, jump):
        from .conv import upsampled_receptive_field
        return upsampled_receptive_field(rf, jump, a.kernel, a.stride or a.kernel)

    def cost(self, a, x, y):
        """A zero fill of the output (half a copy: writes only) and a scatter
        of the input into it; its backward gathers the gradient at the indices
        (a copy of the input's size)."""
        return (Cost("copy", elements=sym.prod(y), scale=0.5, backward=False),
                Cost("copy", elements=sym.prod(x)))

    def check_references(self, a, x, find):
        kind, pool_in, pool_out = find(a.of)
        if kind != "maxpool":
            raise SpecError(f"of = {a.of!r} names a {kind} layer; max unpool needs the "
                            "max pool whose indices it puts back")
        if tuple(pool_out) != tuple(x):
            raise SpecError(f"its input {fmt_shape(x)} differs from the output "
                            f"{fmt_shape(pool_out)} of {a.of!r}, whose indices it uses")
        y = self.output_shape(a, x)
        if tuple(y) != tuple(pool_in):
            raise SpecError(f"it gives {fmt_shape(y)}, but {a.of!r} pooled "
                            f"{fmt_shape(pool_in)}; use the same kernel, stride and padding")

    def build(self, a, x):
        from torch import nn
        return nn.MaxUnpool2d(tuple(a.kernel), tuple(a.stride or a.kernel), tuple(a.padding))


@register
class PadShortcut(Kind):
    """He et al. 2015's option A shortcut (CIFAR ResNets): take every S-th
    pixel and append zero channels up to `out`. No parameters, no FLOPs."""
    name = "pad_shortcut"
    torch_classes = ('PadShortcut',)  # in pool_torch.py
    summary = "x[:, :, ::S, ::S] with zero channels appended up to out (ResNet option A)"
    flops_rule = "0 (a strided copy)"
    inputs = "chw"
    args = {"out": Arg("int", min=1), "stride": Arg("pair", 1, min=1)}

    def output_shape(self, a, x):
        if sym.known_positive(x[0] - a.out) is True:
            raise SpecError(f"pad_shortcut only adds zero channels; out={sym.fmt_int(a.out)} "
                            f"is smaller than its {sym.fmt_int(x[0])} input channels, which "
                            "would be dropped")
        return (a.out, *(sym.norm((n - 1) // s + 1) if isinstance(n, int) else
                         sym.norm(sym.floordiv(n - 1, s) + 1) for n, s in zip(x[1:], a.stride)))

    def window(self, a, x):
        return (1, 1), tuple(a.stride)

    def cost(self, a, x, y):
        """A strided slice and a pad with zero channels: one copy into the
        output (its backward slices the gradient back: a copy of the input)."""
        return (Cost("copy", elements=sym.prod(y)),)

    def build(self, a, x):
        from .pool_torch import PadShortcut as Module
        return Module(a.out - x[0], tuple(a.stride))

    torch_modules = ("archcalc.layers.pool_torch.PadShortcut",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import pair, row
        return row("pad_shortcut", out=call.x[0] + m.extra, stride=pair(m.stride))
