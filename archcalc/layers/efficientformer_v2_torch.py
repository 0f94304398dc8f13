"""PyTorch modules of the kinds in ``efficientformer_v2.py`` (imported only by
their ``build``; ``archcalc export`` copies each class: only torch, nn and
F). Their submodules are timm's Attention2d's and Attention2dDownsample's
(each ConvNorm a ``conv`` and a ``bn``; the bias index a non-persistent
buffer, as timm's), so timm's state_dict loads strictly."""
from __future__ import annotations

import torch
from torch import nn


class EfficientFormerV2Attention(nn.Module):
    """EfficientFormer-V2's Attention2d on a C x H x W map: talking heads,
    offset biases, v_local; at stride s on the map a depthwise conv subsamples,
    upsampled by s after."""

    def __init__(self, dim, key_dim, num_heads, val_dim, size, stride=1, act="GELU",
                 eps=1e-5):
        super().__init__()
        self.init_args = (dim, key_dim, num_heads, val_dim, size, stride, act, eps)
        self.num_heads, self.key_dim, self.d = num_heads, key_dim, val_dim
        self.dh = val_dim * num_heads
        self.scale = key_dim ** -0.5

        def conv_norm(cin, cout, k=1, s=1, groups=1):
            seq = nn.Sequential()     # timm's ConvNorm: conv (with a bias), bn
            seq.add_module("conv", nn.Conv2d(cin, cout, k, s, k // 2, groups=groups))
            seq.add_module("bn", nn.BatchNorm2d(cout, eps=eps))
            return seq

        if stride > 1:
            self.stride_conv = conv_norm(dim, dim, 3, stride, dim)
            self.upsample = nn.Upsample(scale_factor=stride, mode="bilinear")
            size = tuple((r - 1) // stride + 1 for r in size)
        else:
            self.stride_conv = self.upsample = None
        self.resolution = tuple(size)
        self.N = size[0] * size[1]
        kh = key_dim * num_heads
        self.q = conv_norm(dim, kh)
        self.k = conv_norm(dim, kh)
        self.v = conv_norm(dim, self.dh)
        self.v_local = conv_norm(self.dh, self.dh, 3, 1, self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.act = getattr(nn, act)()
        self.proj = conv_norm(self.dh, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, self.N))
        self.register_buffer("attention_bias_idxs", self.bias_index(size), persistent=False)

    @staticmethod
    def bias_index(size):
        """N x N: the offset |dy| * w + |dx| of each pair of positions."""
        pos = torch.stack(torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]),
                                         indexing="ij")).flatten(1)
        rel = (pos[..., :, None] - pos[..., None, :]).abs()
        return rel[0] * size[1] + rel[1]

    def extra_repr(self):
        return f"num_heads={self.num_heads}, key_dim={self.key_dim}, val_dim={self.d}"

    def forward(self, x):
        b = x.shape[0]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        q = self.q(x).reshape(b, self.num_heads, -1, self.N).permute(0, 1, 3, 2)
        k = self.k(x).reshape(b, self.num_heads, -1, self.N)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, self.num_heads, -1, self.N).permute(0, 1, 3, 2)
        attn = (q @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        x = (attn @ v).transpose(2, 3)
        x = x.reshape(b, self.dh, self.resolution[0], self.resolution[1]) + v_local
        if self.upsample is not None:
            x = self.upsample(x)
        return self.proj(self.act(x))


class EfficientFormerV2AttentionDownsample(nn.Module):
    """EfficientFormer-V2's Attention2dDownsample: queries on the map halved
    (q.local, q.pool, q.proj), keys and values on the whole map, offset
    biases, v_local at stride 2."""

    def __init__(self, dim, key_dim, num_heads, val_dim, size, out_dim, act="GELU", eps=1e-5):
        super().__init__()
        self.init_args = (dim, key_dim, num_heads, val_dim, size, out_dim, act, eps)
        self.num_heads, self.key_dim, self.d = num_heads, key_dim, val_dim
        self.dh = val_dim * num_heads
        self.scale = key_dim ** -0.5
        self.resolution = tuple(size)
        self.resolution2 = tuple((r - 1) // 2 + 1 for r in size)
        self.N = size[0] * size[1]
        self.N2 = self.resolution2[0] * self.resolution2[1]

        def conv_norm(cin, cout, k=1, s=1, groups=1):
            seq = nn.Sequential()     # timm's ConvNorm: conv (with a bias), bn
            seq.add_module("conv", nn.Conv2d(cin, cout, k, s, k // 2, groups=groups))
            seq.add_module("bn", nn.BatchNorm2d(cout, eps=eps))
            return seq

        kh = key_dim * num_heads
        self.q = nn.ModuleDict({"pool": nn.AvgPool2d(1, 2, 0),
                                "local": nn.Conv2d(dim, dim, 3, 2, 1, groups=dim),
                                "proj": conv_norm(dim, kh)})
        self.k = conv_norm(dim, kh)
        self.v = conv_norm(dim, self.dh)
        self.v_local = conv_norm(self.dh, self.dh, 3, 2, self.dh)
        self.act = getattr(nn, act)()
        self.proj = conv_norm(self.dh, out_dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, self.N))
        self.register_buffer("attention_bias_idxs", self.bias_index(size), persistent=False)

    @staticmethod
    def bias_index(size):
        """N2 x N: the offset |dy| * w + |dx| from each query (the even
        positions) to each key."""
        k_pos = torch.stack(torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]),
                                           indexing="ij")).flatten(1)
        q_pos = torch.stack(torch.meshgrid(torch.arange(0, size[0], 2),
                                           torch.arange(0, size[1], 2), indexing="ij")).flatten(1)
        rel = (q_pos[..., :, None] - k_pos[..., None, :]).abs()
        return rel[0] * size[1] + rel[1]

    def extra_repr(self):
        return f"num_heads={self.num_heads}, key_dim={self.key_dim}, val_dim={self.d}"

    def forward(self, x):
        b = x.shape[0]
        q = self.q["proj"](self.q["local"](x) + self.q["pool"](x))
        q = q.reshape(b, self.num_heads, -1, self.N2).permute(0, 1, 3, 2)
        k = self.k(x).reshape(b, self.num_heads, -1, self.N)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, self.num_heads, -1, self.N).permute(0, 1, 3, 2)
        attn = (q @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(2, 3)
        x = x.reshape(b, self.dh, self.resolution2[0], self.resolution2[1]) + v_local
        return self.proj(self.act(x))
