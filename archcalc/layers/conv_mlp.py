"""VGG's classifier as convolutions (timm's vgg ConvMlp, its pre-logits): a
k x k conv of the whole feature map (VGG's first fc, 512*7*7 -> 4096, kept
as a conv so the net runs on any input size), an activation, dropout, a 1x1
conv (the second fc) and an activation. A map smaller than k x k is first
average-pooled up to k (timm's forward). One row whose figures are its parts'
(conv, activation, dropout, conv, activation), with timm's submodule names
(fc1, act1, drop, fc2, act2): fx cannot trace the forward's test of the
map's size, so the importer maps the module whole."""
from __future__ import annotations

from .base import Arg, Kind, register
from .composite import Composite, part
from .se import SE_ACTIVATIONS


@register
class ConvMlp(Composite, Kind):
    name = "conv_mlp"
    torch_classes = ("ConvMlp",)  # in conv_mlp_torch.py
    primary = "out"
    summary = ("VGG's conv classifier (timm's ConvMlp): k x k conv, activation, dropout, 1x1 "
               "conv, activation")
    flops_rule = "the parts' FLOPs: the two convs (2 x MACs each), the two activations"
    inputs = "chw"
    args = {
        "out": Arg("int", min=1, doc="output channels (VGG's 4096)"),
        "hidden": Arg("int", None, min=1, doc="the first conv's channels (default out)"),
        "kernel": Arg("int", 7, min=1, doc="the first conv's kernel (the map it covers)"),
        "activation": Arg("str", "relu", choices=SE_ACTIVATIONS),
        "p": Arg("float", 0.2, min=0.0, max=1.0, doc="the dropout's probability"),
    }

    def parts(self, a, x):
        k = a.kernel
        parts = []
        if any(isinstance(n, int) and n < k for n in x[1:]):   # timm's forward pools up
            size = tuple(max(k, n) for n in x[1:])
            parts.append(part("adaptive_avgpool", x, size=size))
        fc1 = part("conv", parts[-1].y if parts else x, out=a.hidden or a.out,
                   kernel=(k, k), padding=(0, 0))
        fc2 = part("conv", fc1.y, out=a.out, kernel=(1, 1), padding=(0, 0))
        return parts + [fc1, part(a.activation, fc1.y), part("dropout", fc1.y, p=a.p),
                        fc2, part(a.activation, fc2.y)]

    def output_shape(self, a, x):
        return self.parts(a, x)[-1].y

    def between(self, a, x):
        return ()

    def window(self, a, x):
        return (a.kernel, a.kernel), (1, 1)

    def build(self, a, x):
        from .conv_mlp_torch import ConvMlp as Module
        from .split_attention import _torch_name
        return Module(x[0], a.out, a.kernel, a.hidden or a.out, a.p, _torch_name(a.activation))

    torch_modules = ("archcalc.layers.conv_mlp_torch.ConvMlp", "timm.models.vgg.ConvMlp")

    def from_torch(self, call, m):
        """archcalc's and timm's (fc1, act1, drop, fc2, act2)."""
        from .from_torch import NoMapping, require_chw, row
        from .split_attention import _activation
        require_chw(call, "ConvMlp")
        fc1, fc2 = m.fc1, m.fc2
        k = fc1.kernel_size[0]
        if any(type(c).__name__ != "Conv2d" for c in (fc1, fc2)) or \
                (fc1.kernel_size, fc1.stride, fc1.padding, fc1.dilation, fc1.groups) != \
                ((k, k), (1, 1), (0, 0), (1, 1), 1) or fc1.bias is None or \
                (fc2.kernel_size, fc2.stride, fc2.padding, fc2.groups) != \
                ((1, 1), (1, 1), (0, 0), 1) or fc2.bias is None or \
                getattr(m, "input_kernel_size", k) != k:
            raise NoMapping("a ConvMlp whose convs are not a k x k and a 1x1 conv with biases")
        if type(m.drop).__name__ != "Dropout":
            raise NoMapping(f"a ConvMlp with a {type(m.drop).__name__}")
        args = dict(out=fc2.out_channels, kernel=k, activation=_activation(m.act1, m.act2),
                    p=float(m.drop.p))
        if fc1.out_channels != fc2.out_channels:
            args["hidden"] = fc1.out_channels
        return row("conv_mlp", **args)
