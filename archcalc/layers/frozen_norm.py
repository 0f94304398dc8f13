"""Frozen batch norm: torchvision's FrozenBatchNorm2d, the normalization of
its detection backbones (resnet_fpn_backbone). Its scale, shift and running
statistics are buffers, not parameters: they load with the weights and never
train, so the row has 0 params where a batch norm has 2*C, and 4*C buffers.
At inference it computes what a batch norm does (x * scale + shift, the
statistics folded); in training it computes the same, with no batch
statistics. Its own family: a batch_norm with affine = false has the params
(0) but not the buffers, the state_dict keys or the training-mode function."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, register


@register
class FrozenBatchNorm(Kind):
    name = "frozen_batch_norm"
    torch_classes = ("FrozenBatchNorm2d",)  # in frozen_norm_torch.py
    aliases = ("frozen_bn",)
    summary = ("batch norm with fixed statistics and affine, all buffers "
               "(torchvision's FrozenBatchNorm2d): 0 params, 4*C buffers")
    flops_rule = "2 per element (scale and shift)"
    inputs = "chw"
    args = {"eps": Arg("float", 1e-5, min=0.0)}

    def buffers(self, a, x):
        return 4 * x[0]  # weight, bias, running mean and variance

    def flops(self, a, x, y):
        return 2 * sym.prod(y)

    def cost(self, a, x, y):
        """x * scale, then + shift: two elementwise passes over the map (the
        per-channel scale and shift are C-element ops, left out)."""
        return (Cost("mul", elements=sym.prod(y), scale=2.0),)

    def saved(self, a, x, y):
        # x * scale keeps the scale (1 x C x 1 x 1, in the buffers' dtype) for
        # the input's gradient; the add keeps nothing
        return Saved(per_batch=((x[0], None),))

    def build(self, a, x):
        from .frozen_norm_torch import FrozenBatchNorm2d
        return FrozenBatchNorm2d(x[0], eps=a.eps)

    # from_torch reads them (torchvision's where the vision extra is installed)
    torch_modules = ("archcalc.layers.frozen_norm_torch.FrozenBatchNorm2d",
                     "torchvision.ops.misc.FrozenBatchNorm2d")

    def from_torch(self, call, m):
        from .from_torch import require_chw, row
        require_chw(call, "FrozenBatchNorm2d")
        return row("frozen_batch_norm", eps=float(m.eps))
