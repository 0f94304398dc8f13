"""PyTorch modules of the kinds in ``lowformer.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class LowResolutionAttention(nn.Module):
    """LowFormer's attention (timm.models.lowformer.ConvAttention):
    ``conv_proj`` (a depthwise conv at the stride, ``conv``, and a batch norm,
    ``norm``), ``pwise`` (1x1 to 3 x heads x head_dim, each head's q, k, v in
    turn), attention over the shrunk map, ``o_proj`` and ``upsampling`` (or
    the fused transposed conv alone), cropped to the input's size; timm's
    submodule names, so its state_dict loads strictly."""

    def __init__(self, channels, heads, head_dim, stride=4, kernel=7, fused=False, eps=1e-5):
        super().__init__()
        self.init_args = (channels, heads, head_dim, stride, kernel, fused, eps)
        self.num_heads, self.head_dim, self.num_keys = heads, head_dim, 3
        self.scale = head_dim ** -0.5
        self.att_stride = stride
        inner = heads * head_dim
        self.o_proj_inpdim = inner
        self.conv_proj = nn.Module()
        self.conv_proj.conv = nn.Conv2d(channels, channels, kernel, stride, kernel // 2,
                                        groups=channels, bias=False)
        self.conv_proj.norm = nn.BatchNorm2d(channels, eps=eps)
        self.conv_proj.act = nn.Identity()
        self.pwise = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        t, p = (3, 1) if stride == 1 else (2 * stride, stride // 2)
        self.o_proj = nn.Identity() if fused else nn.Conv2d(inner, channels, 1)
        self.upsampling = nn.ConvTranspose2d(inner if fused else channels, channels, t, stride,
                                             p, groups=1 if fused else channels)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"

    def forward(self, x):
        size = x.shape[-2:]
        x = self.pwise(self.conv_proj.norm(self.conv_proj.conv(x)))
        b, _, h, w = x.shape
        qkv = x.reshape(b, self.num_heads, 3 * self.head_dim, h * w).permute(0, 1, 3, 2)
        q, k, v = qkv.chunk(3, dim=3)
        x = F.scaled_dot_product_attention(q, k, v)
        x = self.o_proj(x.permute(0, 1, 3, 2).reshape(b, self.o_proj_inpdim, h, w))
        return self.upsampling(x)[..., :size[0], :size[1]]
