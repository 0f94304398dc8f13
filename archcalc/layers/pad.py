"""Padding as a layer of its own: rows and columns added around a map before
the layer that reads it, where that layer cannot pad it itself. TensorFlow's
"same" padding pads one more after than before at a stride of 2 (timm's
Conv2dSame, MaxPool2dSame and BlurPool call F.pad, then a conv or a pool with
no padding); nn.ZeroPad2d, ConstantPad2d, ReflectionPad2d, ReplicationPad2d
and CircularPad2d are the module forms.

A copy into a larger map: no parameters, no arithmetic (FlopCounterMode
counts none), nothing kept for backward (the gradient is a slice). A
negative amount of constant padding cuts rows or columns off, as PyTorch's
does: NASNet's ``ZeroPad2d((-1, 1, -1, 1))`` shifts the map by one."""
from __future__ import annotations

import math

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, fmt_shape, register

MODES = ("constant", "reflect", "replicate", "circular")
# the module each mode builds (torch.nn's names)
MODULES = {"constant": "ConstantPad2d", "reflect": "ReflectionPad2d",
           "replicate": "ReplicationPad2d", "circular": "CircularPad2d"}


# timm's layers that pad as TensorFlow's 'same' does (timm.layers.padding.pad_same),
# then run their torch.nn layer without padding; where they live in timm.layers
SAME_LAYERS = {"Conv2dSame": "conv2d_same", "MaxPool2dSame": "pool2d_same",
               "AvgPool2dSame": "pool2d_same"}
SAME_LAYERS = {name: f"{where}.{name}" for name, where in SAME_LAYERS.items()}


class PadValue(Arg):
    """The constant's value: a number, or "-inf"/"inf" (a max pool's padding:
    TOML writes no infinite numbers, so the spec spells them as strings)."""

    def read(self, kind, name, value, env):
        if isinstance(value, str) and value.strip() in ("-inf", "inf"):
            return value.strip()
        return Arg("float").read(kind, name, value, env)


@register
class Pad(Kind):
    name = "pad"
    aliases = ("zero_pad", "constant_pad")
    summary = ("pad a map: [top, bottom] rows and [left, right] columns of a constant "
               "(or reflected, replicated, circular) values; TF-style same padding")
    flops_rule = "0 (a copy)"
    inputs = "chw"
    # a module mapped to a pad and its own layer (Conv2dSame): the importer makes
    # the pad a row of its own, the module's name going on the layer's row
    prepares_input = True
    args = {
        "height": Arg("pair", 0, doc="rows added: p, or [top, bottom] (negative: cut "
                                     "off, constant mode only)"),
        "width": Arg("pair", 0, doc="columns added: p, or [left, right] (negative: cut "
                                    "off, constant mode only)"),
        "mode": Arg("str", "constant", choices=MODES),
        "value": PadValue("float", 0.0, doc='the constant: a number, "-inf" or "inf"'),
    }

    def output_shape(self, a, x):
        c, h, w = x
        (top, bottom), (left, right) = a.height, a.width
        if a.mode != "constant" and min(top, bottom, left, right) < 0:
            raise SpecError(f"pad: a negative amount cuts the map off, which only the "
                            f"constant mode does (PyTorch's). Received: mode={a.mode!r}, "
                            f"height={list(a.height)}, width={list(a.width)}")
        out = (c, sym.norm(h + top + bottom), sym.norm(w + left + right))
        if any(isinstance(d, int) and d < 1 for d in out[1:]):
            raise SpecError(f"pad: {list(a.height)} rows and {list(a.width)} columns leave "
                            f"nothing of a {fmt_shape(x)} input. Received: "
                            f"height={list(a.height)}, width={list(a.width)}")
        if a.mode in ("reflect", "circular"):
            # PyTorch: a reflection must be shorter than the side it reflects,
            # a circular pad no longer than it
            for side, size, pads in (("height", h, a.height), ("width", w, a.width)):
                limit = size - 1 if a.mode == "reflect" else size
                if isinstance(size, int) and max(pads) > limit:
                    raise SpecError(f"pad: {a.mode} padding of {max(pads)} along {side} needs "
                                    f"a side of more than {max(pads) - (a.mode == 'circular')}"
                                    f", but the input is {fmt_shape(x)}. "
                                    f"Received: {side}={list(pads)}")
        return (c, sym.norm(h + top + bottom), sym.norm(w + left + right))

    def cost(self, a, x, y):
        """A copy of the map into the padded one (its backward a slice of the
        gradient, copied)."""
        return (Cost("copy", elements=sym.prod(y)),)

    def size_arithmetic(self, a, x):
        (_, h, w), (top, bottom), (left, right) = x, a.height, a.width
        def terms(*amounts):   # a negative amount as a subtraction
            return " ".join(f"+ {v}" if v >= 0 else f"- {-v}" for v in amounts)
        return [f"H + top + bottom = {sym.plain(h)} {terms(top, bottom)} = "
                f"{sym.plain(h + top + bottom)}",
                f"W + left + right = {sym.plain(w)} {terms(left, right)} = "
                f"{sym.plain(w + left + right)}"]

    def build(self, a, x):
        from torch import nn
        padding = (a.width[0], a.width[1], a.height[0], a.height[1])   # PyTorch's order
        if a.mode == "constant":
            return nn.ConstantPad2d(padding, float(a.value))
        return getattr(nn, MODULES[a.mode])(padding)

    torch_modules = ("torch.nn.ZeroPad2d", "torch.nn.ConstantPad2d", "torch.nn.ReflectionPad2d",
                     "torch.nn.ReplicationPad2d", "torch.nn.CircularPad2d",
                     # TensorFlow's 'same': pad for the input's size, then the layer
                     *(f"timm.layers.{path}" for path in SAME_LAYERS.values()))

    def from_torch(self, call, m):
        if type(m).__name__ in SAME_LAYERS:
            return same_rows(call, m)
        mode = next(mode for mode, cls in MODULES.items()
                    if cls in {k.__name__ for k in type(m).__mro__})
        return pad_row(call, m.padding, mode, getattr(m, "value", 0.0))


def same_padding(size, kernel, stride, dilation):
    """(before, after) of TensorFlow's 'same' along one side (timm's
    get_same_padding): the output is ceil(size / stride); one more after."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def same_rows(call, m):
    """timm's Conv2dSame / MaxPool2dSame / AvgPool2dSame at this input: the pad
    row, then the layer's own row with no padding."""
    from . import lookup
    from .from_torch import NoMapping, pair, require_chw, row
    require_chw(call, type(m).__name__)
    kernel, stride, dilation = (_two(v) for v in (m.kernel_size, m.stride,
                                                  getattr(m, "dilation", 1)))
    (top, bottom), (left, right) = (same_padding(call.x[i + 1], kernel[i], stride[i],
                                                 dilation[i]) for i in (0, 1))
    name = type(m).__name__
    value = -float("inf") if name == "MaxPool2dSame" else 0.0
    pad = pad_row(call, (left, right, top, bottom), "constant", value)
    if name == "Conv2dSame":
        return pad + lookup("conv").from_torch(call, m)
    if isinstance(m.padding, str) or any(_two(m.padding)):
        raise NoMapping(f"{name} with a padding of its own")
    if name == "MaxPool2dSame":
        return pad + row("maxpool", kernel=pair(kernel), stride=pair(stride),
                         dilation=pair(dilation), ceil_mode=bool(m.ceil_mode))
    return pad + row("avgpool", kernel=pair(kernel), stride=pair(stride),
                     ceil_mode=bool(m.ceil_mode),
                     count_include_pad=bool(m.count_include_pad))


def _two(v) -> tuple:
    """A torch size argument as (height, width)."""
    return (int(v[0]), int(v[-1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def pad_row(call, padding, mode="constant", value=0.0):
    """The pad row of a torch padding (left, right, top, bottom; F.pad's
    order: the last dimension first)."""
    from .from_torch import NoMapping, require_chw, row
    require_chw(call, "padding")
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        padding += (0, 0)
    if len(padding) != 4:
        raise NoMapping(f"padding {list(padding)} (archcalc pads H and W)")
    if mode not in MODES:
        raise NoMapping(f"padding mode {mode!r}")
    if min(padding) < 0 and mode != "constant":
        raise NoMapping(f"{mode} padding by a negative amount {list(padding)}")
    left, right, top, bottom = padding
    args = {"height": _side(top, bottom), "width": _side(left, right)}
    if mode != "constant":
        args["mode"] = mode
    else:
        value = 0.0 if value is None else float(value)
        if math.isnan(value):
            raise NoMapping("padding with NaN")
        args["value"] = value if math.isfinite(value) else ("-inf" if value < 0 else "inf")
    return row("pad", **args)


def _side(before, after):
    return before if before == after else [before, after]
