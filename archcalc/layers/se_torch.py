"""PyTorch modules of the kinds in ``se.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: the same submodules under the same names
    (avgpool, fc1, fc2 as 1x1 convs, activation, scale_activation), so a
    torchvision state dict loads into it. ``activation`` and ``gate`` name
    torch.nn activation classes (ReLU, SiLU, Hardsigmoid, ...: each kind's
    ``torch_name``)."""

    def __init__(self, channels, squeeze, activation="ReLU", gate="Sigmoid"):
        super().__init__()
        self.init_args = (channels, squeeze, activation, gate)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = getattr(nn, activation)()
        self.scale_activation = getattr(nn, gate)()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class EfficientChannelAttention(nn.Module):
    """timm's EcaModule (ECA-Net): the same submodule name (``conv``, a 1-d conv
    of one channel without bias), so its state dict loads into it."""

    def __init__(self, kernel=3):
        super().__init__()
        self.init_args = (kernel,)
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel, padding=(kernel - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.gate(self.conv(y)).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)
