"""The gated CNN block (Dauphin et al. 2017; MambaOut, Yu & Wang 2024), as
timm's mambaout GatedConvBlock on a channels-last map (the importer's tokens,
N = H*W positions of C): a layer norm, an fc to a gate g and a value (hidden
each); the value's last `conv_channels` channels through a depthwise k x k conv over
the H x W map (with a bias); act(g) times the value, an fc back to C, a layer
scale (optional), added to the block's input. One row: the gate multiplies
a value whose channels are split between the fc and the conv, and the conv
needs the map's H x W, which the tokens do not say (given as height, width)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Kind, register
from .composite import Composite, between, part
from .se import SE_ACTIVATIONS


@register
class GatedConvBlock(Composite, Kind):
    name = "gated_conv_block"
    torch_classes = ("GatedConvBlock",)  # in gated_conv_torch.py
    aliases = ("gated_cnn_block",)
    primary = "hidden"
    summary = ("MambaOut's gated CNN block on H*W x C tokens: norm, fc to gate and value, a "
               "depthwise conv on part of the value, act(gate) * value, fc, residual add")
    flops_rule = ("the parts' FLOPs (layer norm, the two fcs, the depthwise conv, the "
                  "activation, the layer scale) + N*hidden (the gate) + N*C (the residual add)")
    inputs = "tokens"
    args = {
        "height": Arg("int", min=1, doc="the map's height (N = height x width)"),
        "width": Arg("int", min=1, doc="the map's width"),
        "hidden": Arg("int", None, min=1, doc="gate and value width (default int(8/3 C))"),
        "conv_channels": Arg("int", None, min=1,
                             doc="the value's channels the conv mixes (default C)"),
        "kernel": Arg("int", 7, min=1, doc="the depthwise conv's kernel (odd)"),
        "activation": Arg("str", "gelu", choices=SE_ACTIVATIONS),
        "eps": Arg("float", 1e-6, min=0.0, doc="the layer norm's eps"),
        "scaled": Arg("bool", False, doc="a layer scale (one learned scale per channel) "
                                         "before the add"),
    }
    arg_examples = {"height": [lambda x: x[0], 1], "width": [1], "hidden": [None, 4, 8],
                    "conv_channels": [None, 2], "kernel": [1, 3]}

    def widths(self, a, x):
        n, c = x
        hidden = a.hidden if a.hidden is not None else int(8 / 3 * c) if isinstance(c, int) \
            else None
        conv = c if a.conv_channels is None else a.conv_channels
        if hidden is None:
            raise SpecError("gated_conv_block: give hidden where C is a variable")
        if isinstance(n, int) and n != a.height * a.width:
            raise SpecError(f"gated_conv_block: the tokens are not the map's positions. "
                            f"Received: N={n}, height={a.height}, width={a.width}")
        if isinstance(conv, int) and conv > hidden or a.kernel % 2 == 0:
            raise SpecError(f"gated_conv_block: conv_channels={conv} must be at most "
                            f"hidden={hidden}, "
                            f"the kernel odd (kernel={a.kernel})")
        return hidden, conv

    def parts(self, a, x):
        n, c = x
        hidden, conv = self.widths(a, x)
        parts = [part("layer_norm", x, eps=a.eps), part("fc", x, out=sym.norm(2 * hidden)),
                 part(a.activation, (n, hidden))]
        k = a.kernel
        parts.append(part("conv", (conv, a.height, a.width), out=conv, kernel=(k, k),
                          padding=(k // 2, k // 2), groups=conv))
        parts.append(part("fc", (n, hidden), out=c))
        return parts + ([part("layer_scale", x)] if a.scaled else [])

    def output_shape(self, a, x):
        self.parts(a, x)
        return tuple(x)

    def between(self, a, x):
        hidden, conv = self.widths(a, x)
        n = x[0]
        return between(("copy", 2 * n * conv + n * hidden), ("mul", n * hidden),
                       ("add", sym.prod(x)))

    def kept_between(self, a, x):
        hidden, _ = self.widths(a, x)
        return ((sym.norm(2 * x[0] * hidden), None),)   # the gate keeps act(g) and the value

    def window(self, a, x):
        return (a.kernel, a.kernel), (1, 1)

    def build(self, a, x):
        from .gated_conv_torch import GatedConvBlock as Module
        from .split_attention import _torch_name
        hidden, conv = self.widths(a, x)
        return Module(x[1], a.height, a.width, hidden, conv, a.kernel, _torch_name(a.activation),
                      a.eps, a.scaled)

    torch_modules = ("archcalc.layers.gated_conv_torch.GatedConvBlock",
                     "timm.models.mambaout.GatedConvBlock")

    def from_torch(self, call, m):
        """archcalc's and timm's (norm, fc1, conv, fc2, ls); the map's size
        from the call's channels-last input."""
        from .from_torch import NoMapping, row
        from .split_attention import _activation
        xt = tuple(call.x_torch)
        if len(xt) == 2 and hasattr(m, "height"):       # archcalc's, on the tokens
            xt = (m.height, m.width, xt[1])
        if len(xt) != 3 or tuple(call.x) != (xt[0] * xt[1], xt[2]):
            raise NoMapping(f"a GatedConvBlock on a {list(xt)} input (it takes H x W x C)")
        h, w, _ = xt
        hidden, gate, conv = m.split_indices[0], m.split_indices[1], m.split_indices[2]
        norm, k = m.norm, m.conv.kernel_size[0]
        if type(norm).__name__ != "LayerNorm" or not norm.elementwise_affine or \
                norm.bias is None or m.fc1.bias is None or m.fc2.bias is None or \
                gate + conv != hidden or m.fc1.out_features != 2 * hidden or \
                (m.conv.groups, m.conv.kernel_size, m.conv.padding, m.conv.stride) != \
                (conv, (k, k), (k // 2, k // 2), (1, 1)) or m.conv.bias is None:
            raise NoMapping("a GatedConvBlock other than timm's (norm, fc1, depthwise conv, fc2)")
        ls = type(m.ls).__name__
        drop = type(getattr(m, "drop_path", None)).__name__
        if ls not in ("Identity", "LayerScale") or drop not in ("Identity", "NoneType") or \
                getattr(m.ls, "inplace", False):
            raise NoMapping(f"a GatedConvBlock with {ls} and {drop}")
        args = dict(height=h, width=w, hidden=hidden, conv_channels=conv, kernel=k,
                    activation=_activation(m.act), eps=float(norm.eps))
        if ls == "LayerScale":
            args["scaled"] = True
        return row("gated_conv_block", **args)
