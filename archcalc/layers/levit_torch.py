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
                 activation="Hardswish"):
        super().__init__()
        self.init_args = (channels, out, heads, key_dim, val_dim, resolution, stride, eps,
                          activation)

        def conv_norm(cin, cout):
            part = nn.Module()
            part.linear = nn.Conv2d(cin, cout, 1, bias=False)
            part.bn = nn.BatchNorm2d(cout, eps=eps)
            return part

        self.num_heads, self.key_dim, self.val_dim = heads, key_dim, val_dim
        self.scale, self.stride, self.use_conv = key_dim ** -0.5, stride, True
        self.resolution = tuple(resolution)
        if stride == 1:
            self.qkv = conv_norm(channels, heads * (2 * key_dim + val_dim))
        else:
            self.kv = conv_norm(channels, heads * (key_dim + val_dim))
            self.q = nn.Module()
            self.q.down = nn.AvgPool2d(1, stride, 0, count_include_pad=False)
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
