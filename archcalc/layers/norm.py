"""Normalization: batch norm and local response norm (AlexNet's LRN)."""
from __future__ import annotations

from .. import sym
from .base import Arg, Kind, Saved, register

FP32 = 4


@register
class BatchNorm(Kind):
    name = "batch_norm"
    aliases = ("bn", "batchnorm")
    summary = "batch norm over channels (C x H x W) or features (F): affine, running stats as buffers"
    flops_rule = "2 per element (scale and shift, statistics folded at inference)"
    args = {
        "affine": Arg("bool", True),
        "eps": Arg("float", 1e-5, min=0.0),
        "momentum": Arg("float", 0.1, min=0.0, max=1.0),
    }

    def params(self, a, x):
        return 2 * x[0] if a.affine else 0

    def params_formula(self, a, x):
        return f"2*{sym.plain(x[0])}" if a.affine else None

    def buffers(self, a, x):
        return 2 * x[0]  # running mean and variance

    def flops(self, a, x, y):
        return 2 * sym.prod(y)

    def saved(self, a, x, y):
        # native_batch_norm keeps its input, the batch mean and inverse std
        # (fp32), and reads the running stats (buffers, counted once each).
        return Saved(input=True, per_batch=((4 * x[0], FP32),))

    def build(self, a, x):
        from torch import nn
        cls = nn.BatchNorm2d if len(x) == 3 else nn.BatchNorm1d
        return cls(x[0], eps=a.eps, momentum=a.momentum, affine=a.affine)


@register
class LocalResponseNorm(Kind):
    name = "lrn"
    aliases = ("local_response_norm",)
    primary = "size"
    summary = "local response norm across `size` neighbouring channels (AlexNet: size 5, k 2)"
    flops_rule = "2*size + 3 per element (squares and sums over the window, scale, shift, power, divide)"
    inputs = "chw"
    args = {
        "size": Arg("int", 5, min=1, numeric=True),
        "alpha": Arg("float", 1e-4, min=0.0),
        "beta": Arg("float", 0.75, min=0.0),
        "k": Arg("float", 2.0, min=0.0),
    }

    def flops(self, a, x, y):
        return sym.prod(y) * (2 * a.size + 3)

    def saved(self, a, x, y):
        # PyTorch composes LRN from x*x, pad, avg_pool3d, pow and div; autograd
        # keeps the input, the padded squares (C + size - 1 channels), the
        # power's input and its result.
        c, h, w = x
        return Saved(input=True, extra=(((c + a.size - 1) * h * w, None),
                                        (sym.prod(x), None), (sym.prod(x), None)))

    def build(self, a, x):
        from torch import nn
        return nn.LocalResponseNorm(a.size, a.alpha, a.beta, a.k)
