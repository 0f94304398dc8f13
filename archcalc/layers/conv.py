"""Convolutions: conv (groups, depthwise, dilation, asymmetric kernels, bias)
and LeNet-5's partially connected conv (C3's connection table)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import (Arg, Kind, Saved, fmt_shape, register, same_padding,
                   sliding_output, tiling_remarks)

AXES = ("height", "width")


def padding_pairs(a, kernel, dilation):
    """Per axis (before, after) padding; 'same' may pad one more after (PyTorch)."""
    if a.padding == "valid":
        return ((0, 0), (0, 0))
    if a.padding == "same":
        out = []
        for f, d in zip(kernel, dilation):
            total = d * (f - 1)
            before = same_padding(f, d)
            out.append((before, sym.norm(total - before)))
        return tuple(out)
    return tuple((p, p) for p in a.padding)


def sliding_shape(kind: Kind, a, x, kernel, stride, dilation, ceil_mode=False):
    """Output H, W of a sliding window; raises when the kernel does not fit."""
    pads = padding_pairs(a, kernel, dilation)
    out = []
    for n, f, s, (pb, pa), d, axis in zip(x[1:], kernel, stride, pads, dilation, AXES):
        if pb == pa:
            o = sliding_output(n, f, s, pb, d, ceil_mode)
        else:  # asymmetric 'same' padding: stride is 1, the size is kept
            o = n
        fits = sym.known_positive(o)
        if fits is False:
            fe = d * (f - 1) + 1
            raise SpecError(
                f"kernel {sym.fmt_int(fe)} along {axis} is larger than the padded input "
                f"{sym.fmt_int(n + pb + pa)} ({sym.fmt_int(n)} + {sym.fmt_int(pb)} + "
                f"{sym.fmt_int(pa)} padding); the output would be {sym.fmt_int(o)}")
        out.append(o)
    return tuple(out)


def sliding_findings(a, x, kernel, stride, dilation):
    if a.padding == "same":  # keeps the size at stride 1: always tiles
        return []
    pads = (0, 0) if a.padding == "valid" else a.padding
    return tiling_remarks(x, kernel, stride, pads, dilation)


def effective_window(kernel, stride, dilation):
    return (tuple(d * (f - 1) + 1 for f, d in zip(kernel, dilation)), tuple(stride))


def torch_padding(a):
    return a.padding if isinstance(a.padding, str) else tuple(a.padding)


@register
class Conv(Kind):
    name = "conv"
    aliases = ("conv2d", "convolution")
    primary = "out"
    summary = "2-D convolution: out channels, kernel (k or [kh, kw]), stride, padding, dilation, groups"
    flops_rule = "2 x MACs; MACs = Cout*Hout*Wout * (Cin/groups)*kh*kw"
    weighted = True
    fusable = True
    inputs = "chw"
    args = {
        "out": Arg("int", min=1, doc="output channels"),
        "kernel": Arg("pair", min=1, doc="k or [kh, kw]"),
        "stride": Arg("pair", 1, min=1),
        "padding": Arg("padding", 0, doc="int, [ph, pw], 'same' or 'valid'"),
        "dilation": Arg("pair", 1, min=1),
        "groups": Arg("int", 1, min=1),
        "depthwise": Arg("bool", False, doc="groups = input channels"),
        "bias": Arg("bool", True),
    }

    def groups(self, a, x):
        return x[0] if a.depthwise else a.groups

    def output_shape(self, a, x):
        cin, g = x[0], self.groups(a, x)
        if a.padding == "same" and any(s != 1 for s in a.stride):
            raise SpecError(f"padding='same' needs stride 1 (as in PyTorch). "
                            f"Received: stride={list(a.stride)}")
        for what, n in (("input channels", cin), ("output channels", a.out)):
            if isinstance(n, int) and isinstance(g, int) and n % g:
                raise SpecError(f"groups={g} must divide the {what}. "
                                f"Received: {what}={n}, groups={g}")
        return (a.out, *sliding_shape(self, a, x, a.kernel, a.stride, a.dilation))

    def _fan_in(self, a, x):
        return sym.exact_div(x[0], self.groups(a, x))

    def params(self, a, x):
        kh, kw = a.kernel
        return sym.norm(kh * kw * self._fan_in(a, x) * a.out + (a.out if a.bias else 0))

    def params_formula(self, a, x):
        kh, kw = a.kernel
        f = sym.plain
        w = f"({f(kh)}*{f(kw)}*{f(self._fan_in(a, x))})*{f(a.out)}"
        return w + (f" + {f(a.out)}" if a.bias else "")

    def macs(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(sym.prod(y) * self._fan_in(a, x) * kh * kw)

    def window(self, a, x):
        return effective_window(a.kernel, a.stride, a.dilation)

    def saved(self, a, x, y):
        return Saved(input=True)

    def findings(self, a, x):
        return sliding_findings(a, x, a.kernel, a.stride, a.dilation)

    def build(self, a, x):
        from torch import nn
        return nn.Conv2d(x[0], a.out, tuple(a.kernel), tuple(a.stride), torch_padding(a),
                         tuple(a.dilation), self.groups(a, x), a.bias)


@register
class ConvTable(Kind):
    """LeNet-5's C3: each output map reads only a listed subset of the inputs."""
    name = "conv_table"
    aliases = ("partial_conv",)
    primary = "connections"
    summary = "conv whose output map i reads only the input maps connections[i] (LeNet-5 C3)"
    flops_rule = "2 x MACs; MACs = Hout*Wout*kh*kw * (number of connections)"
    weighted = True
    fusable = True
    inputs = "chw"
    args = {
        "connections": Arg("table", doc="for each output map, the input maps it reads"),
        "kernel": Arg("pair", min=1),
        "stride": Arg("pair", 1, min=1),
        "padding": Arg("padding", 0),
        "bias": Arg("bool", True),
    }
    dilation = (1, 1)

    def output_shape(self, a, x):
        cin = x[0]
        for i, maps in enumerate(a.connections):
            if not maps:
                raise SpecError(f"connections[{i}] is empty: every output map needs an input")
            bad = [m for m in maps if isinstance(cin, int) and not 0 <= m < cin]
            if bad:
                raise SpecError(f"connections[{i}] names input map(s) {bad}, but the input "
                                f"has {sym.fmt_int(cin)} maps (0..{sym.fmt_int(cin - 1)})")
            if len(set(maps)) != len(maps):
                raise SpecError(f"connections[{i}] lists an input map twice: {list(maps)}")
        return (len(a.connections),
                *sliding_shape(self, a, x, a.kernel, a.stride, self.dilation))

    def links(self, a):
        return sum(len(m) for m in a.connections)

    def params(self, a, x):
        kh, kw = a.kernel
        return kh * kw * self.links(a) + (len(a.connections) if a.bias else 0)

    def params_formula(self, a, x):
        kh, kw = a.kernel
        out = len(a.connections)
        return f"({kh}*{kw})*{self.links(a)} connections" + (f" + {out}" if a.bias else "")

    def macs(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(y[1] * y[2] * kh * kw * self.links(a))

    def window(self, a, x):
        return effective_window(a.kernel, a.stride, self.dilation)

    def saved(self, a, x, y):
        return Saved(input=True)

    def findings(self, a, x):
        return sliding_findings(a, x, a.kernel, a.stride, self.dilation)

    def build(self, a, x):
        from ..torch.modules import PartialConv2d
        return PartialConv2d(a.connections, tuple(a.kernel), tuple(a.stride),
                             torch_padding(a), a.bias)


