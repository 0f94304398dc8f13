"""PyTorch modules of the kinds in ``conv_mlp.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class ConvMlp(nn.Module):
    """timm's vgg ConvMlp: the same submodule names (fc1, act1, drop, fc2,
    act2), so its state dict loads, and the same forward (a map under k x k
    pooled up to it first)."""

    def __init__(self, channels, out, kernel=7, hidden=None, p=0.2, activation="ReLU"):
        super().__init__()
        self.init_args = (channels, out, kernel, hidden, p, activation)
        hidden = hidden or out
        self.input_kernel_size = kernel
        self.fc1 = nn.Conv2d(channels, hidden, kernel)
        self.act1 = getattr(nn, activation)()
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Conv2d(hidden, out, 1)
        self.act2 = getattr(nn, activation)()

    def forward(self, x):
        k = self.input_kernel_size
        if x.shape[-2] < k or x.shape[-1] < k:
            x = F.adaptive_avg_pool2d(x, (max(k, x.shape[-2]), max(k, x.shape[-1])))
        return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))
