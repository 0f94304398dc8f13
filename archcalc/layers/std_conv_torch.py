"""PyTorch modules of the kinds in ``std_conv.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class StdConv2d(nn.Conv2d):
    """A conv whose weights are standardized per output channel at each
    forward (a batch norm over out x fan-in in training mode, as timm's
    StdConv2d); ``scaled``: times a learned ``gain`` per output channel and
    gamma / sqrt(fan-in) (timm's ScaledStdConv2d: the same state_dict keys)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, eps=1e-6, scaled=False, gamma=1.0):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)
        self.init_args = (in_channels, out_channels, kernel_size, stride, padding, dilation,
                          groups, bias, eps, scaled, gamma)
        self.eps, self.scaled, self.gamma = eps, scaled, gamma
        if scaled:
            self.scale = gamma * self.weight[0].numel() ** -0.5
            self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))

    def forward(self, x):
        gain = (self.gain * self.scale).view(-1) if self.scaled else None
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=gain, training=True, momentum=0.0,
                              eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        return super().extra_repr() + f", eps={self.eps}" + (
            f", scaled=True, gamma={self.gamma}" if self.scaled else "")
