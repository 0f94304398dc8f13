"""PyTorch modules of the kinds in ``crop.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


class CenterCrop(nn.Module):
    """``border`` = (rows, columns) cut off each side of the map: a slice of
    the input (a view), as U-Net crops a skip before the concat."""

    def __init__(self, border):
        super().__init__()
        self.border = tuple(int(b) for b in border)

    @property
    def init_args(self):
        return (list(self.border),)

    def forward(self, x):
        bh, bw = self.border
        return x[..., bh:x.shape[-2] - bh, bw:x.shape[-1] - bw]

    def extra_repr(self):
        return f"border={list(self.border)}"
