"""PyTorch modules of the kinds in ``spp.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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
