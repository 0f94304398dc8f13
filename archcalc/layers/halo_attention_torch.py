"""PyTorch modules of the kinds in ``halo_attention.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class HaloAttention(nn.Module):
    """timm's HaloAttn (HaloNet): the same submodule names (q, kv,
    pos_embed.height_rel, pos_embed.width_rel, pool), so its state dict loads.
    The relative logits are a nested class: export copies this class alone."""

    class RelativeLogits(nn.Module):
        """timm's halo PosEmbedRel: (2w-1) x head_dim tables per axis, q's
        product with each, shifted from relative to absolute positions."""

        def __init__(self, block, window, head_dim):
            super().__init__()
            self.block_size, self.dim_head = block, head_dim
            self.height_rel = nn.Parameter(torch.randn(2 * window - 1, head_dim) * 0.02)
            self.width_rel = nn.Parameter(torch.randn(2 * window - 1, head_dim) * 0.02)

        @staticmethod
        def along(q, rel, permute):
            b, h, w, _ = q.shape
            size = rel.shape[0]
            window = (size + 1) // 2
            x = (q @ rel.transpose(-1, -2)).reshape(-1, w, size)
            x = F.pad(F.pad(x, [0, 1]).flatten(1), [0, size - w]).reshape(-1, w + 1, size)
            x = x[:, :w, window - 1:].reshape(b, h, 1, w, window).expand(-1, -1, window, -1, -1)
            return x.permute(permute)

        def forward(self, q):
            b, bb, hw, _ = q.shape
            q = q.reshape(-1, self.block_size, self.block_size, self.dim_head)
            logits_w = self.along(q, self.width_rel, (0, 1, 3, 2, 4))
            logits_h = self.along(q.transpose(1, 2), self.height_rel, (0, 3, 1, 4, 2))
            return (logits_h + logits_w).reshape(b, bb, hw, -1)

    def __init__(self, channels, out, heads=8, head_dim=None, block=8, halo=3, stride=1,
                 avg_down=False, bias=False, scale_pos_embed=False):
        super().__init__()
        self.init_args = (channels, out, heads, head_dim, block, halo, stride, avg_down, bias,
                          scale_pos_embed)
        self.num_heads = heads
        self.dim_head_qk = head_dim or out // heads
        self.dim_head_v = out // heads
        self.dim_out_qk = heads * self.dim_head_qk
        self.dim_out_v = out
        self.scale = self.dim_head_qk ** -0.5
        self.scale_pos_embed = scale_pos_embed
        self.block_size = self.block_size_ds = block
        self.halo_size = halo
        self.win_size = block + 2 * halo
        pooled = stride == 2 and (avg_down or block % 2 != 0)
        self.block_stride = 2 if stride == 2 and not pooled else 1
        self.block_size_ds = block // self.block_stride
        self.q = nn.Conv2d(channels, self.dim_out_qk, 1, stride=self.block_stride, bias=bias)
        self.kv = nn.Conv2d(channels, self.dim_out_qk + out, 1, bias=bias)
        self.pos_embed = self.RelativeLogits(self.block_size_ds, self.win_size, self.dim_head_qk)
        self.pool = nn.AvgPool2d(2, 2) if pooled else nn.Identity()

    def forward(self, x):
        b, _, h, w = x.shape
        bs, ds = self.block_size, self.block_size_ds
        nh, nw = h // bs, w // bs
        q = self.q(x).reshape(-1, self.dim_head_qk, nh, ds, nw, ds).permute(0, 1, 3, 5, 2, 4)
        q = q.reshape(b * self.num_heads, self.dim_head_qk, -1, nh * nw).transpose(1, 3)
        kv = F.pad(self.kv(x), [self.halo_size] * 4)
        kv = kv.unfold(2, self.win_size, bs).unfold(3, self.win_size, bs).reshape(
            b * self.num_heads, self.dim_head_qk + self.dim_head_v, nh * nw, -1).permute(0, 2, 3, 1)
        k, v = torch.split(kv, [self.dim_head_qk, self.dim_head_v], dim=-1)
        if self.scale_pos_embed:
            attn = (q @ k.transpose(-1, -2) + self.pos_embed(q)) * self.scale
        else:
            attn = (q @ k.transpose(-1, -2)) * self.scale + self.pos_embed(q)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 3)
        out = out.reshape(-1, ds, ds, nh, nw).permute(0, 3, 1, 4, 2).contiguous().view(
            b, self.dim_out_v, h // self.block_stride, w // self.block_stride)
        return self.pool(out)
