"""PyTorch modules of the kinds in ``efficientvit.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LiteMLA(nn.Module):
    """EfficientViT (MIT)'s multi-scale ReLU linear attention, as timm's
    efficientvit_mit LiteMLA: a 1x1 conv to q, k, v (``qkv.conv``), per scale
    a depthwise k x k conv and a 1x1 conv grouped per head (``aggreg.i.0``,
    ``aggreg.i.1``) beside it, every head's q and k through a ReLU, then
    ReLU(q) (ReLU(k)^T [v 1]) with its last column dividing the others, and a
    1x1 conv + batch norm (``proj.conv``, ``proj.norm``); timm's names, so
    its state_dict loads strictly."""

    def __init__(self, channels, out, heads, dim, scales=(5,), bias=False, proj_bias=False,
                 eps=1e-5, norm_eps=1e-5):
        super().__init__()
        self.init_args = (channels, out, heads, dim, tuple(scales), bias, proj_bias, eps,
                          norm_eps)
        total = heads * dim
        self.dim, self.eps = dim, eps
        self.qkv = nn.Module()
        self.qkv.conv = nn.Conv2d(channels, 3 * total, 1, bias=bias)
        self.aggreg = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3 * total, 3 * total, k, padding=k // 2, groups=3 * total,
                                    bias=bias),
                          nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=bias))
            for k in scales])
        self.proj = nn.Module()
        self.proj.conv = nn.Conv2d(total * (1 + len(scales)), out, 1, bias=proj_bias)
        self.proj.norm = nn.BatchNorm2d(out, eps=norm_eps)

    def extra_repr(self):
        return f"dim={self.dim}, eps={self.eps}"

    def forward(self, x):
        b, _, h, w = x.shape
        qkv = self.qkv.conv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        q, k, v = qkv.reshape(b, -1, 3 * self.dim, h * w).transpose(-1, -2).chunk(3, dim=-1)
        q, k = F.relu(q), F.relu(k)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)
        dtype = v.dtype
        if v.device.type != "meta":     # timm computes the products in fp32
            with torch.autocast(device_type=v.device.type, enabled=False):
                out = self.attend(q.float(), k.float(), v.float())
        else:
            out = self.attend(q.float(), k.float(), v.float())
        out = out.to(dtype).transpose(-1, -2).reshape(b, -1, h, w)
        return self.proj.norm(self.proj.conv(out))

    def attend(self, q, k, v):
        out = q @ (k.transpose(-1, -2) @ v)
        return out[..., :-1] / (out[..., -1:] + self.eps)


class CascadedGroupAttention(nn.Module):
    """EfficientViT (MSRA)'s cascaded group attention on windows, as timm's
    efficientvit_msra LocalWindowAttention: the map zero-padded to whole
    window x window windows (none where it is one window), and in each, head
    i reads the i-th slice of the channels plus head i-1's output (1x1 conv +
    BN to q, k, v; q through a depthwise conv + BN), scores q k^T/sqrt(key_dim)
    plus a learned bias per |dy|, |dx| offset, softmax, weighted values; the
    heads' outputs ReLU'd, then a 1x1 conv + BN; the windows put back and the
    map cropped. timm's names (``attn.qkvs.i``, ``attn.dws.i``, ``attn.proj.1``,
    each ``conv`` + ``bn``; ``attn.attention_biases``), so its state_dict loads
    strictly."""

    def __init__(self, channels, heads, key_dim, val_dim, kernels, window, eps=1e-5):
        super().__init__()
        self.init_args = (channels, heads, key_dim, val_dim, tuple(kernels), window, eps)

        def conv_norm(cin, cout, k=1, groups=1):     # timm's ConvNorm
            part = nn.Sequential()
            part.add_module("conv", nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False))
            part.add_module("bn", nn.BatchNorm2d(cout, eps=eps))
            return part

        self.attn = nn.Module()     # timm's attributes, where from_torch reads them
        self.attn.key_dim, self.attn.val_dim, self.attn.resolution = key_dim, val_dim, window
        self.attn.scale = key_dim ** -0.5
        self.attn.qkvs = nn.ModuleList([conv_norm(channels // heads, 2 * key_dim + val_dim)
                                        for _ in range(heads)])
        self.attn.dws = nn.ModuleList([conv_norm(key_dim, key_dim, k, key_dim) for k in kernels])
        self.attn.proj = nn.Sequential(nn.ReLU(), conv_norm(heads * val_dim, channels))
        self.attn.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        points = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)
        offsets = (points[:, :, None] - points[:, None, :]).abs()
        self.register_buffer("attention_bias_idxs", offsets[0] * window + offsets[1],
                             persistent=False)

    def extra_repr(self):
        a = self.attn
        return f"key_dim={a.key_dim}, val_dim={a.val_dim}, window={a.resolution}"

    def forward(self, x):
        b, c, h, w = x.shape
        ws = self.attn.resolution
        if h == ws and w == ws:
            return self.attend(x)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        x = F.pad(x, (0, pad_r, 0, pad_b))
        nh, nw = (h + pad_b) // ws, (w + pad_r) // ws
        # windows as the batch: B C (nh ws) (nw ws) -> (B nh nw) C ws ws
        x = x.view(b, c, nh, ws, nw, ws).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, ws, ws)
        x = self.attend(x)
        x = x.view(b, nh, nw, c, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * ws, nw * ws)
        return x[:, :, :h, :w].contiguous()

    def attend(self, x):
        b, _, h, w = x.shape
        attn = self.attn
        biases = attn.attention_biases[:, self.attention_bias_idxs]
        feats_in, feats_out = x.chunk(len(attn.qkvs), dim=1), []
        feat = feats_in[0]
        for i, (qkv, dw) in enumerate(zip(attn.qkvs, attn.dws)):
            if i > 0:   # the cascade: head i also reads head i-1's output
                feat = feat + feats_in[i]
            q, k, v = qkv(feat).view(b, -1, h, w).split(
                [attn.key_dim, attn.key_dim, attn.val_dim], dim=1)
            q, k, v = dw(q).flatten(2), k.flatten(2), v.flatten(2)
            scores = (q * attn.scale).transpose(-2, -1) @ k + biases[i]
            feat = (v @ scores.softmax(dim=-1).transpose(-2, -1)).view(b, attn.val_dim, h, w)
            feats_out.append(feat)
        return attn.proj(torch.cat(feats_out, 1))
