"""PyTorch module of the kind in ``shvit.py`` (imported only by its ``build``;
``archcalc export`` copies the class: only torch, nn and F). Its submodules
are timm's SHSA's (pre_norm; qkv.c, qkv.bn; proj.0 the ReLU, proj.1.c,
proj.1.bn), so timm's state_dict loads strictly."""
from __future__ import annotations

import torch
from torch import nn


class ShvitAttention(nn.Module):
    """SHViT's single-head self-attention on the first pdim channels of a map."""

    def __init__(self, dim, qk_dim, pdim, eps=1e-5):
        super().__init__()
        self.init_args = (dim, qk_dim, pdim, eps)
        self.dim, self.qk_dim, self.pdim = dim, qk_dim, pdim
        self.scale = qk_dim ** -0.5
        self.pre_norm = nn.GroupNorm(1, pdim, eps=eps)
        self.qkv = self.conv_norm(pdim, 2 * qk_dim + pdim, eps)
        self.proj = nn.Sequential(nn.ReLU(), self.conv_norm(dim, dim, eps))

    @staticmethod
    def conv_norm(cin, cout, eps):
        """timm's Conv2dNorm: a 1x1 conv without a bias (c), a batch norm (bn)."""
        seq = nn.Sequential()
        seq.add_module("c", nn.Conv2d(cin, cout, 1, bias=False))
        seq.add_module("bn", nn.BatchNorm2d(cout, eps=eps))
        return seq

    def extra_repr(self):
        return f"dim={self.dim}, qk_dim={self.qk_dim}, pdim={self.pdim}"

    def forward(self, x):
        b, _, h, w = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        qkv = self.qkv(self.pre_norm(x1))
        q, k, v = torch.split(qkv, [self.qk_dim, self.qk_dim, self.pdim], dim=1)
        q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        x1 = (v @ attn.transpose(-2, -1)).reshape(b, self.pdim, h, w)
        return self.proj(torch.cat([x1, x2], dim=1))
