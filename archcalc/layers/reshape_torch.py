"""PyTorch modules of the kinds in ``reshape.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


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
