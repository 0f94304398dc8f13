"""PyTorch modules of the kinds in ``bottleneck_attention.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BottleneckAttention(nn.Module):
    """timm's BottleneckAttn (BoTNet): the same submodule names (qkv,
    pos_embed.height_rel, pos_embed.width_rel, pool), so its state dict loads.
    The relative logits are a nested class: export copies this class alone."""

    class RelativeLogits(nn.Module):
        """timm's PosEmbedRel: learned (2H-1) and (2W-1) x head_dim tables; q's
        product with each, shifted from relative to absolute positions."""

        def __init__(self, size, head_dim):
            super().__init__()
            self.height, self.width = size
            self.height_rel = nn.Parameter(torch.randn(2 * self.height - 1, head_dim) * 0.02)
            self.width_rel = nn.Parameter(torch.randn(2 * self.width - 1, head_dim) * 0.02)

        @staticmethod
        def along(q, rel, permute):
            b, h, w, _ = q.shape
            x = (q @ rel.transpose(-1, -2)).reshape(-1, w, 2 * w - 1)
            x = F.pad(F.pad(x, [0, 1]).flatten(1), [0, w - 1]).reshape(-1, w + 1, 2 * w - 1)
            x = x[:, :w, w - 1:].reshape(b, h, 1, w, w).expand(-1, -1, h, -1, -1)
            return x.permute(permute)

        def forward(self, q):
            b, hw, _ = q.shape
            q = q.reshape(b, self.height, self.width, -1)
            logits_w = self.along(q, self.width_rel, (0, 1, 3, 2, 4))
            logits_h = self.along(q.transpose(1, 2), self.height_rel, (0, 3, 1, 4, 2))
            return (logits_h + logits_w).reshape(b, hw, hw)

    def __init__(self, channels, out, size, heads=4, head_dim=None, stride=1, bias=False,
                 scale_pos_embed=False):
        super().__init__()
        self.init_args = (channels, out, tuple(size), heads, head_dim, stride, bias,
                          scale_pos_embed)
        self.num_heads = heads
        self.dim_head_qk = head_dim or out // heads
        self.dim_head_v = out // heads
        self.dim_out_qk = heads * self.dim_head_qk
        self.dim_out_v = out
        self.scale = self.dim_head_qk ** -0.5
        self.scale_pos_embed = scale_pos_embed
        self.qkv = nn.Conv2d(channels, 2 * self.dim_out_qk + out, 1, bias=bias)
        self.pos_embed = self.RelativeLogits(size, self.dim_head_qk)
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()

    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = torch.split(self.qkv(x), [self.dim_out_qk, self.dim_out_qk, self.dim_out_v],
                              dim=1)
        q = q.reshape(b * self.num_heads, self.dim_head_qk, -1).transpose(-1, -2)
        k = k.reshape(b * self.num_heads, self.dim_head_qk, -1)
        v = v.reshape(b * self.num_heads, self.dim_head_v, -1).transpose(-1, -2)
        if self.scale_pos_embed:
            attn = (q @ k + self.pos_embed(q)) * self.scale
        else:
            attn = (q @ k) * self.scale + self.pos_embed(q)
        out = (attn.softmax(dim=-1) @ v).transpose(-1, -2).reshape(b, self.dim_out_v, h, w)
        return self.pool(out)
