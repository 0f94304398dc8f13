"""PyTorch module of the kind in ``attention_pool_2d.py`` (imported only by
its ``build``; ``archcalc export`` copies the class: only torch, nn and F)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AttentionPool2d(nn.Module):
    """timm's AttentionPool2d with its state_dict keys (cls_token, pos_embed,
    q, k, v or qkv, proj), at its own grid: the mean (or the class token) and
    the positions as tokens, plus the position embedding, self-attention, the
    projection, then the first token (or the others as a map)."""

    def __init__(self, in_features, feat_size, width, heads, out=0, bias=True, fused=False,
                 class_token=False, pool="token", dropout=0.0):
        super().__init__()
        self.init_args = (in_features, feat_size, width, heads, out, bias, fused, class_token,
                          pool, dropout)
        self.num_heads, self.head_dim, self.pool = heads, width // heads, pool
        self.cls_token = nn.Parameter(torch.zeros(1, in_features)) if class_token else None
        if fused:
            self.q = self.k = self.v = None
            self.qkv = nn.Linear(in_features, 3 * width, bias=bias)
        else:
            self.q = nn.Linear(in_features, width, bias=bias)
            self.k = nn.Linear(in_features, width, bias=bias)
            self.v = nn.Linear(in_features, width, bias=bias)
            self.qkv = None
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, out) if out else nn.Identity()
        self.pos_embed = nn.Parameter(torch.zeros(feat_size[0] * feat_size[1] + 1, in_features))

    def extra_repr(self):
        return f"num_heads={self.num_heads}, pool={self.pool!r}"

    def forward(self, x):
        b, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        first = x.mean(1, keepdim=True) if self.cls_token is None else \
            self.cls_token.expand(b, -1, -1)
        x = torch.cat([first, x], dim=1) + self.pos_embed.unsqueeze(0)
        t = x.shape[1]
        if self.qkv is None:
            q, k, v = (f(x).reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                       for f in (self.q, self.k, self.v))
        else:
            q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(
                2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        x = self.proj(self.drop(x))
        if self.pool == "token":
            return x[:, 0]
        return x[:, 1:].reshape(b, h, w, -1).permute(0, 3, 1, 2)
