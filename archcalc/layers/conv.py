"""Convolutions: conv (groups, depthwise, dilation, asymmetric kernels, bias)
and LeNet-5's partially connected conv (C3's connection table)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Weighted, Saved, register, sliding_arithmetic
from .window import (AXES, CONV_WINDOW, DILATION, KERNEL, PADDING, STRIDE,  # noqa: F401
                     effective_window, padding_pairs, sliding_findings, sliding_shape,
                     torch_padding)

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@register
class Conv(Weighted, Kind):
    name = "conv"
    pads_input = True
    im2col_copies = 1
    bias_redundant_before_norm = True
    cuda_layout_copies = True
    aliases = ("conv2d", "convolution")
    primary = "out"
    summary = "2-D convolution: out channels, kernel (k or [kh, kw]), stride, padding, dilation, groups"
    flops_rule = "2 x MACs; MACs = Cout*Hout*Wout * (Cin/groups)*kh*kw"
    inputs = "chw"
    args = {
        "out": Arg("int", min=1, doc="output channels"),
        **CONV_WINDOW,
        "dilation": DILATION,
        "groups": Arg("int", 1, min=1),
        "depthwise": Arg("bool", False, doc="groups = input channels"),
        "bias": Arg("bool", True),
        "padding_mode": Arg("str", "zeros", choices=PADDING_MODES,
                            doc="what the padding holds: zeros, a reflection, the edge "
                                "(replicate) or the other side (circular)"),
    }

    def groups(self, a, x):
        return x[0] if a.depthwise else a.groups

    def pointwise(self, a):
        return tuple(a.kernel) == (1, 1) and tuple(a.stride) == (1, 1) and a.groups == 1 \
            and not a.depthwise

    def depthwise(self, a, x):
        return bool(a.depthwise) or (isinstance(a.groups, int) and a.groups > 1
                                     and a.groups == x[0])

    def _check_padding_mode(self, a, x):
        """PyTorch pads reflect modes from inside the input: a reflection needs
        padding < size, a circular wrap padding <= size."""
        if a.padding_mode in ("zeros", "replicate"):
            return
        pads = padding_pairs(a, a.kernel, a.dilation)
        for n, (pb, pa), axis in zip(x[1:], pads, AXES):
            for p in (pb, pa):
                if not (isinstance(n, int) and isinstance(p, int)):
                    continue
                if (a.padding_mode == "reflect" and p >= n) or \
                        (a.padding_mode == "circular" and p > n):
                    rule = "smaller than" if a.padding_mode == "reflect" else "at most"
                    raise SpecError(f"padding_mode={a.padding_mode!r} needs a padding {rule} "
                                    f"the input along {axis}. Received: padding={p}, "
                                    f"{axis}={n}")

    def output_shape(self, a, x):
        cin, g = x[0], self.groups(a, x)
        if a.padding == "same" and any(s != 1 for s in a.stride):
            raise SpecError(f"padding='same' needs stride 1 (as in PyTorch). "
                            f"Received: stride={list(a.stride)}")
        for what, n in (("input channels", cin), ("output channels", a.out)):
            if isinstance(n, int) and isinstance(g, int) and n % g:
                raise SpecError(f"groups={g} must divide the {what}. "
                                f"Received: {what}={n}, groups={g}")
        self._check_padding_mode(a, x)
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

    def macs_formula(self, a, x, y):
        kh, kw = a.kernel
        f = sym.plain
        return f"({f(y[1])}*{f(y[2])}*{f(y[0])})*({f(kh)}*{f(kw)}*{f(self._fan_in(a, x))})"

    def cost(self, a, x, y):
        """Rated by the calibrated convolutions nearest in shape (kernel, stride,
        groups; the GEMM dims M = batch*Hout*Wout, N = Cout/groups, K =
        Cin/groups*kh*kw): a CPU conv (oneDNN) is no GEMM of fixed rate. A
        padding mode other than zeros pads a copy first."""
        kh, kw = a.kernel
        sh, sw = a.stride
        g = self.groups(a, x)
        cost = Cost("conv", conv=(kh, kw, sh, sw, x[0], a.out, y[1], y[2], g),
                    tensors=(kh * kw * self._fan_in(a, x) * a.out,) + ((a.out,) if a.bias else ()))
        if a.padding_mode != "zeros":
            pads = padding_pairs(a, a.kernel, a.dilation)
            padded = x[0] * sym.prod(sym.norm(n + pb + pa) for n, (pb, pa) in zip(x[1:], pads))
            return (Cost("copy", elements=padded), cost)
        return (cost,)

    def size_arithmetic(self, a, x):
        if a.padding == "same":
            return ["padding 'same' keeps the size at stride 1"]
        pads = (0, 0) if a.padding == "valid" else a.padding
        return sliding_arithmetic(x, a.kernel, a.stride, pads, a.dilation)

    def window(self, a, x):
        return effective_window(a.kernel, a.stride, a.dilation)

    def saved(self, a, x, y):
        pads = padding_pairs(a, a.kernel, a.dilation)
        if a.padding_mode == "zeros":
            if all(pb == pa for pb, pa in pads):
                return Saved(input=True)
            # 'same' with an even (dilated) kernel: PyTorch zero-pads a copy by the
            # difference (one more after), convolves that copy, and keeps it
            copy = x[0] * sym.prod(sym.norm(n + pa - pb) for n, (pb, pa) in zip(x[1:], pads))
            return Saved(extra=((sym.norm(copy), None),))
        # other modes pad first (F.pad), then convolve: conv keeps the padded copy;
        # reflection and replication pads keep their input too, a circular one not
        padded = x[0] * sym.prod(sym.norm(n + pb + pa) for n, (pb, pa) in zip(x[1:], pads))
        return Saved(input=a.padding_mode != "circular", extra=((sym.norm(padded), None),))

    def findings(self, a, x):
        return sliding_findings(a, x, a.kernel, a.stride, a.dilation)

    def macs_missed_by(self, a, x, y):
        if isinstance(torch_padding(a), str) and a.padding == "same":
            return {"fvcore": (self.macs(a, x, y),
                               "fvcore has no handler for aten::_convolution_mode (a conv "
                               "with padding='same' and an even kernel, padded one more after)")}
        return {}

    def build(self, a, x):
        from torch import nn
        return nn.Conv2d(x[0], a.out, tuple(a.kernel), tuple(a.stride), torch_padding(a),
                         tuple(a.dilation), self.groups(a, x), a.bias,
                         padding_mode=a.padding_mode)

    torch_modules = ("torch.nn.Conv2d",)   # from_torch maps these back

    def from_torch(self, call, m):
        """nn.Conv2d -> its conv row (groups = in_channels: depthwise)."""
        from .from_torch import pair, padding, require_chw, row
        require_chw(call, "Conv2d")
        args = dict(out=m.out_channels, kernel=pair(m.kernel_size), stride=pair(m.stride),
                    padding=padding(m.padding), dilation=pair(m.dilation),
                    bias=m.bias is not None, padding_mode=m.padding_mode)
        if m.groups > 1 and m.groups == m.in_channels:
            args["depthwise"] = True
        else:
            args["groups"] = m.groups
        return row("conv", **args)


@register
class ConvTable(Weighted, Kind):
    """LeNet-5's C3: each output map reads only a listed subset of the inputs."""
    name = "conv_table"
    pads_input = True
    im2col_copies = 1
    arg_examples = {"connections": (lambda x: [[0]], lambda x: [[i] for i in range(x[0])],
                                    lambda x: [list(range(x[0])), [x[0] - 1]] * 2)}
    torch_classes = ('PartialConv2d',)  # in conv_torch.py
    aliases = ("partial_conv",)
    primary = "connections"
    summary = "conv whose output map i reads only the input maps connections[i] (LeNet-5 C3)"
    flops_rule = "2 x MACs; MACs = Hout*Wout*kh*kw * (number of connections)"
    inputs = "chw"
    args = {
        "connections": Arg("table", doc="for each output map, the input maps it reads"),
        **CONV_WINDOW,
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

    def macs_formula(self, a, x, y):
        kh, kw = a.kernel
        f = sym.plain
        return f"({f(y[1])}*{f(y[2])})*({f(kh)}*{f(kw)})*{self.links(a)} connections"

    def cost(self, a, x, y):
        """One gather (index_select) and one single-map conv per output map."""
        kh, kw = a.kernel
        sh, sw = a.stride
        out = len(a.connections)
        fan = max(1, self.links(a) // out)
        return (Cost("copy", elements=self.links(a) * x[1] * x[2]),
                *(Cost("conv", conv=(kh, kw, sh, sw, fan, 1, y[1], y[2], 1),
                       tensors=(kh * kw * fan,)) for _ in range(out)),
                Cost("view", tensors=(out,) if a.bias else ()))

    def window(self, a, x):
        return effective_window(a.kernel, a.stride, self.dilation)

    def saved(self, a, x, y):
        # the builder gathers each output map's inputs (index_select) and convolves
        # them: every gathered copy is kept, with its int64 index
        return Saved(extra=((self.links(a) * x[1] * x[2], None),),
                     per_batch=((self.links(a), 8),))

    def findings(self, a, x):
        return sliding_findings(a, x, a.kernel, a.stride, self.dilation)

    def build(self, a, x):
        from .conv_torch import PartialConv2d
        return PartialConv2d(a.connections, tuple(a.kernel), tuple(a.stride),
                             torch_padding(a), a.bias)

    torch_modules = ("archcalc.layers.conv_torch.PartialConv2d",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import pair, padding, row
        connections, kernel, stride, pad, bias = m.init_args
        return row("conv_table", connections=[list(x) for x in connections],
                   kernel=pair(kernel), stride=pair(stride), padding=padding(pad), bias=bias)




def upsampled_receptive_field(rf, jump, kernel, stride):
    """A layer that upsamples by S: each output sees ceil(F/S) inputs and the
    jump divides by S (rounded down, at least 1: a sub-pixel jump is shown as 1)."""
    out_rf, out_jump = [], []
    for r, j, f, s in zip(rf, jump, kernel, stride):
        taps = sym.ceildiv(f, s)
        out_rf.append(sym.norm(r + (taps - 1) * j))
        out_jump.append(sym.smax(1, sym.floordiv(j, s)))
    return tuple(out_rf), tuple(out_jump)


@register
class ConvTranspose(Weighted, Kind):
    """Transposed ("de-") convolution, as in FCN and the segmentation lecture."""
    name = "conv_transpose"
    im2col_copies = 1   # col2im: the input's columns, kh*kw*C_out per input position
    bias_redundant_before_norm = True
    aliases = ("deconv", "convtranspose2d", "transposed_conv")
    primary = "out"
    summary = ("transposed conv: out = (N - 1)S - 2P + D(F - 1) + output_padding + 1")
    flops_rule = "2 x MACs; MACs = Cin*Hin*Win * (Cout/groups)*kh*kw (each input scattered)"
    inputs = "chw"
    args = {
        "out": Arg("int", min=1),
        "kernel": KERNEL,
        "stride": STRIDE,
        "padding": PADDING,
        "output_padding": Arg("pair", 0, min=0),
        "dilation": DILATION,
        "groups": Arg("int", 1, min=1),
        "bias": Arg("bool", True),
    }

    def output_shape(self, a, x):
        for what, n in (("input channels", x[0]), ("output channels", a.out)):
            if isinstance(n, int) and isinstance(a.groups, int) and n % a.groups:
                raise SpecError(f"groups={a.groups} must divide the {what}. "
                                f"Received: {what}={n}, groups={a.groups}")
        out = []
        for n, f, s, p, op, d, axis in zip(x[1:], a.kernel, a.stride, a.padding,
                                           a.output_padding, a.dilation, AXES):
            if isinstance(op, int) and isinstance(s, int) and isinstance(d, int) \
                    and op >= max(s, d):
                raise SpecError(f"output_padding must be smaller than the stride or the "
                                f"dilation (PyTorch's rule). Received: output_padding={op}, "
                                f"stride={s}, dilation={d}")
            o = sym.norm((n - 1) * s - 2 * p + d * (f - 1) + op + 1)
            if sym.known_positive(o) is False:
                raise SpecError(f"the output along {axis} would be {sym.fmt_int(o)}: "
                                f"padding {p} is too large")
            out.append(o)
        return (a.out, *out)

    def params(self, a, x):
        kh, kw = a.kernel
        return sym.norm(x[0] * sym.exact_div(a.out, a.groups) * kh * kw
                        + (a.out if a.bias else 0))

    def params_formula(self, a, x):
        kh, kw = a.kernel
        f = sym.plain
        return (f"({f(kh)}*{f(kw)}*{f(x[0])})*{f(sym.exact_div(a.out, a.groups))}"
                + (f" + {f(a.out)}" if a.bias else ""))

    def macs(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(sym.prod(x) * sym.exact_div(a.out, a.groups) * kh * kw)

    def macs_formula(self, a, x, y):
        kh, kw = a.kernel
        f = sym.plain
        return (f"({f(x[1])}*{f(x[2])}*{f(x[0])})*({f(kh)}*{f(kw)}*"
                f"{f(sym.exact_div(a.out, a.groups))})")

    def receptive_field(self, a, x, rf, jump):
        kernel = tuple(d * (f - 1) + 1 for f, d in zip(a.kernel, a.dilation))
        return upsampled_receptive_field(rf, jump, kernel, a.stride)

    def im2col_columns(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(kh * kw * y[0] * x[1] * x[2])

    def cost(self, a, x, y):
        """The backward (data) pass of a conv from the output to the input: rated
        as that conv (Cout in, Cin out, on the input's grid), the same MACs."""
        kh, kw = a.kernel
        return (Cost("conv", conv=(kh, kw, 1, 1, a.out, x[0], x[1], x[2], a.groups),
                     tensors=(self.params(a, x) - (a.out if a.bias else 0),)
                     + ((a.out,) if a.bias else ())),)

    def saved(self, a, x, y):
        return Saved(input=True)

    def build(self, a, x):
        from torch import nn
        return nn.ConvTranspose2d(x[0], a.out, tuple(a.kernel), tuple(a.stride),
                                  tuple(a.padding), tuple(a.output_padding), a.groups,
                                  a.bias, tuple(a.dilation))

    torch_modules = ("torch.nn.ConvTranspose2d",)   # from_torch maps these back

    def from_torch(self, call, m):
        """nn.ConvTranspose2d -> its row; an output_size given at the call has none."""
        from .from_torch import NoMapping, pair, require_chw, row
        require_chw(call, "ConvTranspose2d")
        if m.padding_mode != "zeros":
            raise NoMapping(f"ConvTranspose2d with padding_mode={m.padding_mode!r}")
        if call.args[1:] or call.kwargs:
            raise NoMapping("ConvTranspose2d called with an output_size")
        return row("conv_transpose", out=m.out_channels, kernel=pair(m.kernel_size),
                   stride=pair(m.stride), padding=pair(m.padding),
                   output_padding=pair(m.output_padding), dilation=pair(m.dilation),
                   groups=m.groups, bias=m.bias is not None)


@register
class LocallyConnected(Weighted, Kind):
    """Like conv, but every output position has its own weights (no sharing):
    the lecture's 32x32x3 input with 5x5 fields and 30 maps."""
    name = "local"
    pads_input = True
    im2col_copies = 2
    flop_counter_gap = ("its torch.einsum lowers to a broadcast multiply and sum, not a "
                        "counted matrix product, where a dimension is 1")
    torch_classes = ('LocallyConnected2d',)  # in conv_torch.py
    aliases = ("locally_connected",)
    primary = "out"
    summary = "locally connected (unshared weights): out maps, kernel, stride, padding"
    flops_rule = "2 x MACs; MACs = Cout*Hout*Wout * Cin*kh*kw (as conv)"
    inputs = "chw"
    args = {
        "out": Arg("int", min=1),
        "kernel": KERNEL,
        "stride": STRIDE,
        "padding": PADDING,
        "bias": Arg("bool", True, doc="one bias per output unit"),
    }
    dilation = (1, 1)

    def output_shape(self, a, x):
        return (a.out, *sliding_shape(self, a, x, a.kernel, a.stride, self.dilation))

    def params(self, a, x):
        kh, kw = a.kernel
        y = self.output_shape(a, x)
        units = sym.prod(y)
        return sym.norm(units * x[0] * kh * kw + (units if a.bias else 0))

    def params_formula(self, a, x):
        kh, kw = a.kernel
        _, h, w = self.output_shape(a, x)
        f = sym.plain
        units = f"({f(h)}*{f(w)}*{f(a.out)})"
        return f"{units}*({f(kh)}*{f(kw)}*{f(x[0])})" + (f" + {units}" if a.bias else "")

    def macs(self, a, x, y):
        kh, kw = a.kernel
        return sym.norm(sym.prod(y) * x[0] * kh * kw)

    def macs_formula(self, a, x, y):
        kh, kw = a.kernel
        f = sym.plain
        return f"({f(y[1])}*{f(y[2])}*{f(y[0])})*({f(kh)}*{f(kw)}*{f(x[0])})"

    def window(self, a, x):
        return effective_window(a.kernel, a.stride, self.dilation)

    def cost(self, a, x, y):
        """Unfold the patches (a copy), then one GEMM per output position: M =
        batch, N = Hout*Wout*Cout, K = Cin*kh*kw (no weight is shared)."""
        kh, kw = a.kernel
        patches = y[1] * y[2] * x[0] * kh * kw
        return (Cost("copy", elements=patches),
                Cost("linear", gemm=(1, sym.prod(y), x[0] * kh * kw),
                     tensors=(self.params(a, x),)))

    def saved(self, a, x, y):
        # the unfolded input patches: Cin*kh*kw per output position
        kh, kw = a.kernel
        return Saved(extra=((y[1] * y[2] * x[0] * kh * kw, None),))

    def findings(self, a, x):
        return sliding_findings(a, x, a.kernel, a.stride, self.dilation)

    def build(self, a, x):
        from .conv_torch import LocallyConnected2d
        y = self.output_shape(a, x)
        return LocallyConnected2d(x[0], a.out, (y[1], y[2]), tuple(a.kernel), tuple(a.stride),
                                  tuple(a.padding), a.bias)

    torch_modules = ("archcalc.layers.conv_torch.LocallyConnected2d",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import pair, row
        _, out, _, kernel, stride, padding, bias = m.init_args
        return row("local", out=out, kernel=pair(kernel), stride=pair(stride),
                   padding=pair(padding), bias=bias)
