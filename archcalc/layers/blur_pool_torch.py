"""PyTorch modules of the kinds in ``blur_pool.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BlurPool2d(nn.Module):
    """timm's BlurPool2d: the binomial filter a non-persistent buffer (no
    state dict key), the same padding (timm's get_padding on every side) and
    the same depthwise conv."""

    def __init__(self, channels, filt_size=3, stride=2, pad_mode="reflect"):
        super().__init__()
        self.init_args = (channels, filt_size, stride, pad_mode)
        self.channels, self.filt_size, self.stride, self.pad_mode = (channels, filt_size,
                                                                     stride, pad_mode)
        self.padding = [((stride - 1) + (filt_size - 1)) // 2] * 4
        row = [1.0]
        for _ in range(filt_size - 1):
            row = [a + b for a, b in zip([0.0] + row, row + [0.0])]
        coeffs = torch.tensor(row) / 2 ** (filt_size - 1)
        filt = (coeffs[:, None] * coeffs[None, :])[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x):
        x = F.pad(x, self.padding, mode=self.pad_mode)
        return F.conv2d(x, self.filt, stride=self.stride, groups=self.channels)
