"""PyTorch modules of the kinds in ``nextvit.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class PooledAttention(nn.Module):
    """Next-ViT's E-MHSA (timm.models.nextvit.EfficientAttention): q, k, v
    Linears, k and v from the tokens pooled along the sequence by sr^2
    (``sr``, an AvgPool1d) and batch-normed (``norm``), proj; timm's
    submodule names, so its state_dict loads strictly."""

    def __init__(self, width, out, heads, sr=1, bias=True, eps=1e-5, dropout=0.0,
                 proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, out, heads, sr, bias, eps, dropout, proj_dropout)
        self.num_heads, self.head_dim, self.sr_ratio = heads, width // heads, sr
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(width, width, bias=bias)
        self.k = nn.Linear(width, width, bias=bias)
        self.v = nn.Linear(width, width, bias=bias)
        self.proj = nn.Linear(width, out)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(proj_dropout)
        self.sr = nn.AvgPool1d(sr * sr, sr * sr) if sr > 1 else None
        self.norm = nn.BatchNorm1d(width, eps=eps) if sr > 1 else None

    def extra_repr(self):
        return f"num_heads={self.num_heads}"

    def forward(self, x):
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, n, h, -1).transpose(1, 2)
        if self.sr is not None:
            x = self.norm(self.sr(x.transpose(1, 2))).transpose(1, 2)
        k = self.k(x).reshape(b, -1, h, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(b, -1, h, self.head_dim).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p
                                           if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))
