"""PyTorch module of the kind in ``parallel_block.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch, nn and F)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ParallelBlock(nn.Module):
    """timm's ParallelScalingBlock with its state_dict keys (in_norm, in_proj,
    mlp_bias, q_norm, k_norm, attn_out_proj and mlp_out_proj or out_proj,
    ls.gamma)."""

    def __init__(self, dim, heads, mlp, norm="layer_norm", eps=1e-6, bias=False,
                 qk_norm=False, proj_bias=True, fuse_out=False, layer_scale=None,
                 activation="gelu"):
        super().__init__()
        self.init_args = (dim, heads, mlp, norm, eps, bias, qk_norm, proj_bias, fuse_out,
                          layer_scale, activation)
        self.num_heads, self.head_dim = heads, dim // heads
        self.in_split = [mlp, dim, dim, dim]

        def make_norm(width):
            return nn.LayerNorm(width, eps=eps) if norm == "layer_norm" else \
                nn.RMSNorm(width, eps=eps)
        self.in_norm = make_norm(dim)
        self.in_proj = nn.Linear(dim, mlp + 3 * dim, bias=bias)
        self.mlp_bias = None if bias else nn.Parameter(torch.zeros(mlp))
        self.q_norm = make_norm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = make_norm(self.head_dim) if qk_norm else nn.Identity()
        self.mlp_act = nn.GELU() if activation == "gelu" else nn.SiLU()
        if fuse_out:
            self.out_proj = nn.Linear(dim + mlp, dim, bias=proj_bias)
            self.attn_out_proj = self.mlp_out_proj = None
        else:
            self.out_proj = None
            self.attn_out_proj = nn.Linear(dim, dim, bias=proj_bias)
            self.mlp_out_proj = nn.Linear(mlp, dim, bias=proj_bias)
        self.ls = nn.Identity() if layer_scale is None else nn.Module()
        if layer_scale is not None:
            self.ls.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def extra_repr(self):
        return f"num_heads={self.num_heads}, mlp={self.in_split[0]}"

    def forward(self, x):
        b, n, c = x.shape
        x_mlp, q, k, v = torch.split(self.in_proj(self.in_norm(x)), self.in_split, dim=-1)
        if self.mlp_bias is not None:
            x_mlp = x_mlp + self.mlp_bias
        q = self.q_norm(q.view(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        v = v.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        x_attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x_mlp = self.mlp_act(x_mlp)
        if self.out_proj is not None:
            y = self.out_proj(torch.cat((x_attn, x_mlp), dim=-1))
        else:
            y = self.attn_out_proj(x_attn) + self.mlp_out_proj(x_mlp)
        if not isinstance(self.ls, nn.Identity):
            y = y * self.ls.gamma
        return x + y
