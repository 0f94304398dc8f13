"""PyTorch modules of the kinds in ``transpose.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


class TransposeTokens(nn.Module):
    """(batch, N, D) -> (batch, D, N): a view."""

    init_args = ()

    def forward(self, x):
        return x.transpose(1, 2)
