"""PyTorch modules of the kinds in ``evo_norm.py``, with timm's state_dict
keys (``weight``, ``bias``, ``v``, ``running_var``; FRN's ``tau``) and its
arithmetic.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class EvoNorm2d(nn.Module):
    """timm's EvoNorm2dS0 (variant "s0"), EvoNorm2dS0a ("s0a") and
    EvoNorm2dB0 ("b0") on an N, C, H, W map."""

    def __init__(self, channels, variant="s0", groups=32, act=True, eps=1e-5, momentum=0.1):
        super().__init__()
        self.init_args = (channels, variant, groups, act, eps, momentum)
        self.variant, self.groups, self.eps, self.momentum = variant, groups, eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.v = nn.Parameter(torch.ones(channels)) if act else None
        if variant == "b0":
            self.register_buffer("running_var", torch.ones(channels))

    def group_std(self, x):
        b, c, h, w = x.shape
        g = x.reshape(b, self.groups, c // self.groups, h, w)
        std = g.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(self.eps).sqrt()
        return std.to(x.dtype).expand(g.shape).reshape(b, c, h, w)

    def b0(self, x, v):
        if self.training:
            var = x.float().var(dim=(0, 2, 3), unbiased=False)
            n = x.numel() / x.shape[1]
            self.running_var.copy_(self.running_var * (1 - self.momentum) +
                                   var.detach() * self.momentum * (n / (n - 1)))
        else:
            var = self.running_var
        left = var.add(self.eps).sqrt().to(x.dtype).view(1, -1, 1, 1).expand_as(x)
        std = x.float().var(dim=(2, 3), unbiased=False, keepdim=True).add(self.eps).sqrt()
        return x / left.max(x * v + std.to(x.dtype).expand(x.shape))

    def forward(self, x):
        shape = (1, -1, 1, 1)
        v = None if self.v is None else self.v.view(shape).to(x.dtype)
        if self.variant == "b0" and v is not None:
            x = self.b0(x, v)
        elif self.variant == "s0" and v is not None:
            x = x * (x * v).sigmoid() / self.group_std(x)
        elif self.variant == "s0a":
            d = self.group_std(x)
            x = (x if v is None else x * (x * v).sigmoid()) / d
        return x * self.weight.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)

    def extra_repr(self):
        return f"variant={self.variant!r}, groups={self.groups}, eps={self.eps}"


class FilterResponseNormTlu2d(nn.Module):
    """timm's FilterResponseNormTlu2d: x / sqrt(mean(x^2 over H, W) + eps),
    a weight and a bias per channel, then max(., tau)."""

    def __init__(self, channels, apply_act=True, eps=1e-5):
        super().__init__()
        self.init_args = (channels, apply_act, eps)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.tau = nn.Parameter(torch.zeros(channels)) if apply_act else None

    def forward(self, x):
        shape = (1, -1, 1, 1)
        rms = x.square().float().mean(dim=(2, 3), keepdim=True).add(self.eps).rsqrt()
        x = x * rms.to(x.dtype)
        x = x * self.weight.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)
        return x if self.tau is None else torch.maximum(x, self.tau.reshape(shape).to(x.dtype))

    def extra_repr(self):
        return f"eps={self.eps}"
