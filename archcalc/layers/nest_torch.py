"""PyTorch module of the kind in ``nest.py`` (NesT's level).

Imported only by that kind's ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies the
class with ``inspect.getsource``: it uses only ``torch``, ``nn`` and ``F``,
and keeps timm's parameter names (pool, pos_embed, transformer_encoder), so
timm's state_dict loads strictly."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NestLevel(nn.Module):
    """timm's NestLevel on a (B, C, H, W) map: ConvPool where ``pooled`` (3x3
    conv, layer norm over the channels, 3x3 stride-2 max pool), the map cut
    into b x b blocks (B, T, N, D) plus a position embedding, ``depth``
    pre-norm transformer layers attending within each block, the blocks read
    back as a map."""

    def __init__(self, in_dim, dim, depth, num_heads, block_size, num_blocks, seq_length,
                 hidden, pooled=True, qkv_bias=True, eps=1e-6, drop_rates=None,
                 pool_same=False):
        super().__init__()
        drop_rates = list(drop_rates or [0.0] * depth)
        self.init_args = (in_dim, dim, depth, num_heads, block_size, num_blocks, seq_length,
                          hidden, pooled, qkv_bias, eps, drop_rates, pool_same)
        self.drop_rates, self.pool_same = drop_rates, pool_same
        self.num_heads, self.block_size = num_heads, block_size
        self.pos_embed = nn.Parameter(torch.zeros(1, num_blocks, seq_length, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if pooled:
            self.pool = nn.Module()
            self.pool.conv = nn.Conv2d(in_dim, dim, 3, padding=1)
            self.pool.norm = nn.LayerNorm(dim, eps=eps)
        self.transformer_encoder = nn.ModuleList()
        for _ in range(depth):
            layer = nn.Module()
            layer.norm1 = nn.LayerNorm(dim, eps=eps)
            layer.attn = nn.Module()
            layer.attn.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
            layer.attn.proj = nn.Linear(dim, dim)
            layer.norm2 = nn.LayerNorm(dim, eps=eps)
            layer.mlp = nn.Module()
            layer.mlp.fc1, layer.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
            self.transformer_encoder.append(layer)

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, block_size={self.block_size}, "
                f"pool_same={self.pool_same}")

    def drop_path(self, x, p):
        """Stochastic depth: a sample's branch dropped with probability p (training)."""
        if not p or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
        return x * keep / (1 - p)

    def attention(self, attn, x):
        b, t, n, c = x.shape
        heads = self.num_heads
        qkv = attn.qkv(x).reshape(b, t, n, 3, heads, c // heads).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv.unbind(0)
        scores = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
        x = (scores.softmax(dim=-1) @ v).permute(0, 2, 3, 4, 1).reshape(b, t, n, c)
        return attn.proj(x)

    def forward(self, x):
        pool = getattr(self, "pool", None)
        if pool is not None:
            x = pool.conv(x)
            x = pool.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            if self.pool_same:    # TF's same padding of an even map: bottom and right
                x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
            else:
                x = F.max_pool2d(x, 3, 2, 1)
        bsz, c, h, w = x.shape
        s = self.block_size
        x = x.permute(0, 2, 3, 1).reshape(bsz, h // s, s, w // s, s, c)
        x = x.transpose(2, 3).reshape(bsz, (h // s) * (w // s), s * s, c) + self.pos_embed
        for layer, p in zip(self.transformer_encoder, self.drop_rates):
            x = x + self.drop_path(self.attention(layer.attn, layer.norm1(x)), p)
            x = x + self.drop_path(layer.mlp.fc2(F.gelu(layer.mlp.fc1(layer.norm2(x)))), p)
        x = x.reshape(bsz, h // s, w // s, s, s, c).transpose(2, 3).reshape(bsz, h, w, c)
        return x.permute(0, 3, 1, 2)
