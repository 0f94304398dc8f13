"""Squeeze-and-excitation (Hu et al. 2017), as torchvision.ops.SqueezeExcitation:
global average pool, 1x1 conv (an fc) to the squeeze width, an activation,
1x1 conv back to C, a gate, and the input rescaled channel by channel.

The variants of torchvision's classification models are arguments: the inner
activation (ReLU in SE-ResNet, MobileNetV3 and RegNet; SiLU in EfficientNet),
the gate (sigmoid; hardsigmoid in MobileNetV3) and the width: C / reduction,
or the squeeze channels given outright (MobileNetV3's make_divisible(C/4, 8),
EfficientNet's block input / 4).
"""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .activation import Elementwise
from .base import Arg, Cost, Kind, Saved, kinds, lookup, register

# inner activations: every elementwise activation without learned parameters
# (softmax is a normalization, not one), in registration order
SE_ACTIVATIONS = tuple(kind.name for kind in kinds().values()
                       if isinstance(kind, Elementwise) and kind.nonlinear and not kind.learned)
SE_GATES = ("sigmoid", "hardsigmoid")


@register
class SqueezeExcitation(Kind):
    name = "se"
    torch_classes = ('SqueezeExcitation',)  # in se_torch.py
    aliases = ("squeeze_excitation",)
    primary = "reduction"
    summary = ("squeeze-and-excitation: x * gate(fc(act(fc(gap(x))))), squeeze = C / reduction "
               "or given; activation relu|silu|..., gate sigmoid|hardsigmoid")
    flops_rule = ("2 x MACs (the two 1x1 convs) + H*W*C (pool) + the activation's rule on "
                  "the squeeze channels + the gate's rule on C + H*W*C (rescale)")
    inputs = "chw"
    args = {
        "reduction": Arg("int", None, min=1, doc="squeeze = C // reduction (default 16)"),
        "squeeze": Arg("int", None, min=1, doc="squeeze channels, instead of a reduction"),
        "activation": Arg("str", "relu", choices=SE_ACTIVATIONS),
        "gate": Arg("str", "sigmoid", choices=SE_GATES),
    }
    DEFAULT_REDUCTION = 16

    def squeeze(self, a, x, check: bool = True):
        if a.squeeze is not None:
            if a.reduction is not None:
                raise SpecError("se takes one of reduction or squeeze (the width, two ways). "
                                f"Received: reduction={a.reduction}, squeeze={a.squeeze}")
            return a.squeeze
        s = sym.floordiv(x[0], a.reduction or self.DEFAULT_REDUCTION)
        if check and isinstance(s, int) and s < 1:
            raise SpecError(f"C // reduction = {x[0]} // {a.reduction} = 0 squeeze channels; "
                            "use a smaller reduction or give squeeze")
        return s

    def output_shape(self, a, x):
        self.squeeze(a, x)
        return x

    def _inner(self, a):
        act, gate = lookup(a.activation), lookup(a.gate)
        return (act, act.read_args({}, {})), (gate, gate.read_args({}, {}))

    def params(self, a, x):
        c, s = x[0], self.squeeze(a, x)
        return sym.norm(2 * c * s + s + c)

    def params_formula(self, a, x):
        c, s = sym.plain(x[0]), sym.plain(self.squeeze(a, x))
        return f"({c}*{s} + {s}) + ({s}*{c} + {c})"

    def macs(self, a, x, y):
        return sym.norm(2 * x[0] * self.squeeze(a, x))

    def macs_formula(self, a, x, y):
        c, s = sym.plain(x[0]), sym.plain(self.squeeze(a, x))
        return f"{c}*{s} + {s}*{c}"

    def flops(self, a, x, y):
        c, s = x[0], self.squeeze(a, x)
        (act, act_args), (gate, gate_args) = self._inner(a)
        return sym.norm(2 * self.macs(a, x, y) + 2 * sym.prod(x)
                        + act.flops(act_args, (s, 1, 1), (s, 1, 1))
                        + gate.flops(gate_args, (c, 1, 1), (c, 1, 1)))

    def cost(self, a, x, y):
        """A global pool, two 1x1 convs on a 1 x 1 map (tiny GEMMs), the two
        activations, and the rescale of the input by the gate."""
        c, s = x[0], self.squeeze(a, x)
        (act, act_args), (gate, gate_args) = self._inner(a)
        return (Cost("global_avgpool", elements=sym.prod(x)),
                Cost("conv", conv=(1, 1, 1, 1, c, s, 1, 1, 1), tensors=(c * s, s)),
                *act.cost(act_args, (s, 1, 1), (s, 1, 1)),
                Cost("conv", conv=(1, 1, 1, 1, s, c, 1, 1, 1), tensors=(s * c, c)),
                *gate.cost(gate_args, (c, 1, 1), (c, 1, 1)),
                Cost("mul", elements=sym.prod(x)))

    def saved(self, a, x, y):
        # the pool is a mean (keeps nothing); the rescale keeps x and the gate;
        # fc1 keeps the pooled vector, fc2 the activation's output; an activation
        # or gate whose backward needs its input keeps that too (fc1's or fc2's output)
        c, s = x[0], self.squeeze(a, x, check=False)  # also asked with a dummy shape
        (act, _), (gate, _) = self._inner(a)
        extra = [(c, None), (s, None), (c, None)]
        if act.keeps == "input":
            extra.append((s, None))
        if gate.keeps == "input":
            extra.append((c, None))
        return Saved(input=True, extra=tuple(extra))

    def build(self, a, x):
        from .se_torch import SqueezeExcitation as Module
        return Module(x[0], self.squeeze(a, x), lookup(a.activation).torch_name,
                      lookup(a.gate).torch_name)

    torch_modules = ("archcalc.layers.se_torch.SqueezeExcitation",
                     "torchvision.ops.misc.SqueezeExcitation")   # from_torch reads them

    def from_torch(self, call, m):
        """archcalc's and torchvision's SqueezeExcitation (the same submodules):
        the activation and the gate are the kinds whose torch module they are."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "squeeze-and-excitation")
        act, gate = (_kind_of_module(f) for f in (m.activation, m.scale_activation))
        if act not in SE_ACTIVATIONS or gate not in SE_GATES:
            raise NoMapping(f"squeeze-and-excitation with {type(m.activation).__name__} and "
                            f"{type(m.scale_activation).__name__}")
        if m.fc1.bias is None or m.fc2.bias is None:
            raise NoMapping("squeeze-and-excitation without biases")
        return row("se", squeeze=m.fc1.out_channels, activation=act, gate=gate)


def _kind_of_module(module):
    """The elementwise kind whose torch.nn class this module is, or None."""
    cls = type(module)
    if not cls.__module__.startswith("torch.nn"):
        return None
    return next((k.name for k in kinds().values()
                 if isinstance(k, Elementwise) and k.torch_name == cls.__name__), None)


@register
class EfficientChannelAttention(Kind):
    """ECA (Wang et al. 2020, ECA-Net), as timm's EcaModule: a global average
    pool, a 1-d convolution of k taps across the channels (no bias, zero
    padding keeps C), a sigmoid, and the input rescaled channel by channel.
    SE's two fcs become k weights: a kernel of 3 on 256 channels is 3 params
    where SE (reduction 16) has 8,464."""
    name = "eca"
    torch_classes = ("EfficientChannelAttention",)  # in se_torch.py
    aliases = ("efficient_channel_attention",)
    primary = "kernel"
    summary = "efficient channel attention: x * sigmoid(conv1d_k(gap(x)) across channels)"
    flops_rule = "2 x MACs (the conv1d: C*k) + H*W*C (pool) + the sigmoid on C + H*W*C (rescale)"
    inputs = "chw"
    args = {"kernel": Arg("int", 3, min=1, doc="taps of the 1-d conv across channels (odd)")}

    def output_shape(self, a, x):
        if a.kernel % 2 == 0:
            raise SpecError(f"eca: kernel must be odd (its zero padding (k-1)/2 keeps the "
                            f"channels). Received: kernel={a.kernel}")
        return x

    def params(self, a, x):
        return a.kernel

    def params_formula(self, a, x):
        return f"{a.kernel}"

    def macs(self, a, x, y):
        return sym.norm(x[0] * a.kernel)

    def macs_formula(self, a, x, y):
        return f"{sym.plain(x[0])}*{a.kernel}"

    def flops(self, a, x, y):
        gate = lookup("sigmoid")
        c = x[0]
        return sym.norm(2 * self.macs(a, x, y) + 2 * sym.prod(x)
                        + gate.flops(gate.read_args({}, {}), (c, 1, 1), (c, 1, 1)))

    def cost(self, a, x, y):
        """A global pool, a one-channel conv of 1 x k over a 1 x C row, the
        sigmoid on C, and the rescale of the input by the gate."""
        c = x[0]
        gate = lookup("sigmoid")
        return (Cost("global_avgpool", elements=sym.prod(x)),
                Cost("conv", conv=(1, a.kernel, 1, 1, 1, 1, 1, c, 1), tensors=(a.kernel,)),
                *gate.cost(gate.read_args({}, {}), (c, 1, 1), (c, 1, 1)),
                Cost("mul", elements=sym.prod(x)))

    def saved(self, a, x, y):
        # the pool is a mean (keeps nothing); the conv keeps the pooled row (C);
        # the sigmoid keeps its output (C), which the rescale keeps too, with x
        c = x[0]
        return Saved(input=True, extra=((c, None), (c, None)))

    def build(self, a, x):
        from .se_torch import EfficientChannelAttention as Module
        return Module(a.kernel)

    torch_modules = ("archcalc.layers.se_torch.EfficientChannelAttention",
                     "timm.layers.eca.EcaModule")   # the same forward and state dict

    def from_torch(self, call, m):
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "eca")
        # timm's EcaModule has the same conv and gate; its options outside the
        # paper (an mlp of two convs, a conv bias with an activation, another
        # gate) are refused, not counted as ECA
        if getattr(m, "conv2", None) is not None or m.conv.bias is not None:
            raise NoMapping("an EcaModule with use_mlp or act_layer (a conv bias)")
        if type(m.gate).__name__ != "Sigmoid":
            raise NoMapping(f"an EcaModule gated by {type(m.gate).__name__}, not a sigmoid")
        (kernel,) = m.conv.kernel_size
        if m.conv.padding != ((kernel - 1) // 2,):
            raise NoMapping(f"an EcaModule whose conv pads {m.conv.padding}")
        return row("eca", kernel=kernel)
