"""PyTorch module of the kind in ``efficientformer.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch, nn and F)."""
from __future__ import annotations

import torch
from torch import nn


class EfficientFormerAttention(nn.Module):
    """timm's efficientformer Attention with its state_dict keys (qkv, proj,
    attention_biases, the persistent attention_bias_idxs)."""

    def __init__(self, dim, heads, key_dim, val_dim, grid):
        super().__init__()
        self.init_args = (dim, heads, key_dim, val_dim, grid)
        self.num_heads, self.key_dim, self.val_dim = heads, key_dim, val_dim
        self.scale = key_dim ** -0.5
        self.qkv = nn.Linear(dim, heads * (2 * key_dim + val_dim))
        self.proj = nn.Linear(heads * val_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, grid[0] * grid[1]))
        self.register_buffer("attention_bias_idxs", self.bias_index(grid))

    @staticmethod
    def bias_index(grid):
        """(h*w) x (h*w): the offset |dy| * w + |dx| of each pair of positions."""
        pos = torch.stack(torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]),
                                         indexing="ij")).flatten(1)
        offsets = (pos[..., :, None] - pos[..., None, :]).abs()
        return offsets[0] * grid[1] + offsets[1]

    def extra_repr(self):
        return f"num_heads={self.num_heads}, key_dim={self.key_dim}, val_dim={self.val_dim}"

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + \
            self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(x)
