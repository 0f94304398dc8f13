"""Selective kernel convolution (Li et al. 2019, SKNet), as timm's
SelectiveKernel: `paths` convolutions of one k x k kernel, path i dilated
(i+1) x `dilation` (a 3x3 and a 3x3 of dilation 2 for the paper's 3x3 and
5x5), each with batch norm and an activation, on the whole input or (`split_input`)
each on its own 1/paths of the channels; their sum pooled to a vector, a 1x1
conv to `attn` channels (batch norm, activation) and a 1x1 conv to paths x out;
a softmax across the paths, and the paths summed, each weighted by its
attention. The whole module is one row: the attention reads every path and
weighs each, which a chain of rows cannot say."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Kind, register
from .composite import Composite, between, make_divisible, part
from .se import SE_ACTIVATIONS


@register
class SelectiveKernel(Composite, Kind):
    name = "selective_kernel"
    torch_classes = ("SelectiveKernel",)  # in selective_kernel_torch.py
    aliases = ("sk_conv",)
    primary = "paths"
    summary = ("SKNet's selective kernel conv: paths of growing dilation, their sum pooled, "
               "two 1x1 convs, a softmax across the paths, their weighted sum")
    flops_rule = ("the parts' FLOPs (the paths' convs, batch norms and activations, the two "
                  "1x1 convs and the attention's batch norm, activation, softmax) + "
                  "paths*out*Ho*Wo (stack) + (paths-1)*out*Ho*Wo (sum) + out*Ho*Wo (pool) + "
                  "paths*out*Ho*Wo (weights) + (paths-1)*out*Ho*Wo (weighted sum)")
    inputs = "chw"
    args = {
        "paths": Arg("int", 2, min=1, doc="convolutions, path i dilated (i+1) x dilation"),
        "out": Arg("int", None, min=1, doc="output channels (default C)"),
        "kernel": Arg("int", 3, min=1, doc="each path's kernel (odd)"),
        "stride": Arg("int", 1, min=1),
        "dilation": Arg("int", 1, min=1, doc="the first path's; path i has (i+1) x it"),
        "groups": Arg("int", 1, min=1, doc="each path's conv groups"),
        "split_input": Arg("bool", True, doc="each path reads its own 1/paths of the channels"),
        "attn": Arg("int", None, min=1, doc="the attention's width (default timm's: out/16, "
                                             "a multiple of 8)"),
        "activation": Arg("str", "relu", choices=SE_ACTIVATIONS),
    }
    arg_examples = {"paths": [1, 2, 3], "groups": [1], "attn": [None, 4],
                    "kernel": [1, 3], "out": [None, 4, 6], "split_input": [False, True]}

    @staticmethod
    def widths(a, x):
        """(out, attn, each path's input channels)."""
        out = x[0] if a.out is None else a.out
        attn = a.attn if a.attn is not None else make_divisible(out / 16, 8)
        if a.kernel % 2 == 0:
            raise SpecError(f"selective_kernel: kernel must be odd. Received: kernel={a.kernel}")
        if not a.split_input:
            return out, attn, x[0]
        if isinstance(x[0], int) and x[0] % a.paths:
            raise SpecError(f"selective_kernel: split needs the channels to divide by paths. "
                            f"Received: C={x[0]}, paths={a.paths}")
        return out, attn, sym.floordiv(x[0], a.paths)

    @staticmethod
    def path_window(a, i):
        """(dilation, padding) of path i: timm's get_padding of its kernel."""
        d = (i + 1) * a.dilation
        return d, ((a.stride - 1) + d * (a.kernel - 1)) // 2

    def parts(self, a, x):
        out, attn, cin = self.widths(a, x)
        parts = []
        for i in range(a.paths):
            d, p = self.path_window(a, i)
            conv = part("conv", (cin, *x[1:]), out=out, kernel=(a.kernel,) * 2,
                        stride=(a.stride,) * 2, padding=(p, p), dilation=(d, d),
                        groups=a.groups, bias=False)
            parts += [conv, part("batch_norm", conv.y), part(a.activation, conv.y)]
        reduce = part("conv", (out, 1, 1), out=attn, kernel=(1, 1), bias=False)
        select = part("conv", reduce.y, out=sym.norm(a.paths * out), kernel=(1, 1), bias=False)
        return parts + [reduce, part("batch_norm", reduce.y), part(a.activation, reduce.y),
                        select, part("softmax", select.y)]

    def output_shape(self, a, x):
        ys = {p.y for p in self.parts(a, x)[:3 * a.paths]}
        if len(ys) != 1:
            raise SpecError(f"selective_kernel: the paths give different sizes {sorted(ys)}")
        return ys.pop()

    def between(self, a, x):
        n, k = sym.prod(self.output_shape(a, x)), a.paths
        return between(("copy", k * n), ("add", (k - 1) * n), ("global_avgpool", n),
                       ("mul", k * n), ("add", (k - 1) * n))

    def kept_between(self, a, x):
        # the weighted sum keeps the stacked paths (a copy of their outputs)
        return ((sym.norm(a.paths * sym.prod(self.output_shape(a, x))), None),)

    def window(self, a, x):
        d = a.paths * a.dilation
        return (d * (a.kernel - 1) + 1,) * 2, (a.stride,) * 2

    def build(self, a, x):
        from .split_attention import _torch_name
        from .selective_kernel_torch import SelectiveKernel as Module
        out, attn, _ = self.widths(a, x)
        return Module(x[0], out, a.paths, a.kernel, a.stride, a.dilation, a.groups,
                      a.split_input, attn, _torch_name(a.activation))

    torch_modules = ("archcalc.layers.selective_kernel_torch.SelectiveKernel",
                     "timm.layers.selective_kernel.SelectiveKernel")

    def from_torch(self, call, m):
        """archcalc's and timm's (the same submodules: paths.i.conv and .bn,
        attn.fc_reduce, .bn, .fc_select)."""
        from .from_torch import NoMapping, require_chw, row
        from .split_attention import _activation, _norms
        require_chw(call, "SelectiveKernel")
        first = m.paths[0].conv
        args = dict(paths=len(m.paths), out=first.out_channels, kernel=first.kernel_size[0],
                    stride=first.stride[0], dilation=first.dilation[0], groups=first.groups,
                    split_input=bool(m.split_input), attn=m.attn.fc_reduce.out_channels)
        acts = [_path_act(p) for p in m.paths] + [m.attn.act]
        if not (_norms(*(p.bn for p in m.paths), holding_act=hasattr(m.paths[0].bn, "act"))
                and _norms(m.attn.bn)):
            raise NoMapping("a SelectiveKernel without batch norms")
        args["activation"] = _activation(*acts)
        probe = self.read_args(args, {})
        for i, p in enumerate(m.paths):
            d, pad = self.path_window(probe, i)
            if (p.conv.kernel_size, p.conv.stride, p.conv.dilation, p.conv.padding,
                    p.conv.groups, p.conv.bias, p.conv.padding_mode) != \
                    ((args["kernel"],) * 2, (args["stride"],) * 2, (d, d), (pad, pad),
                     args["groups"], None, "zeros"):
                raise NoMapping(f"a SelectiveKernel whose path {i} is not a {args['kernel']}x"
                                f"{args['kernel']} conv of dilation {d}")
            if type(getattr(p, "aa", None)).__name__ not in ("Identity", "NoneType"):
                raise NoMapping(f"a SelectiveKernel path with a {type(p.aa).__name__}")
        if m.attn.fc_reduce.bias is not None or m.attn.fc_select.bias is not None:
            raise NoMapping("a SelectiveKernel attention with biases")
        return row("selective_kernel", **args)


def _path_act(p):
    """A path's activation: timm's BatchNormAct2d holds it (and a drop that
    must be an identity); archcalc's path holds it beside its bn."""
    from .from_torch import NoMapping
    drop = getattr(p.bn, "drop", None)
    if type(drop).__name__ not in ("Identity", "NoneType"):
        raise NoMapping(f"a SelectiveKernel path with a {type(drop).__name__}")
    return p.bn.act if hasattr(p.bn, "act") else p.act
