"""PyTorch modules of the kinds in ``levit.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class LevitAttention(nn.Module):
    """timm's levit Attention (stride 1: ``qkv``) and AttentionDownsample
    (``kv``, ``q`` = ``down`` + ``ln``) in their conv form: each projection a
    ConvNorm (``linear``, a 1x1 conv without a bias, ``bn``), the learned
    ``attention_biases`` gathered by ``attention_bias_idxs`` (a buffer out of
    the state_dict), ``proj`` = Hardswish or SiLU (``act``) + ConvNorm (``ln``);
    timm's names, so its state_dict loads strictly."""

    def __init__(self, channels, out, heads, key_dim, val_dim, resolution, stride=1, eps=1e-5,
                 activation="Hardswish", linear=False):
        super().__init__()
        self.init_args = (channels, out, heads, key_dim, val_dim, resolution, stride, eps,
                          activation, linear)

        def conv_norm(cin, cout):
            part = nn.Module()
            if linear:    # timm's LinearNorm: on N x D tokens, BatchNorm1d over B*N
                part.linear = nn.Linear(cin, cout, bias=False)
                part.bn = nn.BatchNorm1d(cout, eps=eps)
            else:
                part.linear = nn.Conv2d(cin, cout, 1, bias=False)
                part.bn = nn.BatchNorm2d(cout, eps=eps)
            return part

        self.num_heads, self.key_dim, self.val_dim = heads, key_dim, val_dim
        self.scale, self.stride, self.use_conv = key_dim ** -0.5, stride, not linear
        self.resolution = tuple(resolution)
        if stride == 1:
            self.qkv = conv_norm(channels, heads * (2 * key_dim + val_dim))
        else:
            self.kv = conv_norm(channels, heads * (key_dim + val_dim))
            self.q = nn.Module()
            # the queries subsampled (the linear form does it in forward: no module)
            self.q.down = nn.Identity() if linear else \
                nn.AvgPool2d(1, stride, 0, count_include_pad=False)
            self.q.ln = conv_norm(channels, heads * key_dim)
        self.proj = nn.Module()
        self.proj.act = getattr(nn, activation)()
        self.proj.ln = conv_norm(heads * val_dim, out)
        r0, r1 = self.resolution
        self.attention_biases = nn.Parameter(torch.zeros(heads, r0 * r1))
        keys = torch.stack(torch.meshgrid(torch.arange(r0), torch.arange(r1),
                                          indexing="ij")).flatten(1)
        queries = torch.stack(torch.meshgrid(torch.arange(0, r0, stride),
                                             torch.arange(0, r1, stride), indexing="ij")).flatten(1)
        offsets = (queries[..., :, None] - keys[..., None, :]).abs()
        self.register_buffer("attention_bias_idxs", offsets[0] * r1 + offsets[1],
                             persistent=False)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, key_dim={self.key_dim}, val_dim={self.val_dim}, " \
            f"resolution={self.resolution}, stride={self.stride}"

    def forward(self, x):
        if not self.use_conv:
            return self.forward_tokens(x)
        b, _, h, w = x.shape
        if self.stride == 1:
            qkv = self.qkv.bn(self.qkv.linear(x)).view(b, self.num_heads, -1, h * w)
            q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=2)
            hh, ww = h, w
        else:
            kv = self.kv.bn(self.kv.linear(x)).view(b, self.num_heads, -1, h * w)
            k, v = kv.split([self.key_dim, self.val_dim], dim=2)
            q = self.q.ln.bn(self.q.ln.linear(self.q.down(x)))
            hh, ww = q.shape[-2:]
            q = q.view(b, self.num_heads, self.key_dim, -1)
        attn = (q.transpose(-2, -1) @ k) * self.scale + \
            self.attention_biases[:, self.attention_bias_idxs]
        x = (v @ attn.softmax(dim=-1).transpose(-2, -1)).reshape(b, -1, hh, ww)
        return self.proj.ln.bn(self.proj.ln.linear(self.proj.act(x)))

    def forward_tokens(self, x):
        """The linear form on (B, N, C) tokens of the resolution's grid, as timm's."""
        def norm(part, t):
            t = part.linear(t)
            return part.bn(t.flatten(0, 1)).reshape_as(t)
        b, n, _ = x.shape
        if self.stride == 1:
            q, k, v = norm(self.qkv, x).view(b, n, self.num_heads, -1).split(
                [self.key_dim, self.key_dim, self.val_dim], dim=3)
        else:
            k, v = norm(self.kv, x).view(b, n, self.num_heads, -1).split(
                [self.key_dim, self.val_dim], dim=3)
            r0, r1 = self.resolution
            sub = x.view(b, r0, r1, -1)[:, ::self.stride, ::self.stride].reshape(b, -1, x.shape[-1])
            q = norm(self.q.ln, sub).view(b, -1, self.num_heads, self.key_dim)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3)
        attn = q @ k * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, -1, self.num_heads * self.val_dim)
        return norm(self.proj.ln, self.proj.act(x))


class LinearNorm(nn.Module):
    """timm's levit LinearNorm: (B, N, D) -> (B, N, out), a Linear without a
    bias, then BatchNorm1d over the tokens of every sample flattened."""

    def __init__(self, width, out, eps=1e-5):
        super().__init__()
        self.init_args = (width, out, eps)
        self.linear = nn.Linear(width, out, bias=False)
        self.bn = nn.BatchNorm1d(out, eps=eps)

    def forward(self, x):
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)
