"""PyTorch module of the kind in ``attention_pool.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch, nn and F)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AttentionPool(nn.Module):
    """timm's AttentionPoolLatent with its state_dict keys (latent, q, kv,
    q_norm, k_norm, proj, norm, mlp.fc1, mlp.fc2): a learned latent query
    attends to the tokens, then x + mlp(norm(x)), then the pool."""

    def __init__(self, width, heads, latent=1, bias=True, qk_norm=False, mlp=None,
                 approximate="none", eps=1e-5, pool="token", dropout=0.0, norm=True):
        super().__init__()
        self.init_args = (width, heads, latent, bias, qk_norm, mlp, approximate, eps, pool,
                          dropout, norm)
        self.num_heads, self.head_dim, self.latent_len = heads, width // heads, latent
        self.pool = pool
        self.latent = nn.Parameter(torch.zeros(1, latent, width))
        self.q = nn.Linear(width, width, bias=bias)
        self.kv = nn.Linear(width, 2 * width, bias=bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width, eps=eps) if mlp and norm else nn.Identity()
        self.mlp = nn.Sequential() if mlp else None
        if mlp:
            # timm's Mlp's names, the dropouts and the norm empty
            self.mlp.add_module("fc1", nn.Linear(width, mlp))
            self.mlp.add_module("act", nn.GELU(approximate=approximate))
            self.mlp.add_module("drop1", nn.Dropout(0.0))
            self.mlp.add_module("norm", nn.Identity())
            self.mlp.add_module("fc2", nn.Linear(mlp, width))
            self.mlp.add_module("drop2", nn.Dropout(0.0))

    def extra_repr(self):
        return f"num_heads={self.num_heads}, latent_len={self.latent_len}, pool={self.pool!r}"

    def forward(self, x):
        b, n, d = x.shape
        # F.linear, not self.q(...): FlopCounterMode's module tracker refuses an
        # expanded parameter as a module's input (no grad_fn under no_grad)
        q = F.linear(self.latent.expand(b, -1, -1), self.q.weight, self.q.bias)
        q = q.reshape(b, self.latent_len, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        x = self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, self.latent_len, d)))
        if self.mlp is not None:
            x = x + self.mlp(self.norm(x))
        if self.pool == "token":
            return x[:, 0]
        return x.mean(1) if self.pool == "avg" else x
