"""Blur pool (Zhang 2019, "Making convolutional networks shift-invariant
again"), as timm's BlurPool2d: the map padded (reflected by default), then
each channel convolved with a fixed binomial filter (the outer product of
the row C(k-1, i) / 2^(k-1) with itself) at a stride: an anti-aliased
downsampling. The filter is a buffer, not learned: no parameters, and a
depthwise conv's multiply-accumulates."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register, sliding_output
from .pad import MODES


@register
class BlurPool(Kind):
    name = "blur_pool"
    torch_classes = ("BlurPool2d",)  # in blur_pool_torch.py
    aliases = ("blurpool", "anti_alias")
    primary = "filter"
    summary = ("anti-aliased downsampling: pad (reflect), a fixed k x k binomial blur per "
               "channel, at a stride (timm's BlurPool2d)")
    flops_rule = "2 x MACs; MACs = C*Ho*Wo*k*k (a depthwise conv with a fixed filter)"
    inputs = "chw"
    autocast = "low"
    args = {
        "filter": Arg("int", 3, min=2, doc="the binomial filter's size k"),
        "stride": Arg("int", 2, min=1),
        "mode": Arg("str", "reflect", choices=MODES, doc="the padding's mode"),
    }

    @staticmethod
    def pad(a):
        """timm's get_padding(k, stride): the same on every side."""
        return ((a.stride - 1) + (a.filter - 1)) // 2

    def output_shape(self, a, x):
        c, h, w = x
        p = self.pad(a)
        if a.mode == "reflect":
            for side, n in (("height", h), ("width", w)):
                if isinstance(n, int) and p >= n:
                    raise SpecError(f"blur_pool: a reflection of {p} needs a {side} over {p}. "
                                    f"Received: {side}={n}")
        out = tuple(sliding_output(n, a.filter, a.stride, p) for n in (h, w))
        if any(sym.known_positive(o) is False for o in out):
            raise SpecError(f"blur_pool: a {a.filter} x {a.filter} filter is larger than the "
                            f"padded input {sym.fmt_int(h)} x {sym.fmt_int(w)} + {2 * p}")
        return (c, *out)

    def buffers(self, a, x):
        return sym.norm(x[0] * a.filter * a.filter)

    def macs(self, a, x, y):
        return sym.norm(sym.prod(y) * a.filter * a.filter)

    def macs_formula(self, a, x, y):
        return f"({sym.plain(y[1])}*{sym.plain(y[2])}*{sym.plain(y[0])})*({a.filter}*{a.filter})"

    def window(self, a, x):
        return (a.filter, a.filter), (a.stride, a.stride)

    def cost(self, a, x, y):
        """A copy into the padded map, then a depthwise conv of k x k."""
        c, h, w = x
        p = self.pad(a)
        k, s = a.filter, a.stride
        return (Cost("copy", elements=sym.norm(c * (h + 2 * p) * (w + 2 * p))),
                Cost("conv", conv=(k, k, s, s, c, c, y[1], y[2], c)))

    def saved(self, a, x, y):
        # the conv keeps the padded copy (its filter is a buffer); a reflection
        # or replication pad keeps its input too
        c, h, w = x
        p = self.pad(a)
        padded = sym.norm(c * (h + 2 * p) * (w + 2 * p))
        return Saved(input=a.mode in ("reflect", "replicate"), extra=((padded, None),))

    def build(self, a, x):
        from .blur_pool_torch import BlurPool2d
        return BlurPool2d(x[0], a.filter, a.stride, a.mode)

    torch_modules = ("archcalc.layers.blur_pool_torch.BlurPool2d",
                     "timm.layers.blur_pool.BlurPool2d")

    def from_torch(self, call, m):
        """archcalc's and timm's (the same filter, padding and stride)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "BlurPool2d")
        k, s = int(m.filt_size), int(m.stride)
        if m.channels is not None and m.channels != call.x[0]:
            raise NoMapping(f"a BlurPool2d of {m.channels} channels on {call.x[0]}")
        if list(m.padding) != [((s - 1) + (k - 1)) // 2] * 4 or m.pad_mode not in MODES:
            raise NoMapping(f"a BlurPool2d padded {m.padding} ({m.pad_mode})")
        args = {"filter": k, "stride": s}
        if m.pad_mode != "reflect":
            args["mode"] = m.pad_mode
        return row("blur_pool", **args)
