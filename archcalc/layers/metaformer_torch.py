"""PyTorch modules of the kinds in ``metaformer.py``, with timm's state_dict
keys (StarReLU's ``scale`` and ``bias``).

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class StarReLU(nn.Module):
    """timm's StarReLU: scale * relu(x) ** 2 + bias, scale and bias of one."""

    def __init__(self, scale=1.0, bias=0.0):
        super().__init__()
        self.init_args = (scale, bias)
        self.relu = nn.ReLU()
        self.scale = nn.Parameter(torch.full((1,), float(scale)))
        self.bias = nn.Parameter(torch.full((1,), float(bias)))

    def forward(self, x):
        return self.scale * self.relu(x) ** 2 + self.bias


class SquaredReLU(nn.Module):
    """relu(x) ** 2."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        return torch.square(self.relu(x))


class PoolMixer(nn.Module):
    """PoolFormer's token mixer (timm's Pooling): avgpool(x) - x, the pool of
    stride 1 keeping the size, the padding not counted."""

    def __init__(self, kernel=3):
        super().__init__()
        self.init_args = (kernel,)
        self.pool = nn.AvgPool2d(kernel, stride=1, padding=kernel // 2, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x
