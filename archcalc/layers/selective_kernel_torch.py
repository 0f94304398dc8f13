"""PyTorch modules of the kinds in ``selective_kernel.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class SelectiveKernel(nn.Module):
    """timm's SelectiveKernel (SKNet): the same state dict keys (paths.i.conv,
    paths.i.bn, attn.fc_reduce, attn.bn, attn.fc_select) and the same forward.
    Path i is a k x k conv of dilation (i+1) x dilation, padded as timm pads it."""

    class Path(nn.Module):
        def __init__(self, cin, out, kernel, stride, dilation, groups, activation):
            super().__init__()
            padding = ((stride - 1) + dilation * (kernel - 1)) // 2
            self.conv = nn.Conv2d(cin, out, kernel, stride, padding, dilation, groups=groups,
                                  bias=False)
            self.bn = nn.BatchNorm2d(out)
            self.act = getattr(nn, activation)()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Attention(nn.Module):
        def __init__(self, out, paths, attn, activation):
            super().__init__()
            self.paths = paths
            self.fc_reduce = nn.Conv2d(out, attn, 1, bias=False)
            self.bn = nn.BatchNorm2d(attn)
            self.act = getattr(nn, activation)()
            self.fc_select = nn.Conv2d(attn, out * paths, 1, bias=False)

        def forward(self, x):
            x = self.act(self.bn(self.fc_reduce(x.sum(1).mean((2, 3), keepdim=True))))
            x = self.fc_select(x)
            b, c, h, w = x.shape
            return torch.softmax(x.view(b, self.paths, c // self.paths, h, w), dim=1)

    def __init__(self, channels, out, paths=2, kernel=3, stride=1, dilation=1, groups=1,
                 split=True, attn=32, activation="ReLU"):
        super().__init__()
        self.init_args = (channels, out, paths, kernel, stride, dilation, groups, split, attn,
                          activation)
        self.in_channels, self.num_paths, self.split_input = channels, paths, split
        cin = channels // paths if split else channels
        self.paths = nn.ModuleList([
            self.Path(cin, out, kernel, stride, (i + 1) * dilation, groups, activation)
            for i in range(paths)])
        self.attn = self.Attention(out, paths, attn, activation)

    def forward(self, x):
        if self.split_input:
            xs = torch.split(x, self.in_channels // self.num_paths, 1)
            x = torch.stack([op(xs[i]) for i, op in enumerate(self.paths)], dim=1)
        else:
            x = torch.stack([op(x) for op in self.paths], dim=1)
        return torch.sum(x * self.attn(x), dim=1)
