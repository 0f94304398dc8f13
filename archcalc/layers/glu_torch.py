"""PyTorch modules of the kinds in ``glu.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


class GluMlp(nn.Module):
    """timm's GluMlp (chunk on the last dim, no norm): the same submodule
    names (fc1, act, drop1, norm, fc2, drop2), so its state dict loads."""

    def __init__(self, features, hidden, out, activation="Sigmoid", gate_last=True, bias=True):
        super().__init__()
        self.init_args = (features, hidden, out, activation, gate_last, bias)
        self.gate_last = gate_last
        self.chunk_dim = -1
        self.fc1 = nn.Linear(features, 2 * hidden, bias=bias)
        self.act = getattr(nn, activation)()
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, out, bias=bias)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x):
        x1, x2 = self.fc1(x).chunk(2, dim=-1)
        x = x1 * self.act(x2) if self.gate_last else self.act(x1) * x2
        return self.drop2(self.fc2(self.norm(self.drop1(x))))
