"""PyTorch modules of the kinds in ``slice.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


class ChannelSlice(nn.Module):
    """Channels [start, end) of the input: x[:, start:end] (a view)."""

    def __init__(self, start, end):
        super().__init__()
        self.start, self.end = int(start), int(end)

    @property
    def init_args(self):
        return (self.start, self.end)

    def forward(self, x):
        return x[:, self.start:self.end]

    def extra_repr(self):
        return f"channels=[{self.start}, {self.end}]"
