"""PyTorch modules of the kinds in ``tiny_vit.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TinyVitBlock(nn.Module):
    """TinyViT's block (timm.models.tiny_vit.TinyVitBlock) on the tokens of
    an h x w map (B x N x C, N = h*w): window attention on the map padded to
    whole windows (``attn``: ``norm``, ``qkv``, ``attention_biases`` gathered
    by ``attention_bias_idxs``, ``proj``), the depthwise conv and batch norm
    (``local_conv``: ``conv``, ``bn``), the MLP (``mlp``: ``norm``, ``fc1``,
    ``act``, ``drop1``, ``fc2``, ``drop2``), stochastic depth on both
    residual branches; timm's names, so its state_dict loads strictly."""

    def __init__(self, dim, heads, window, height, width, hidden, kernel=3, drop_path=0.0,
                 dropout=0.0, eps=1e-5):
        super().__init__()
        self.init_args = (dim, heads, window, height, width, hidden, kernel, drop_path, dropout,
                          eps)
        self.dim, self.num_heads, self.window_size = dim, heads, window
        self.map_size, self.drop_prob = (height, width), drop_path
        hd = dim // heads
        attn = self.attn = nn.Module()
        attn.num_heads, attn.key_dim, attn.val_dim, attn.out_dim = heads, hd, hd, dim
        attn.scale, attn.resolution = hd ** -0.5, (window, window)
        attn.norm = nn.LayerNorm(dim, eps=eps)
        attn.qkv = nn.Linear(dim, 3 * dim)
        attn.proj = nn.Linear(dim, dim)
        attn.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        points = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)
        offsets = (points[:, :, None] - points[:, None, :]).abs()     # |dy|, |dx| per pair
        attn.register_buffer("attention_bias_idxs", offsets[0] * window + offsets[1],
                             persistent=False)
        self.local_conv = nn.Module()
        self.local_conv.conv = nn.Conv2d(dim, dim, kernel, 1, kernel // 2, groups=dim, bias=False)
        self.local_conv.bn = nn.BatchNorm2d(dim, eps=eps)
        mlp = self.mlp = nn.Module()
        mlp.norm = nn.LayerNorm(dim, eps=eps)
        mlp.fc1, mlp.act, mlp.drop1 = nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout)
        mlp.fc2, mlp.drop2 = nn.Linear(hidden, dim), nn.Dropout(dropout)

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, window_size={self.window_size}, "
                f"map_size={self.map_size}, drop_path={self.drop_prob}")

    def drop(self, x):
        """Stochastic depth: each sample's branch dropped with p, the rest scaled by 1/(1 - p)."""
        p = self.drop_prob
        if not self.training or p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
        return x * (keep / (1 - p) if p < 1 else keep)

    def attention(self, x):
        """Multi-head attention within each window (B*windows x M*M x C)."""
        at = self.attn
        bias = at.attention_biases[:, at.attention_bias_idxs]
        bn, t, c = x.shape
        q, k, v = at.qkv(at.norm(x)).view(bn, t, at.num_heads, -1).split(
            [at.key_dim, at.key_dim, at.val_dim], dim=3)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), attn_mask=bias)
        return at.proj(x.transpose(1, 2).reshape(bn, t, c))

    def forward(self, tokens):
        b, n, c = tokens.shape
        (h, w), m = self.map_size, self.window_size
        x = tokens.view(b, h, w, c)
        pad_b, pad_r = (-h) % m, (-w) % m
        a = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if pad_b or pad_r else x
        ph, pw = h + pad_b, w + pad_r
        a = a.view(b, ph // m, m, pw // m, m, c).transpose(2, 3).reshape(-1, m * m, c)
        a = self.attention(a).view(b, ph // m, pw // m, m, m, c).transpose(2, 3)
        x = x + self.drop(a.reshape(b, ph, pw, c)[:, :h, :w])
        x = self.local_conv.bn(self.local_conv.conv(x.permute(0, 3, 1, 2)))
        x = x.reshape(b, c, n).transpose(1, 2)
        mlp = self.mlp
        return x + self.drop(mlp.drop2(mlp.fc2(mlp.drop1(mlp.act(mlp.fc1(mlp.norm(x)))))))
