"""PyTorch module of the kind in ``patchify.py``.

Imported only by the kind's ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies the
class into the exported file with ``inspect.getsource``: it uses only ``nn``."""
from __future__ import annotations

from torch import nn


class Patchify(nn.Module):
    """(B, C, H, W) -> (B, (H/p)*(W/p), p*p*C), as timm's batch_patchify: the
    patches row by row, each the patch's rows, columns, then channels (or
    the channels first)."""

    def __init__(self, patch, channels_last=True):
        super().__init__()
        self.init_args = (patch, channels_last)
        self.patch, self.channels_last = patch, channels_last

    def extra_repr(self):
        return f"patch={self.patch}, channels_last={self.channels_last}"

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p)
        x = x.permute(0, 2, 4, 3, 5, 1) if self.channels_last else x.permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), p * p * c)
