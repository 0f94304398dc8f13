"""PyTorch modules of the kinds in ``mqa.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class MultiQueryAttention(nn.Module):
    """MobileNetV4's multi-query attention (timm.layers.MultiQueryAttention2d,
    no query strides): ``query``, ``key``, ``value`` and ``output``
    Sequentials with timm's member names (``down_conv``, ``norm``, ``proj``,
    ``drop``), so its state_dict loads strictly."""

    def __init__(self, channels, out, heads, key_dim, value_dim, kv_stride=1, kernel=3,
                 bias=False, eps=1e-5):
        super().__init__()
        self.init_args = (channels, out, heads, key_dim, value_dim, kv_stride, kernel, bias, eps)
        self.num_heads, self.key_dim, self.value_dim = heads, key_dim, value_dim
        self.kv_stride, self.scale = kv_stride, key_dim ** -0.5
        self.has_query_strides, self.einsum = False, False
        self.query = nn.Sequential()
        self.query.add_module("proj", nn.Conv2d(channels, heads * key_dim, 1, bias=bias))
        self.key, self.value = nn.Sequential(), nn.Sequential()
        for part, width in ((self.key, key_dim), (self.value, value_dim)):
            if kv_stride > 1:
                part.add_module("down_conv", nn.Conv2d(channels, channels, kernel, kv_stride,
                                                       (kernel - 1) // 2, groups=channels,
                                                       bias=False))
                part.add_module("norm", nn.BatchNorm2d(channels, eps=eps))
            part.add_module("proj", nn.Conv2d(channels, width, 1, bias=bias))
        self.attn_drop = nn.Dropout(0.0)
        self.output = nn.Sequential()
        self.output.add_module("proj", nn.Conv2d(heads * value_dim, out, 1, bias=bias))
        self.output.add_module("drop", nn.Dropout(0.0))

    def extra_repr(self):
        return f"num_heads={self.num_heads}, key_dim={self.key_dim}, value_dim={self.value_dim}"

    def forward(self, x):
        b, _, h, w = x.shape
        q = self.query(x).reshape(b, self.num_heads, self.key_dim, -1).transpose(-1, -2)
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)
        o = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        o = o.transpose(1, 2).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.output(o)
