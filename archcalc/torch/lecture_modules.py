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


class RoIPool(nn.Module):
    """RoI pooling ("max", Fast R-CNN) or RoI align ("align", Mask R-CNN) of
    ``regions`` boxes per image over the feature map, each to ``output`` bins,
    returned as (batch, regions, C*oh*ow). The boxes are generated, the same
    for every image: low-discrepancy centres, 10% to 50% of the image per
    side, clipped to it (image size = map size x stride). A detector would
    feed its proposals instead."""

    def __init__(self, output, regions: int, stride: int = 16, mode: str = "max",
                 sampling: int = 2, aligned: bool = True):
        super().__init__()
        self.output = tuple(int(v) for v in output)
        self.regions, self.stride, self.mode = int(regions), int(stride), mode
        self.sampling, self.aligned = int(sampling), bool(aligned)

    @property
    def init_args(self):
        return (list(self.output), self.regions, self.stride, self.mode, self.sampling,
                self.aligned)

    @staticmethod
    def boxes(regions: int, height: float, width: float, device=None):
        """(regions, 4) boxes x1, y1, x2, y2 in image pixels, deterministic."""
        i = torch.arange(regions, dtype=torch.float32, device=device) + 1
        frac = lambda a: torch.remainder(i * a, 1.0)  # noqa: E731
        cx, cy = frac(0.6180339887) * width, frac(0.7548776662) * height
        w, h = (0.1 + 0.4 * frac(0.5698402910)) * width, (0.1 + 0.4 * frac(0.4301597090)) * height
        return torch.stack([(cx - w / 2).clamp(0, width), (cy - h / 2).clamp(0, height),
                            (cx + w / 2).clamp(0, width), (cy + h / 2).clamp(0, height)], 1)

    def forward(self, x):
        from torchvision import ops
        n, _, height, width = x.shape
        boxes = self.boxes(self.regions, height * self.stride, width * self.stride, x.device)
        index = torch.arange(n, dtype=boxes.dtype, device=x.device).repeat_interleave(
            self.regions)[:, None]
        rois = torch.cat([index, boxes.repeat(n, 1)], 1).to(x.dtype)
        if self.mode == "max":
            y = ops.roi_pool(x, rois, self.output, 1.0 / self.stride)
        else:
            y = ops.roi_align(x, rois, self.output, 1.0 / self.stride, self.sampling,
                              self.aligned)
        return y.reshape(n, self.regions, -1)

    def extra_repr(self):
        return (f"output={self.output}, regions={self.regions}, stride={self.stride}, "
                f"mode={self.mode!r}" + (f", sampling={self.sampling}, aligned={self.aligned}"
                                         if self.mode != "max" else ""))


class L2Norm(nn.Module):
    """SSD's L2 normalisation (torchvision's ssd300_vgg16: ``scale_weight``):
    x / ||x||_2 over channels, times a learned scale per channel."""

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.full((int(channels),), float(scale)))
        self.channels, self.scale, self.eps = int(channels), float(scale), float(eps)

    @property
    def init_args(self):
        return (self.channels, self.scale, self.eps)

    def forward(self, x):
        return self.weight.view(1, -1, 1, 1) * F.normalize(x, dim=1, eps=self.eps)

    def extra_repr(self):
        return f"{self.channels}, scale={self.scale}"


class PerAnchor(nn.Module):
    """(N, A*K, H, W) -> (N, H*W*A, K), as torchvision's SSD head orders it."""

    def __init__(self, values: int):
        super().__init__()
        self.values = int(values)

    @property
    def init_args(self):
        return (self.values,)

    def forward(self, x):
        n, c, h, w = x.shape
        k = self.values
        return x.view(n, c // k, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)

    def extra_repr(self):
        return f"values={self.values}"


class AffineSampler(nn.Module):
    """The spatial transformer's grid generator and bilinear sampler: theta
    (N, 6) from the localisation net, the input x (N, C, H, W) -> (N, C, H', W')."""

    def __init__(self, size, align_corners: bool = False):
        super().__init__()
        self.size, self.align_corners = tuple(int(s) for s in size), bool(align_corners)

    @property
    def init_args(self):
        return (list(self.size), self.align_corners)

    def forward(self, x, theta):
        grid = F.affine_grid(theta.reshape(-1, 2, 3), [x.shape[0], x.shape[1], *self.size],
                             align_corners=self.align_corners)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=self.align_corners)

    def extra_repr(self):
        return f"size={list(self.size)}, align_corners={self.align_corners}"
