"""PyTorch modules of the kinds in ``lambda_layer.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LambdaLayer(nn.Module):
    """timm's LambdaLayer, local form: the same submodule names (qkv, norm_q,
    norm_v, conv_lambda, pool), so its state dict loads."""

    def __init__(self, channels, heads=4, head_dim=16, r=9, stride=1, bias=False):
        super().__init__()
        self.init_args = (channels, heads, head_dim, r, stride, bias)
        self.num_heads, self.dim_qk, self.dim_v = heads, head_dim, channels // heads
        self.qkv = nn.Conv2d(channels, heads * head_dim + head_dim + self.dim_v, 1, bias=bias)
        self.norm_q = nn.BatchNorm2d(heads * head_dim)
        self.norm_v = nn.BatchNorm2d(self.dim_v)
        self.conv_lambda = nn.Conv3d(1, head_dim, (r, r, 1), padding=(r // 2, r // 2, 0))
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()

    def forward(self, x):
        b, c, h, w = x.shape
        m = h * w
        q, k, v = torch.split(self.qkv(x), [self.num_heads * self.dim_qk, self.dim_qk,
                                            self.dim_v], dim=1)
        q = self.norm_q(q).reshape(b, self.num_heads, self.dim_qk, m).transpose(-1, -2)
        v = self.norm_v(v).reshape(b, self.dim_v, m).transpose(-1, -2)
        k = F.softmax(k.reshape(b, self.dim_qk, m), dim=-1)
        content_out = q @ (k @ v).unsqueeze(1)
        position = self.conv_lambda(v.reshape(b, 1, h, w, self.dim_v))
        position = position.reshape(b, 1, self.dim_qk, m, self.dim_v).transpose(2, 3)
        position_out = (q.unsqueeze(-2) @ position).squeeze(-2)
        out = (content_out + position_out).transpose(-1, -2).reshape(b, c, h, w)
        return self.pool(out)
