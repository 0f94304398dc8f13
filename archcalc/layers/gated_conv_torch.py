"""PyTorch modules of the kinds in ``gated_conv.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class GatedConvBlock(nn.Module):
    """timm's mambaout GatedConvBlock on tokens (N = H*W, C): the same
    submodules (norm, fc1, act, conv, fc2, ls.gamma), so its state dict loads;
    the tokens are the channels-last map's positions, row by row."""

    class LayerScale(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

        def forward(self, x):
            return x * self.gamma

    def __init__(self, dim, height, width, hidden, conv, kernel=7, activation="GELU", eps=1e-6,
                 layer_scale=False):
        super().__init__()
        self.init_args = (dim, height, width, hidden, conv, kernel, activation, eps,
                          layer_scale)
        self.height, self.width = height, width
        self.split_indices = (hidden, hidden - conv, conv)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.act = getattr(nn, activation)()
        self.conv = nn.Conv2d(conv, conv, kernel, padding=kernel // 2, groups=conv)
        self.fc2 = nn.Linear(hidden, dim)
        self.ls = self.LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x):
        b, n, _ = x.shape
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        c = c.reshape(b, self.height, self.width, -1).permute(0, 3, 1, 2)
        c = self.conv(c).permute(0, 2, 3, 1).reshape(b, n, -1)
        return self.ls(self.fc2(self.act(g) * torch.cat((i, c), dim=-1))) + x
