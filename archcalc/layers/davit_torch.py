"""PyTorch modules of the kinds in ``davit.py`` (DaViT's channel attention and
spatial block).

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class with ``inspect.getsource``: a class uses only ``torch``, ``nn`` and
``F``. Each keeps timm's submodule names, so timm's state_dict loads
strictly."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """DaViT's channel attention on tokens (B, N, D): per head, D/h x D/h
    scores over the N tokens. ``order`` "kvq" (timm's ChannelAttention):
    softmax(k^T v * (D/h)^-0.5) applied to q; "qkv" (ChannelAttentionV2):
    softmax(q^T k * s) applied to v, s = N^-0.5 (``scale`` "tokens") or
    (D/h)^-0.5 ("head"). Then proj."""

    def __init__(self, dim, num_heads, qkv_bias=True, order="kvq", scale="head"):
        super().__init__()
        self.init_args = (dim, num_heads, qkv_bias, order, scale)
        self.num_heads, self.order, self.scale_by = num_heads, order, scale
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, order={self.order!r}, scale={self.scale_by!r}"

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.order == "kvq":     # timm's: the scores of k and v mix q's channels
            q, k, v = k, v, q
        scale = n ** -0.5 if self.scale_by == "tokens" else (c // self.num_heads) ** -0.5
        attn = ((q * scale).transpose(-1, -2) @ k).softmax(dim=-1)
        x = (attn @ v.transpose(-1, -2)).transpose(-1, -2)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class SpatialBlock(nn.Module):
    """timm's DaViT SpatialBlock on a (B, C, H, W) map: x + cpe1(x) (a
    depthwise 3x3 conv, GELU where ``cpe_act``); + window attention of
    norm1(x) (zero-padded to whole windows, no shift, no position bias); x +
    cpe2(x); + mlp(norm2(x)). Plain containers (cpe1, attn, mlp) keep timm's
    parameter names in one class."""

    def __init__(self, dim, num_heads, window_size, hidden, qkv_bias=True, cpe_act=False,
                 eps=1e-5):
        super().__init__()
        self.init_args = (dim, num_heads, tuple(window_size), hidden, qkv_bias, cpe_act, eps)
        self.window_size = tuple(window_size)
        for name in ("cpe1", "cpe2"):
            cpe = nn.Module()
            cpe.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            cpe.act = nn.GELU() if cpe_act else nn.Identity()
            setattr(self, name, cpe)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = nn.Module()
        self.attn.num_heads, self.attn.scale = num_heads, (dim // num_heads) ** -0.5
        self.attn.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def extra_repr(self):
        return f"num_heads={self.attn.num_heads}, window_size={self.window_size}"

    @staticmethod
    def cpe(m, x):
        return x + m.act(m.proj(x))

    def windows(self, x):
        """Window attention on a (B, H, W, C) map, padded to whole windows."""
        b, h, w, c = x.shape
        (wh, ww), heads = self.window_size, self.attn.num_heads
        x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
        _, ph, pw, _ = x.shape
        x = x.view(b, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(-1, wh * ww, c)
        qkv = self.attn.qkv(x).reshape(x.shape[0], wh * ww, 3, heads, c // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = self.attn.proj((attn @ v).transpose(1, 2).reshape(-1, wh * ww, c))
        x = x.view(b, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, ph, pw, c)[:, :h, :w, :]

    def forward(self, x):
        b, c, h, w = x.shape
        x = self.cpe(self.cpe1, x).flatten(2).transpose(1, 2)
        x = x + self.windows(self.norm1(x).view(b, h, w, c)).reshape(b, h * w, c)
        x = self.cpe(self.cpe2, x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        x = x + self.mlp.fc2(self.mlp.act(self.mlp.fc1(self.norm2(x))))
        return x.transpose(1, 2).reshape(b, c, h, w)
