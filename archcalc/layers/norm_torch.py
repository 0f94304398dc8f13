"""PyTorch modules of the kinds in ``norm.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: layer norm over the channels at each
    position (permute to N, H, W, C; normalize; permute back)."""

    def __init__(self, channels, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__(channels, eps=eps, elementwise_affine=elementwise_affine, bias=bias)
        self.init_args = (channels, eps, elementwise_affine, bias)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """ConvNeXt's layer scale: x times a learned per-channel gamma, kept as
    C x 1 x 1 (rank 3) or as C values (rank 1), viewed per channel of the
    input (timm's LayerScale2d)."""

    def __init__(self, channels, init=1e-6, rank=3):
        super().__init__()
        self.init_args = (channels, init, rank)
        shape = (channels, 1, 1) if rank == 3 else (channels,)
        self.gamma = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x):
        if self.gamma.dim() == 1 and x.dim() == 4:
            return self.gamma.view(-1, 1, 1) * x
        return self.gamma * x

    def flat_forward(self, p, x):
        if self.init_args[2] == 1:     # a vector: on a map, per channel; on tokens, per D
            return f"({p}.view(-1, 1, 1) if {x}.dim() == 4 else {p}) * {x}"
        return f"{p} * {x}"

    def flat_init(self, shape, literal):
        return f"torch.full({shape}, {literal(float(self.init_args[1]))})"


class GroupNormNoBias(nn.GroupNorm):
    """Group norm with a weight and no bias (MetaFormer's GroupNorm1NoBias)."""

    def __init__(self, num_groups, num_channels, eps=1e-5):
        super().__init__(num_groups, num_channels, eps=eps)
        self.init_args = (num_groups, num_channels, eps)
        self.bias = None


# -- functional calls -----------------------------------------------------------
#
# A module that calls F.batch_norm / F.layer_norm / F.group_norm in its own
# forward with its own parameters (timm's BatchNormAct2d, LayerNorm2d,
# LayerNorm, GroupNormAct) maps to the kind its nn.Module form maps to: the
# importer makes the call one stateful row named by that module (reads_state).
# torch.export's graph calls the aten ops, whose batch_norm orders its
# arguments differently from F.batch_norm's.

_F_BATCH_NORM = ("input", "running_mean", "running_var", "weight", "bias", "training",
                 "momentum", "eps")
_ATEN_BATCH_NORM = ("input", "weight", "bias", "running_mean", "running_var", "training",
                    "momentum", "eps")


def _batch_norm_call(order):
    from .from_torch import NoMapping, given, reads_state, require_learned, row

    @reads_state
    def batch_norm(call):
        def arg(name, default):
            return call.arg("batch_norm", order.index(name), name, default)
        if arg("training", False) or not given(arg("running_mean", None)) or \
                not given(arg("running_var", None)):
            raise NoMapping("batch_norm with batch statistics (archcalc's batch_norm "
                            "normalizes with running statistics at inference)")
        if given(arg("weight", None)) != given(arg("bias", None)):
            raise NoMapping("batch_norm with a weight and no bias, or a bias and no weight")
        require_learned(call, "batch_norm", arg("weight", None), arg("bias", None))
        if len(call.x) not in (1, 3) or call.x_torch[0] != call.x[0]:
            raise NoMapping(f"batch_norm of a {list(call.x_torch)} input (archcalc's "
                            "normalizes the channels of a map or the features)")
        momentum = arg("momentum", 0.1)
        return row("batch_norm", affine=given(arg("weight", None)), eps=float(arg("eps", 1e-5)),
                   momentum=0.1 if momentum is None else float(momentum))
    return batch_norm


def _layer_norm_call(call):
    """F.layer_norm over the last dimension of tokens or a vector (timm's
    LayerNorm2d permutes a map to channels last first: tokens here)."""
    from .from_torch import NoMapping, given, require_learned, row
    shape = call.arg("layer_norm", 1, "normalized_shape")
    shape = tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
    weight, bias = call.arg("layer_norm", 2, "weight", None), call.arg("layer_norm", 3, "bias",
                                                                        None)
    width = call.x[-1] if len(call.x) == 2 else (call.x[0] if len(call.x) == 1 else None)
    if shape != (width,) or call.x_torch[-1] != width:
        raise NoMapping(f"layer_norm over {list(shape)} of a {list(call.x_torch)} input "
                        "(archcalc's normalizes each token's or vector's last dimension)")
    if given(bias) and not given(weight):
        raise NoMapping("layer_norm with a bias and no weight")
    require_learned(call, "layer_norm", weight, bias)
    return row("layer_norm", affine=given(weight), bias=given(bias),
               eps=float(call.arg("layer_norm", 4, "eps", 1e-5)))


def _group_norm_call(call):
    from .from_torch import NoMapping, given, require_chw, require_learned, row
    require_chw(call, "group_norm")
    weight, bias = call.arg("group_norm", 2, "weight", None), call.arg("group_norm", 3, "bias",
                                                                        None)
    if given(bias) and not given(weight):
        raise NoMapping("group_norm with a bias and no weight")
    require_learned(call, "group_norm", weight, bias)
    return row("group_norm", groups=int(call.arg("group_norm", 1, "num_groups")),
               affine=given(weight), bias=given(bias),
               eps=float(call.arg("group_norm", 4, "eps", 1e-5)))


def _functions():
    from .from_torch import reads_state
    aten = torch.ops.aten
    layer_norm, group_norm = reads_state(_layer_norm_call), reads_state(_group_norm_call)
    return {F.batch_norm: _batch_norm_call(_F_BATCH_NORM),
            torch.batch_norm: _batch_norm_call(_ATEN_BATCH_NORM),
            aten.batch_norm.default: _batch_norm_call(_ATEN_BATCH_NORM),
            F.layer_norm: layer_norm, torch.layer_norm: layer_norm,
            aten.layer_norm.default: layer_norm,
            F.group_norm: group_norm, torch.group_norm: group_norm,
            aten.group_norm.default: group_norm}


FUNCTIONS = _functions()   # the importer's functional mappers of these kinds (mappers.py)
