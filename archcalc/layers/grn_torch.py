"""PyTorch modules of the kinds in ``grn.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class GlobalResponseNorm(nn.Module):
    """timm's GlobalResponseNorm (ConvNeXt V2), the same parameters (weight,
    bias of C); channels last: the input is (batch, N, C) tokens, their
    positions dim 1; else (batch, C, H, W)."""

    def __init__(self, channels, eps=1e-6, channels_last=True):
        super().__init__()
        self.init_args = (channels, eps, channels_last)
        self.eps = eps
        self.spatial_dim = (1,) if channels_last else (2, 3)
        self.channel_dim = -1 if channels_last else 1
        self.wb_shape = (1, 1, -1) if channels_last else (1, -1, 1, 1)
        self.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        x_g = x.norm(p=2, dim=self.spatial_dim, keepdim=True)
        x_n = x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(self.wb_shape), self.weight.view(self.wb_shape),
                                 x * x_n)

    def extra_repr(self):
        return f"eps={self.eps}, channels_last={self.spatial_dim == (1,)}"
