"""PyTorch module of the kind in ``swiftformer.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch, nn and F). Its
parameters are timm's EfficientAdditiveAttention's (to_query, to_key, w_g,
proj, final), so timm's state_dict loads strictly."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AdditiveAttention(nn.Module):
    """SwiftFormer's efficient additive attention on a map's tokens."""

    def __init__(self, in_dims, token_dim, num_heads=1):
        super().__init__()
        self.init_args = (in_dims, token_dim, num_heads)
        self.scale_factor = token_dim ** -0.5
        self.to_query = nn.Linear(in_dims, token_dim * num_heads)
        self.to_key = nn.Linear(in_dims, token_dim * num_heads)
        self.w_g = nn.Parameter(torch.randn(token_dim * num_heads, 1))
        self.proj = nn.Linear(token_dim * num_heads, token_dim * num_heads)
        self.final = nn.Linear(token_dim * num_heads, token_dim)

    def forward(self, x):
        b, _, h, w = x.shape
        x = x.flatten(2).permute(0, 2, 1)
        query = F.normalize(self.to_query(x), dim=-1)
        key = F.normalize(self.to_key(x), dim=-1)
        attn = F.normalize(query @ self.w_g * self.scale_factor, dim=1)
        attn = torch.sum(attn * query, dim=1, keepdim=True)
        out = self.proj(attn * key) + query
        return self.final(out).permute(0, 2, 1).reshape(b, -1, h, w)
