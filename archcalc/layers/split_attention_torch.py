"""PyTorch modules of the kinds in ``split_attention.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn


class SplitAttention(nn.Module):
    """timm's SplitAttn (ResNeSt): the same submodule names (conv, bn0, act0,
    fc1, bn1, act1, fc2), so its state dict loads, and the same forward: the
    r-softmax runs across the splits of each cardinal group."""

    def __init__(self, channels, out, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                 dilation=(1, 1), groups=1, radix=2, attn=32, bias=False, norm=True,
                 activation="ReLU"):
        super().__init__()
        self.init_args = (channels, out, kernel, stride, padding, dilation, groups, radix,
                          attn, bias, norm, activation)
        self.radix, self.groups = radix, groups
        mid = out * radix
        self.conv = nn.Conv2d(channels, mid, kernel, stride, padding, dilation,
                              groups=groups * radix, bias=bias)
        self.bn0 = nn.BatchNorm2d(mid) if norm else nn.Identity()
        self.act0 = getattr(nn, activation)()
        self.fc1 = nn.Conv2d(out, attn, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(attn) if norm else nn.Identity()
        self.act1 = getattr(nn, activation)()
        self.fc2 = nn.Conv2d(attn, mid, 1, groups=groups)

    def forward(self, x):
        x = self.act0(self.bn0(self.conv(x)))
        b, rc, h, w = x.shape
        if self.radix > 1:
            x = x.reshape(b, self.radix, rc // self.radix, h, w)
            gap = x.sum(dim=1)
        else:
            gap = x
        gap = self.act1(self.bn1(self.fc1(gap.mean((2, 3), keepdim=True))))
        attn = self.fc2(gap)
        if self.radix == 1:
            return x * attn.sigmoid()
        attn = attn.view(b, self.groups, self.radix, -1).transpose(1, 2).softmax(dim=1)
        return (x * attn.reshape(b, self.radix, rc // self.radix, 1, 1)).sum(dim=1)
