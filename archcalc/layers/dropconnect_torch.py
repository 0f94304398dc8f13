"""PyTorch modules of the kinds in ``dropconnect.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DropConnectLinear(nn.Linear):
    """nn.Linear whose weights are dropped with probability p while training:
    one bool mask per minibatch, kept weights scaled by 1/(1 - p); a plain
    linear layer in eval mode."""

    class Function(torch.autograd.Function):
        """linear(x, W * mask * scale, b) that keeps only x and the bool mask
        for backward (and W, a parameter): the masked weights are recomputed
        there, so a step keeps the same tensors whether or not x needs a
        gradient. (Nested, so that `archcalc export` copies it along.)"""

        @staticmethod
        def forward(ctx, x, weight, bias, mask, scale):
            ctx.save_for_backward(x, weight, mask)
            ctx.scale, ctx.has_bias = scale, bias is not None
            return F.linear(x, weight * mask * scale, bias)

        @staticmethod
        def backward(ctx, grad):
            x, weight, mask = ctx.saved_tensors
            gx = gw = gb = None
            if ctx.needs_input_grad[0]:
                gx = grad.matmul(weight * mask * ctx.scale)
            g2 = grad.reshape(-1, grad.shape[-1])
            if ctx.needs_input_grad[1]:
                gw = (g2.t() @ x.reshape(-1, x.shape[-1])) * mask * ctx.scale
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = g2.sum(0)
            return gx, gw, gb, None, None

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5):
        super().__init__(in_features, out_features, bias=bias)
        self.p = float(p)

    @property
    def init_args(self):
        return (self.in_features, self.out_features, self.bias is not None, self.p)

    def forward(self, x):
        if not self.training or self.p == 0:
            return F.linear(x, self.weight, self.bias)
        mask = torch.empty_like(self.weight, dtype=torch.bool).bernoulli_(1 - self.p)
        return self.Function.apply(x, self.weight, self.bias, mask, 1 / (1 - self.p))

    def extra_repr(self):
        return super().extra_repr() + f", p={self.p}"
