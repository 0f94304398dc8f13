"""PyTorch modules of the kinds in ``cpubone.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class CPUBoneAttention(nn.Module):
    """CPUBone's attention (timm.models.cpubone.ConvAttention): ``conv_proj``
    (a depthwise conv at the stride, ``conv``, after a (1, 0, 1, 0) zero pad
    for the 2 x 2 kernel at a stride other than 2; a batch norm, ``norm``),
    ``pwise`` (1x1 to 3 x heads x head_dim, each head's q, k, v in turn),
    attention over the shrunk map, ``o_proj`` and ``upsampling`` (a
    transposed conv, or [a 1x1 conv where fused,] a nearest upsample), cropped
    to the input's size; timm's submodule names, so its state_dict loads
    strictly. The 2 x 2 kernel first pads the map to a multiple of the stride."""

    def __init__(self, channels, heads, head_dim, stride=4, kernel=7, fused=False,
                 upsample="transpose", eps=1e-5):
        super().__init__()
        self.init_args = (channels, heads, head_dim, stride, kernel, fused, upsample, eps)
        self.num_heads, self.head_dim, self.num_keys = heads, head_dim, 3
        self.scale = head_dim ** -0.5
        self.att_stride = stride
        self.small_kernels = kernel == 2
        inner = heads * head_dim
        self.o_proj_inpdim = inner
        pad = 0 if self.small_kernels else kernel // 2
        conv = nn.Conv2d(channels, channels, kernel, stride, pad, groups=channels, bias=False)
        self.conv_proj = nn.Module()
        self.conv_proj.conv = nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), conv) \
            if self.small_kernels and stride != 2 else conv
        self.conv_proj.norm = nn.BatchNorm2d(channels, eps=eps)
        self.conv_proj.act = None
        self.pwise = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.o_proj = nn.Identity() if fused else nn.Conv2d(inner, channels, 1)
        if upsample == "nearest":
            up = [nn.Upsample(scale_factor=stride, mode="nearest") if stride > 1 else nn.Identity()]
            self.upsampling = nn.Sequential(*([nn.Conv2d(inner, channels, 1)] if fused else []), *up)
        else:
            t, p = (3, 1) if stride == 1 else (2 * stride, stride // 2)
            self.upsampling = nn.ConvTranspose2d(inner if fused else channels, channels, t, stride,
                                                 p, groups=1 if fused else channels)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"

    def forward(self, x):
        size = x.shape[-2:]
        s = self.att_stride
        if self.small_kernels and s > 1 and (size[0] % s or size[1] % s):
            x = F.pad(x, (0, (-size[1]) % s, 0, (-size[0]) % s))
        x = self.pwise(self.conv_proj.norm(self.conv_proj.conv(x)))
        b, _, h, w = x.shape
        qkv = x.reshape(b, self.num_heads, 3 * self.head_dim, h * w).permute(0, 1, 3, 2)
        q, k, v = qkv.chunk(3, dim=3)
        x = F.scaled_dot_product_attention(q, k, v)
        x = self.o_proj(x.permute(0, 1, 3, 2).reshape(b, self.o_proj_inpdim, h, w))
        return self.upsampling(x)[..., :size[0], :size[1]]
