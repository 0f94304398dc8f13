"""PyTorch modules of the kinds in ``multiply.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


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
