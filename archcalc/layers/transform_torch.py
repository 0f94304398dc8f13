"""PyTorch modules of the kinds in ``transform.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class AffineSampler(nn.Module):
    """The spatial transformer's grid generator and bilinear sampler: theta
    (N, 6) from the localisation net, the input x (N, C, H, W) -> (N, C, H', W')."""

    def __init__(self, size, align_corners: bool = False):
        super().__init__()
        self.size, self.align_corners = tuple(int(s) for s in size), bool(align_corners)

    @property
    def init_args(self):
        return (list(self.size), self.align_corners)

    def forward(self, x, theta):
        grid = F.affine_grid(theta.reshape(-1, 2, 3), [x.shape[0], x.shape[1], *self.size],
                             align_corners=self.align_corners)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=self.align_corners)

    def extra_repr(self):
        return f"size={list(self.size)}, align_corners={self.align_corners}"
