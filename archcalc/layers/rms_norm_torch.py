"""PyTorch modules of the kinds in ``rms_norm.py`` that torch.nn lacks (over
tokens and vectors ``rms_norm`` builds torch.nn.RMSNorm).

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name). Their
state_dict keys are timm's (``weight``)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RmsNorm2d(nn.Module):
    """timm's RmsNorm2d: RMS norm over the channels at each position of an
    N, C, H, W map, times a weight of C."""

    def __init__(self, channels, eps=1e-6, affine=True):
        super().__init__()
        self.init_args = (channels, eps, affine)
        self.normalized_shape = (channels,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None

    def forward(self, x):
        x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x if self.weight is None else x * self.weight.reshape(1, -1, 1, 1)


class SimpleNorm(nn.Module):
    """timm's SimpleNorm: x / sqrt(var(x) + eps) over the last dimension
    (unbiased variance, x not centred), times a weight."""

    def __init__(self, channels, eps=1e-6, affine=True):
        super().__init__()
        self.init_args = (channels, eps, affine)
        self.normalized_shape = (channels,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None

    def forward(self, x):
        x = x * torch.rsqrt(torch.var(x, dim=-1, keepdim=True) + self.eps)
        return x if self.weight is None else x * self.weight


class SimpleNorm2d(nn.Module):
    """timm's SimpleNorm2d: SimpleNorm over the channels at each position of
    an N, C, H, W map."""

    def __init__(self, channels, eps=1e-6, affine=True):
        super().__init__()
        self.init_args = (channels, eps, affine)
        self.normalized_shape = (channels,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None

    def forward(self, x):
        x = x * torch.rsqrt(torch.var(x, dim=1, keepdim=True) + self.eps)
        return x if self.weight is None else x * self.weight.reshape(1, -1, 1, 1)


# -- functional calls -----------------------------------------------------------
#
# F.rms_norm(x, (D,), self.weight, eps) in a module's forward (timm's RmsNorm
# traced through, attention's q/k norms): the rms_norm row of that module.


def _rms_norm_call(call):
    from .from_torch import NoMapping, given, require_learned, row
    shape = call.arg("rms_norm", 1, "normalized_shape")
    shape = tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
    weight = call.arg("rms_norm", 2, "weight", None)
    eps = call.arg("rms_norm", 3, "eps", None)
    width = call.x[-1] if len(call.x) == 2 else (call.x[0] if len(call.x) == 1 else None)
    if shape != (width,) or call.x_torch[-1] != width:
        raise NoMapping(f"rms_norm over {list(shape)} of a {list(call.x_torch)} input "
                        "(archcalc's normalizes each token's or vector's last dimension)")
    if eps is None:
        raise NoMapping("rms_norm with eps None (the dtype's epsilon)")
    require_learned(call, "rms_norm", weight)
    return row("rms_norm", affine=given(weight), eps=float(eps))


def _functions():
    from .from_torch import reads_state
    rms_norm = reads_state(_rms_norm_call)
    return {F.rms_norm: rms_norm, torch.rms_norm: rms_norm,
            torch.ops.aten.rms_norm.default: rms_norm}


FUNCTIONS = _functions()   # the importer's functional mappers of these kinds (mappers.py)
