"""Modules for the kinds the lectures' later systems need (constant scaling,
reshape, spatial pyramid pooling); each matches its kind's counts."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Multiply(nn.Module):
    """x * by; in place when ``inplace`` (the builder turns it off where the
    input is read elsewhere or kept for a backward pass)."""

    def __init__(self, by: float, inplace: bool = True):
        super().__init__()
        self.by, self.inplace = float(by), inplace

    @property
    def init_args(self):
        """For `export`: the builder may have turned ``inplace`` off since."""
        return (self.by, self.inplace)

    def forward(self, x):
        return x.mul_(self.by) if self.inplace else x * self.by

    def extra_repr(self):
        return f"by={self.by}" + (", inplace=True" if self.inplace else "")


class Reshape(nn.Module):
    """Each sample reshaped to ``shape`` (one entry may be -1), as
    ``x.reshape(batch, *shape)``: a view of a contiguous input."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    @property
    def init_args(self):
        return (list(self.shape),)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return f"shape={list(self.shape)}"


class SpatialPyramidPool(nn.Module):
    """He et al. 2014's spatial pyramid pooling: each level pools the map to
    n x n bins (PyTorch's adaptive windows), flattened per sample and
    concatenated level after level: C * sum(n^2) features."""

    def __init__(self, levels, mode: str = "max"):
        super().__init__()
        self.levels, self.mode = tuple(int(n) for n in levels), mode

    @property
    def init_args(self):
        return (list(self.levels), self.mode)

    def forward(self, x):
        pool = F.adaptive_max_pool2d if self.mode == "max" else F.adaptive_avg_pool2d
        return torch.cat([pool(x, n).flatten(1) for n in self.levels], 1)

    def extra_repr(self):
        return f"levels={list(self.levels)}, mode={self.mode!r}"
