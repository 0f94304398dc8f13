"""Modules for the kinds the lectures' later systems need (constant scaling,
reshape, spatial pyramid pooling); each matches its kind's counts."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Multiply(nn.Module):
    """x * by; in place when ``inplace`` (the builder turns it off where the
    input is read elsewhere or kept for a backward pass)."""

    def __init__(self, by: float, inplace: bool = True):
        super().__init__()
        self.by, self.inplace = float(by), inplace

    @property
    def init_args(self):
        """For `export`: the builder may have turned ``inplace`` off since."""
        return (self.by, self.inplace)

    def forward(self, x):
        return x.mul_(self.by) if self.inplace else x * self.by

    def extra_repr(self):
        return f"by={self.by}" + (", inplace=True" if self.inplace else "")


class Reshape(nn.Module):
    """Each sample reshaped to ``shape`` (one entry may be -1), as
    ``x.reshape(batch, *shape)``: a view of a contiguous input."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    @property
    def init_args(self):
        return (list(self.shape),)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return f"shape={list(self.shape)}"


class SpatialPyramidPool(nn.Module):
    """He et al. 2014's spatial pyramid pooling: each level pools the map to
    n x n bins (PyTorch's adaptive windows), flattened per sample and
    concatenated level after level: C * sum(n^2) features."""

    def __init__(self, levels, mode: str = "max"):
        super().__init__()
        self.levels, self.mode = tuple(int(n) for n in levels), mode

    @property
    def init_args(self):
        return (list(self.levels), self.mode)

    def forward(self, x):
        pool = F.adaptive_max_pool2d if self.mode == "max" else F.adaptive_avg_pool2d
        return torch.cat([pool(x, n).flatten(1) for n in self.levels], 1)

    def extra_repr(self):
        return f"levels={list(self.levels)}, mode={self.mode!r}"


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
