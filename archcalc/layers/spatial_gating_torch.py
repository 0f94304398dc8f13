"""PyTorch modules of the kinds in ``spatial_gating.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


class SpatialGatingUnit(nn.Module):
    """timm's SpatialGatingUnit (gMLP): the same submodules (norm, proj), so
    its state dict loads, and the same forward."""

    def __init__(self, dim, seq_len, eps=1e-5):
        super().__init__()
        self.init_args = (dim, seq_len, eps)
        self.norm = nn.LayerNorm(dim // 2, eps=eps)
        self.proj = nn.Linear(seq_len, seq_len)

    def forward(self, x):
        u, v = x.chunk(2, dim=-1)
        v = self.proj(self.norm(v).transpose(-1, -2))
        return u * v.transpose(-1, -2)
