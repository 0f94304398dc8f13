"""PyTorch modules of the kinds in ``pool.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Subsample(nn.Module):
    """LeCun 1998's S-layers: average pool, then a learned scale and bias per map."""

    def __init__(self, channels, kernel, stride, padding=(0, 0)):
        super().__init__()
        self.init_args = (channels, kernel, stride, padding)
        self.pool = nn.AvgPool2d(kernel, stride, padding)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return self.pool(x) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PadShortcut(nn.Module):
    """ResNet option A: subsample by the stride, zero-pad the extra channels."""

    def __init__(self, extra_channels, stride):
        super().__init__()
        self.init_args = (extra_channels, stride)
        self.extra, self.stride = extra_channels, stride

    def forward(self, x):
        x = x[:, :, ::self.stride[0], ::self.stride[1]]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


# -- functional calls: F.adaptive_avg_pool2d / F.adaptive_max_pool2d, mapped as
# their modules are (the kinds' from_size) -------------------------------------


def _adaptive_call(kind):
    def adaptive(call):
        from . import lookup
        from .from_torch import NoMapping
        name = f"{kind}2d"
        if call.arg(name, 2, "return_indices", False):
            raise NoMapping(f"{name} with return_indices")
        return lookup(kind).from_size(call, call.arg(name, 1, "output_size"))
    return adaptive


FUNCTIONS = {F.adaptive_avg_pool2d: _adaptive_call("adaptive_avg_pool"),
             F.adaptive_max_pool2d: _adaptive_call("adaptive_max_pool")}
