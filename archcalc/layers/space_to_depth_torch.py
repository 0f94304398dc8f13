"""PyTorch modules of the kinds in ``space_to_depth.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


class SpaceToDepth(nn.Module):
    """timm's SpaceToDepth: (N, C, H, W) -> (N, bs*bs*C, H/bs, W/bs), the
    patch's row and column before the channel."""

    def __init__(self, block_size=4):
        super().__init__()
        self.init_args = (block_size,)
        self.bs = block_size

    def forward(self, x):
        n, c, h, w = x.size()
        x = x.view(n, c, h // self.bs, self.bs, w // self.bs, self.bs)
        x = x.permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(n, c * self.bs * self.bs, h // self.bs, w // self.bs)
