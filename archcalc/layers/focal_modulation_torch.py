"""PyTorch modules of the kinds in ``focal_modulation.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class FocalModulation(nn.Module):
    """timm's FocalModulation (FocalNet): the same submodule names (f, h, act,
    proj, proj_drop, focal_layers.i.0, norm), so its state dict loads, and the
    same forward. The post norm is a layer norm over the channels (timm's
    LayerNorm2d)."""

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)

    def __init__(self, dim, focal_window=3, focal_level=2, focal_factor=2, bias=True,
                 use_post_norm=False, normalize_modulator=False, proj_drop=0.0, eps=1e-5):
        super().__init__()
        self.init_args = (dim, focal_window, focal_level, focal_factor, bias, use_post_norm,
                          normalize_modulator, proj_drop, eps)
        self.focal_window, self.focal_level, self.focal_factor = (focal_window, focal_level,
                                                                  focal_factor)
        self.normalize_modulator = normalize_modulator
        self.input_split = [dim, dim, focal_level + 1]
        self.f = nn.Conv2d(dim, 2 * dim + focal_level + 1, 1, bias=bias)
        self.h = nn.Conv2d(dim, dim, 1, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)
        self.focal_layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim, dim, focal_factor * k + focal_window, groups=dim,
                                    padding=(focal_factor * k + focal_window) // 2, bias=False),
                          nn.GELU())
            for k in range(focal_level)])
        self.norm = self.LayerNorm2d(dim, eps=eps) if use_post_norm else nn.Identity()

    def forward(self, x):
        q, ctx, gates = torch.split(self.f(x), self.input_split, 1)
        ctx_all = 0
        for level, focal_layer in enumerate(self.focal_layers):
            ctx = focal_layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level:level + 1]
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level:]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        return self.proj_drop(self.proj(self.norm(q * self.h(ctx_all))))
