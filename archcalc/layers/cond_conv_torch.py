"""PyTorch module of the kind in ``cond_conv.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch, nn and F)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CondConvBlock(nn.Module):
    """timm's CondConvResidual with its state_dict keys (routing_fn, conv_pw,
    bn1, conv_dw, bn2, se.conv_reduce, se.conv_expand, conv_pwl, bn3; each
    conv's ``weight`` E x (its weight count)) and its forward: each sample's
    kernels mixed from the experts by its routing weights, the batch run as
    groups of one grouped convolution."""

    def __init__(self, channels, out, mid, experts=4, kernel=3, stride=1, exp_kernel=1,
                 pw_kernel=1, squeeze=None, activation="SiLU", same=False, skip=True,
                 eps=1e-5):
        super().__init__()
        self.init_args = (channels, out, mid, experts, kernel, stride, exp_kernel, pw_kernel,
                          squeeze, activation, same, skip, eps)
        self.same, self.skip = same, skip
        # (in, out, kernel, stride, groups) of each conv
        self.shapes = {"conv_pw": (channels, mid, exp_kernel, 1, 1),
                       "conv_dw": (mid, mid, kernel, stride, mid),
                       "conv_pwl": (mid, out, pw_kernel, 1, 1)}
        for name, (cin, cout, k, _, groups) in self.shapes.items():
            conv = nn.Module()
            conv.weight = nn.Parameter(torch.empty(experts, cout * (cin // groups) * k * k))
            nn.init.normal_(conv.weight, std=(cin // groups * k * k) ** -0.5)
            setattr(self, name, conv)
        self.bn1, self.bn2 = nn.BatchNorm2d(mid, eps=eps), nn.BatchNorm2d(mid, eps=eps)
        self.bn3 = nn.BatchNorm2d(out, eps=eps)
        self.act = getattr(nn, activation)()
        self.se = nn.Identity()
        if squeeze is not None:
            self.se = nn.Module()
            self.se.conv_reduce = nn.Conv2d(mid, squeeze, 1)
            self.se.conv_expand = nn.Conv2d(squeeze, mid, 1)
        self.routing_fn = nn.Linear(channels, experts)

    def extra_repr(self):
        return f"experts={self.routing_fn.out_features}, shapes={self.shapes}"

    @staticmethod
    def same_pad(x, k, s):
        """TensorFlow's 'same': ceil(size / s) out, one more after than before."""
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def cond_conv(self, name, x, routing):
        cin, cout, k, s, groups = self.shapes[name]
        b, c, h, w = x.shape
        weight = torch.matmul(routing, getattr(self, name).weight)
        weight = weight.view(b * cout, cin // groups, k, k)
        if self.same and not (s == 1 and (k - 1) % 2 == 0):
            x, padding = self.same_pad(x, k, s), 0
        else:
            padding = (k - 1) // 2 if self.same else ((s - 1) + (k - 1)) // 2
        out = F.conv2d(x.reshape(1, b * c, x.shape[-2], x.shape[-1]), weight, None, s,
                       padding, 1, groups * b)
        return out.permute([1, 0, 2, 3]).view(b, cout, out.shape[-2], out.shape[-1])

    def forward(self, x):
        shortcut = x
        routing = torch.sigmoid(self.routing_fn(F.adaptive_avg_pool2d(x, 1).flatten(1)))
        x = self.act(self.bn1(self.cond_conv("conv_pw", x, routing)))
        x = self.act(self.bn2(self.cond_conv("conv_dw", x, routing)))
        if not isinstance(self.se, nn.Identity):
            gate = self.se.conv_expand(self.act(self.se.conv_reduce(x.mean((2, 3), keepdim=True))))
            x = x * gate.sigmoid()
        x = self.bn3(self.cond_conv("conv_pwl", x, routing))
        return x + shortcut if self.skip else x
