"""Split attention (Zhang et al. 2020, ResNeSt), as timm's SplitAttn: one
grouped k x k conv gives `radix` splits of `out` channels in each of `groups`
cardinal groups (batch norm, activation); the splits summed, a global average
pool, a grouped 1x1 conv to `attn` channels (batch norm, activation) and a
grouped 1x1 conv back to radix x out; a softmax across the splits (the r-Softmax;
a sigmoid at radix 1), and the splits summed, each weighted by its attention.
The whole module is one row: the attention reads all the splits, and its
weights multiply them one by one, which a chain of rows cannot say."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Kind, register
from .composite import Composite, between, make_divisible, part
from .se import SE_ACTIVATIONS
from .window import DILATION, KERNEL, effective_window


@register
class SplitAttention(Composite, Kind):
    name = "split_attention"
    torch_classes = ("SplitAttention",)  # in split_attention_torch.py
    aliases = ("splat", "split_attn")
    primary = "radix"
    summary = ("ResNeSt's split attention: a grouped conv to radix splits, their sum pooled, "
               "two grouped 1x1 convs, a softmax across the splits, their weighted sum")
    flops_rule = ("the parts' FLOPs (conv, batch norms, activations, the two 1x1 convs, "
                  "the softmax) + (radix-1)*out*Ho*Wo (the splits' sum) + out*Ho*Wo (pool) + "
                  "radix*out*Ho*Wo (weights) + (radix-1)*out*Ho*Wo (weighted sum)")
    inputs = "chw"
    args = {
        "radix": Arg("int", 2, min=1, doc="splits per cardinal group (1: a sigmoid gate)"),
        "out": Arg("int", None, min=1, doc="output channels (default C)"),
        "kernel": Arg("pair", 3, min=1, doc=KERNEL.doc),
        "stride": Arg("pair", 1, min=1),
        "padding": Arg("pair", None, min=0, doc="default: kernel // 2 (timm's)"),
        "dilation": DILATION,
        "groups": Arg("int", 1, min=1, doc="cardinal groups (the conv has groups x radix)"),
        "attn": Arg("int", None, min=1, doc="the attention's width (default timm's: C*radix/4, "
                                             "a multiple of 8, at least 32)"),
        "bias": Arg("bool", False, doc="the k x k conv's bias"),
        "norm": Arg("bool", True, doc="batch norms after the conv and the first 1x1 conv"),
        "activation": Arg("str", "relu", choices=SE_ACTIVATIONS),
    }
    arg_examples = {"groups": [1, 2], "radix": [1, 2, 3], "attn": [None, 4, 6],
                    "out": [None, 4, 6]}

    @staticmethod
    def widths(a, x):
        """(out, attn)."""
        out = x[0] if a.out is None else a.out
        attn = a.attn if a.attn is not None else make_divisible(x[0] * a.radix * 0.25, 8, 32)
        return out, attn

    def parts(self, a, x):
        out, attn = self.widths(a, x)
        r, g = a.radix, a.groups
        if any(isinstance(n, int) and n % g for n in (out, attn)):
            raise SpecError(f"split_attention: groups={g} must divide out and attn. "
                            f"Received: out={out}, attn={attn}")
        padding = a.padding if a.padding is not None else tuple(k // 2 for k in a.kernel)
        conv = part("conv", x, out=sym.norm(r * out), kernel=a.kernel, stride=a.stride,
                    padding=padding, dilation=a.dilation, groups=g * r, bias=a.bias)
        parts = [conv]
        parts += [part("batch_norm", conv.y)] if a.norm else []
        parts.append(part(a.activation, conv.y))
        fc1 = part("conv", (out, 1, 1), out=attn, kernel=(1, 1), groups=g, bias=True)
        parts.append(fc1)
        parts += [part("batch_norm", fc1.y)] if a.norm else []
        parts.append(part(a.activation, fc1.y))
        fc2 = part("conv", fc1.y, out=sym.norm(r * out), kernel=(1, 1), groups=g, bias=True)
        parts += [fc2, part("softmax" if r > 1 else "sigmoid", fc2.y)]
        return parts

    def output_shape(self, a, x):
        out, _ = self.widths(a, x)
        return (out, *self.parts(a, x)[0].y[1:])

    def between(self, a, x):
        out, r = self.widths(a, x)[0], a.radix
        n = sym.prod((out, *self.parts(a, x)[0].y[1:]))
        return between(("add", (r - 1) * n), ("global_avgpool", n), ("mul", r * n),
                       ("add", (r - 1) * n))

    def kept_between(self, a, x):
        # the weighted sum keeps the splits (the activation's output, kept
        # already) and the attention weights (the softmax's output, kept too)
        return ()

    def window(self, a, x):
        return effective_window(a.kernel, a.stride, a.dilation)

    def build(self, a, x):
        from .split_attention_torch import SplitAttention as Module
        c = self.parts(a, x)[0].a
        out, attn = self.widths(a, x)
        return Module(x[0], out, tuple(a.kernel), tuple(a.stride), tuple(c.padding),
                      tuple(a.dilation), a.groups, a.radix, attn, a.bias, a.norm,
                      _torch_name(a.activation))

    torch_modules = ("archcalc.layers.split_attention_torch.SplitAttention",
                     "timm.layers.split_attn.SplitAttn")

    def from_torch(self, call, m):
        """archcalc's and timm's (the same submodules: conv, bn0, act0, fc1,
        bn1, act1, fc2)."""
        from .from_torch import NoMapping, pair, require_chw, row
        require_chw(call, "SplitAttn")
        norm = _norms(m.bn0, m.bn1)
        act = _activation(m.act0, m.act1)
        if type(getattr(m, "drop", None)).__name__ not in ("Identity", "NoneType"):
            raise NoMapping(f"a SplitAttn with a {type(m.drop).__name__} inside")
        conv, radix = m.conv, m.radix
        g = m.fc1.groups
        if conv.groups != g * radix or m.fc2.groups != g or conv.padding_mode != "zeros" \
                or m.fc1.bias is None or m.fc2.bias is None or isinstance(conv.padding, str):
            raise NoMapping("a SplitAttn whose convs are not grouped as radix x groups")
        if getattr(getattr(m, "rsoftmax", None), "cardinality", g) != g:
            raise NoMapping("a SplitAttn whose r-softmax groups differ from its convs'")
        args = dict(radix=radix, out=m.fc1.in_channels, kernel=pair(conv.kernel_size),
                    stride=pair(conv.stride), padding=pair(conv.padding),
                    dilation=pair(conv.dilation), groups=g, attn=m.fc1.out_channels,
                    bias=conv.bias is not None, norm=norm, activation=act)
        return row("split_attention", **args)


def _torch_name(activation):
    from .base import lookup
    return lookup(activation).torch_name


def _norms(*norms, holding_act=False) -> bool:
    """True where each is a batch norm of torch.nn's defaults (``holding_act``:
    timm's BatchNormAct2d, which runs an activation after), False where each
    is an identity; anything else has no mapping."""
    from .from_torch import NoMapping
    kinds = {type(n).__name__ for n in norms}
    if kinds == {"Identity"}:
        return False
    if kinds != {"BatchNormAct2d" if holding_act else "BatchNorm2d"} or any(
            (n.eps, n.momentum, n.affine, n.track_running_stats) != (1e-5, 0.1, True, True)
            for n in norms):
        raise NoMapping(f"norms {sorted(kinds)} other than batch norms of torch's defaults")
    return True


def _activation(*acts) -> str:
    """The one elementwise kind these torch.nn activations all are."""
    from .from_torch import NoMapping
    from .se import _kind_of_module
    found = {_kind_of_module(act) for act in acts}
    if len(found) != 1 or None in found or next(iter(found)) not in SE_ACTIVATIONS:
        raise NoMapping(f"activations {sorted(type(act).__name__ for act in acts)}")
    return found.pop()
