"""PyTorch modules of the kinds in ``pvt.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class SpatialReductionAttention(nn.Module):
    """PVT v2's attention (timm.models.pvt_v2.Attention), its map size fixed
    at build: q from every token, k and v (``kv``) from the map reduced by
    ``sr`` (a conv of kernel = stride = sr) and ``norm``, or pooled to 7 x 7
    (``pool``), a 1x1 ``sr``, ``norm`` and ``act`` (GELU); timm's submodule
    names, so its state_dict loads strictly."""

    def __init__(self, width, heads, size, sr=1, linear=False, bias=True, dropout=0.0,
                 proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, size, sr, linear, bias, dropout, proj_dropout)
        self.num_heads, self.size = heads, tuple(size)
        self.scale = (width // heads) ** -0.5
        self.q = nn.Linear(width, width, bias=bias)
        self.kv = nn.Linear(width, 2 * width, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_dropout)
        self.pool = nn.AdaptiveAvgPool2d(7) if linear else None
        reduce = linear or sr > 1
        self.sr = nn.Conv2d(width, width, 1 if linear else sr, 1 if linear else sr) \
            if reduce else None
        self.norm = nn.LayerNorm(width) if reduce else None
        self.act = nn.GELU() if linear else None

    def extra_repr(self):
        return f"num_heads={self.num_heads}, size={self.size}"

    def forward(self, x):
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, n, h, -1).transpose(1, 2)
        if self.sr is not None:
            x = x.transpose(1, 2).reshape(b, c, *self.size)
            if self.pool is not None:
                x = self.pool(x)
            x = self.norm(self.sr(x).reshape(b, c, -1).transpose(1, 2))
            if self.act is not None:
                x = self.act(x)
        k, v = self.kv(x).reshape(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p
                                           if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))
