"""PyTorch modules of the kinds in ``boxes.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class L2Norm(nn.Module):
    """SSD's L2 normalisation (torchvision's ssd300_vgg16: ``scale_weight``):
    x / ||x||_2 over channels, times a learned scale per channel."""

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.full((int(channels),), float(scale)))
        self.channels, self.scale, self.eps = int(channels), float(scale), float(eps)

    @property
    def init_args(self):
        return (self.channels, self.scale, self.eps)

    def forward(self, x):
        return self.weight.view(1, -1, 1, 1) * F.normalize(x, dim=1, eps=self.eps)

    def extra_repr(self):
        return f"{self.channels}, scale={self.scale}"


class PerAnchor(nn.Module):
    """(N, A*K, H, W) -> (N, H*W*A, K), as torchvision's SSD head orders it."""

    def __init__(self, values: int):
        super().__init__()
        self.values = int(values)

    @property
    def init_args(self):
        return (self.values,)

    def forward(self, x):
        n, c, h, w = x.shape
        k = self.values
        return x.view(n, c // k, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)

    def extra_repr(self):
        return f"values={self.values}"
