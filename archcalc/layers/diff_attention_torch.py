"""PyTorch module of the kind in ``diff_attention.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch, nn and F)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DiffAttention(nn.Module):
    """timm's DiffAttention (fused form) with its state_dict keys (qkv,
    lambda_q1, lambda_k1, lambda_q2, lambda_k2 or lambda_a, lambda_b,
    sub_norm, norm, proj)."""

    def __init__(self, dim, heads, lambda_init=0.8, dual_lambda=False, bias=False,
                 proj_bias=True, norm=False, eps=1e-6):
        super().__init__()
        self.init_args = (dim, heads, lambda_init, dual_lambda, bias, proj_bias, norm, eps)
        self.num_heads, self.head_dim = heads, dim // heads // 2
        self.lambda_init = lambda_init
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        if dual_lambda:
            self.lambda_a = nn.Parameter(torch.zeros(()))
            self.lambda_b = nn.Parameter(torch.zeros(()))
        else:
            for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                setattr(self, name, nn.Parameter(torch.zeros(self.head_dim)))
        self.sub_norm = nn.RMSNorm(2 * self.head_dim, eps=1e-5)
        self.norm = nn.RMSNorm(dim, eps=eps) if norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, lambda_init={self.lambda_init}"

    def lambda_full(self):
        if hasattr(self, "lambda_a"):
            return torch.exp(self.lambda_a) - torch.exp(self.lambda_b) + self.lambda_init
        return torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1, dim=-1)) - \
            torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2, dim=-1)) + self.lambda_init

    def forward(self, x):
        b, n, c = x.shape
        h, hd = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).chunk(3, dim=2)
        q1, q2 = q.reshape(b, n, h, 2, hd).permute(3, 0, 2, 1, 4).unbind(0)
        k1, k2 = k.reshape(b, n, h, 2, hd).permute(3, 0, 2, 1, 4).unbind(0)
        v = v.reshape(b, n, h, 2 * hd).transpose(1, 2)
        lam = self.lambda_full().type_as(q)
        x = F.scaled_dot_product_attention(q1, k1, v) - \
            lam * F.scaled_dot_product_attention(q2, k2, v)
        x = self.sub_norm(x) * (1 - self.lambda_init)
        return self.proj(self.norm(x.transpose(1, 2).reshape(b, n, c)))
