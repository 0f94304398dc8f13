"""Weight-standardized convolution (Qiao et al. 2019; Brock et al. 2021's
scaled form in NF-ResNets and NFNets): before each forward pass the weight of
every output channel is normalized to zero mean and unit variance over its
fan-in (Cin/groups * kh * kw), then convolved like a conv. The scaled form
multiplies the standardized weight by a learned gain per output channel and
gamma / sqrt(fan-in).

The standardization works on the weights, not on the input: it runs once per
forward pass whatever the batch, and FlopCounterMode counts only the
convolution (the MACs are the conv's)."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Saved, register
from .conv import Conv
from .norm import STATS_PER_ELEMENT

FP32 = 4


@register
class StdConv(Conv):
    name = "std_conv"
    aliases = ("ws_conv", "weight_standardized_conv")
    torch_classes = ("StdConv2d",)  # in std_conv_torch.py
    summary = ("conv whose weights are standardized per output channel before each forward "
               "(timm's StdConv2d); scaled: times a learned gain and gamma/sqrt(fan-in) "
               "(ScaledStdConv2d, NF-ResNet, NFNet)")
    flops_rule = ("2 x MACs as conv, + 5 per weight to standardize the weights (6 scaled), "
                  "once per forward pass (not per sample)")
    args = {
        **{k: v for k, v in Conv.args.items() if k != "padding_mode"},
        # F.conv2d is called with the padding as numbers: zeros only
        "padding_mode": Arg("str", "zeros", choices=("zeros",)),
        "eps": Arg("float", 1e-6, min=0.0),
        "scaled": Arg("bool", False, doc="a learned gain per output channel, and "
                                         "gamma/sqrt(fan-in) (ScaledStdConv2d)"),
        "gamma": Arg("float", 1.0, doc="the scaled form's gamma"),
    }

    def output_shape(self, a, x):
        y = super().output_shape(a, x)
        kh, kw = a.kernel
        fan_in = sym.norm(kh * kw * self._fan_in(a, x))
        if a.eps <= 0:
            from ..errors import SpecError
            raise SpecError("std_conv: eps must be positive (the standardization divides by "
                            f"sqrt(variance + eps); PyTorch refuses 0). Received: eps={a.eps}")
        if isinstance(fan_in, int) and fan_in == 1:
            from ..errors import SpecError
            raise SpecError("std_conv: each output channel has a single weight (fan-in "
                            "Cin/groups*kh*kw = 1): standardizing it gives 0 (PyTorch refuses "
                            f"it). Received: kernel={list(a.kernel)}, input channels per "
                            f"group={sym.plain(self._fan_in(a, x))}")
        return y

    def weights(self, a, x):
        kh, kw = a.kernel
        return sym.norm(kh * kw * self._fan_in(a, x) * a.out)

    def params(self, a, x):
        return sym.norm(super().params(a, x) + (a.out if a.scaled else 0))

    def params_formula(self, a, x):
        return super().params_formula(a, x) + (f" + {sym.plain(a.out)}" if a.scaled else "")

    def flops(self, a, x, y):
        per_weight = STATS_PER_ELEMENT + int(a.scaled)
        return sym.norm(2 * self.macs(a, x, y) + per_weight * self.weights(a, x))

    def backward_flops(self, a, x, y, needs_input_grad=True):
        conv = 2 * self.macs(a, x, y) * (2 if needs_input_grad else 1)
        return sym.norm(conv + (STATS_PER_ELEMENT + int(a.scaled)) * self.weights(a, x))

    def cost(self, a, x, y):
        """The conv's, after a batch norm over the weights (out x fan-in), in
        training mode: its statistics computed each time."""
        return (Cost("batch_norm", elements=self.weights(a, x)),) + super().cost(a, x, y)

    def saved(self, a, x, y):
        # the conv keeps its input and the standardized weight; the weights'
        # batch norm a mean and 1/std per output channel (fp32), and the
        # scaled form the gain times the scale it multiplies by
        kept = ((self.weights(a, x) + (a.out if a.scaled else 0), None), (2 * a.out, FP32))
        return Saved(input=True, per_batch=kept)

    def build(self, a, x):
        from .std_conv_torch import StdConv2d
        from .window import torch_padding
        return StdConv2d(x[0], a.out, tuple(a.kernel), tuple(a.stride), torch_padding(a),
                         tuple(a.dilation), self.groups(a, x), a.bias, a.eps, a.scaled,
                         a.gamma)

    torch_modules = ("archcalc.layers.std_conv_torch.StdConv2d", "timm.layers.StdConv2d",
                     "timm.layers.ScaledStdConv2d", "timm.layers.StdConv2dSame",
                     "timm.layers.ScaledStdConv2dSame")

    def from_torch(self, call, m):
        """archcalc's StdConv2d, timm's StdConv2d and ScaledStdConv2d; their
        *Same forms pad as TensorFlow's 'same' does first (a pad row)."""
        from .from_torch import NoMapping, pair, padding, require_chw, row
        require_chw(call, type(m).__name__)
        pad = []
        if getattr(m, "same_pad", False):
            from .pad import pad_row, same_padding
            (top, bottom), (left, right) = (
                same_padding(call.x[i + 1], m.kernel_size[i], m.stride[i], m.dilation[i])
                for i in (0, 1))
            pad = pad_row(call, (left, right, top, bottom))
        if m.padding_mode != "zeros":
            raise NoMapping(f"{type(m).__name__} with padding_mode {m.padding_mode!r}")
        scaled = hasattr(m, "gain")
        args = dict(out=m.out_channels, kernel=pair(m.kernel_size), stride=pair(m.stride),
                    padding=padding(m.padding), dilation=pair(m.dilation),
                    bias=m.bias is not None, eps=float(m.eps), scaled=scaled)
        if scaled and isinstance(getattr(m, "gamma", None), float):    # archcalc's module
            args["gamma"] = m.gamma
        elif scaled:     # timm's keeps gamma / sqrt(fan-in) only
            gamma = float(m.scale) * m.weight[0].numel() ** 0.5
            args["gamma"] = float(f"{gamma:.12g}")
        if m.groups > 1 and m.groups == m.in_channels:
            args["depthwise"] = True
        else:
            args["groups"] = m.groups
        return pad + row("std_conv", **args)
