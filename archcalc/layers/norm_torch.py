"""PyTorch modules of the kinds in ``norm.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: layer norm over the channels at each
    position (permute to N, H, W, C; normalize; permute back)."""

    def __init__(self, channels, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__(channels, eps=eps, elementwise_affine=elementwise_affine, bias=bias)
        self.init_args = (channels, eps, elementwise_affine, bias)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """ConvNeXt's layer scale: x times a learned per-channel gamma."""

    def __init__(self, channels, init=1e-6, rank=3):
        super().__init__()
        self.init_args = (channels, init, rank)
        shape = (channels, 1, 1) if rank == 3 else (channels,)
        self.gamma = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x):
        return self.gamma * x

    @staticmethod
    def flat_forward(p, x):
        return f"{p} * {x}"

    def flat_init(self, shape, literal):
        return f"torch.full({shape}, {literal(float(self.init_args[1]))})"
