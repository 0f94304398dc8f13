"""PyTorch module of the kind in ``hieradet.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch, nn and F).
Submodules carry timm's names, so timm's state_dict loads strictly."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class HieraDetBlock(nn.Module):
    """timm's HieraDet ``MultiScaleBlock`` on the tokens of an h x w map
    (B x N x C, N = h*w, row-major): norm1; where the width grows, the
    shortcut ``proj`` C -> C' then max-pooled (``pool``, q_stride); the map
    padded with zeros to whole windows and split into them (or kept whole,
    window 0); attention (``attn``: qkv, q max-pooled per window by
    ``attn.q_pool``, softmax(q k^T / sqrt(d)) v per head, proj); the windows
    put back, the padding cut; layer scale ``ls1``, added; then
    x + ls2(mlp(norm2(x))). Stochastic depth on both residual branches."""

    def __init__(self, dim, dim_out, heads, height, width, q_stride=None, window=0,
                 hidden=None, gamma=None, drop_path=0.0, eps=1e-6):
        super().__init__()
        self.init_args = (dim, dim_out, heads, height, width, q_stride, window, hidden, gamma,
                          drop_path, eps)
        hidden = hidden or 4 * dim_out
        self.dim, self.dim_out, self.map_size = dim, dim_out, (height, width)
        self.q_stride = tuple(q_stride) if q_stride else None
        self.window_size, self.drop_prob = (window, window), drop_path
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else nn.Identity()
        self.pool = nn.MaxPool2d(self.q_stride, self.q_stride) if self.q_stride else None
        attn = self.attn = nn.Module()
        attn.num_heads = heads
        attn.qkv = nn.Linear(dim, 3 * dim_out)
        attn.proj = nn.Linear(dim_out, dim_out)
        attn.q_pool = nn.MaxPool2d(self.q_stride, self.q_stride) if self.q_stride else None
        self.norm2 = nn.LayerNorm(dim_out, eps=eps)
        mlp = self.mlp = nn.Module()
        mlp.fc1, mlp.act, mlp.fc2 = nn.Linear(dim_out, hidden), nn.GELU(), \
            nn.Linear(hidden, dim_out)
        self.ls1 = self.ls2 = None
        if gamma is not None:
            self.ls1, self.ls2 = nn.Module(), nn.Module()
            self.ls1.gamma = nn.Parameter(torch.full((dim_out,), float(gamma)))
            self.ls2.gamma = nn.Parameter(torch.full((dim_out,), float(gamma)))

    def extra_repr(self):
        return (f"num_heads={self.attn.num_heads}, map_size={self.map_size}, "
                f"q_stride={self.q_stride}, window_size={self.window_size}, "
                f"drop_path={self.drop_prob}")

    def drop(self, x, ls):
        """Layer scale, then stochastic depth (per sample, the rest scaled by 1/(1 - p))."""
        if ls is not None:
            x = x * ls.gamma
        p = self.drop_prob
        if not self.training or p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
        return x * (keep / (1 - p) if p < 1 else keep)

    def attention(self, x):
        """timm's MultiScaleAttention on B' x H x W x C (windows, or the map)."""
        a = self.attn
        b, h, w, _ = x.shape
        q, k, v = torch.unbind(a.qkv(x).reshape(b, h * w, 3, a.num_heads, -1), 2)
        if a.q_pool is not None:
            q = a.q_pool(q.reshape(b, h, w, -1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, a.num_heads, -1)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2))
        return a.proj(x.transpose(1, 2).reshape(b, h, w, -1))

    @staticmethod
    def partition(x, ws):
        b, h, w, c = x.shape
        x = x.view(b, h // ws[0], ws[0], w // ws[1], ws[1], c)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws[0], ws[1], c)

    @staticmethod
    def unpartition(windows, ws, hp, wp):
        b = windows.shape[0] // (hp * wp // ws[0] // ws[1])
        x = windows.view(b, hp // ws[0], wp // ws[1], ws[0], ws[1], -1)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, hp, wp, -1)

    def forward(self, tokens):
        b, n, c = tokens.shape
        h, w = self.map_size
        shortcut = tokens.view(b, h, w, c)
        x = self.norm1(shortcut)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = self.pool(shortcut.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        ws = self.window_size
        windowed = ws[0] > 0
        if windowed:
            pad_h, pad_w = (-h) % ws[0], (-w) % ws[1]
            x = self.partition(F.pad(x, (0, 0, 0, pad_w, 0, pad_h)), ws)
        x = self.attention(x)
        if windowed:
            if self.q_stride is not None:
                ws = (ws[0] // self.q_stride[0], ws[1] // self.q_stride[1])
            h, w = shortcut.shape[1:3]
            x = self.unpartition(x, ws, h + (-h) % ws[0], w + (-w) % ws[1])
            x = x[:, :h, :w, :].contiguous()
        x = shortcut + self.drop(x, self.ls1)
        mlp = self.mlp
        x = x + self.drop(mlp.fc2(mlp.act(mlp.fc1(self.norm2(x)))), self.ls2)
        return x.reshape(b, -1, self.dim_out)
