"""PyTorch module of the kind in ``visformer.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch, nn and F)."""
from __future__ import annotations

from torch import nn


class VisformerAttention(nn.Module):
    """timm's visformer Attention (its unfused form, timm's default) with its
    state_dict keys (qkv, proj)."""

    def __init__(self, dim, heads, head_dim):
        super().__init__()
        self.init_args = (dim, heads, head_dim)
        self.num_heads, self.head_dim = heads, head_dim
        self.scale = head_dim ** -0.5
        self.qkv = nn.Conv2d(dim, 3 * heads * head_dim, 1, bias=False)
        self.proj = nn.Conv2d(heads * head_dim, dim, 1, bias=False)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.num_heads, self.head_dim, -1).permute(
            1, 0, 2, 4, 3).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).permute(0, 1, 3, 2).reshape(b, -1, h, w)
        return self.proj(x)
