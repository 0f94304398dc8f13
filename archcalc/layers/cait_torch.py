"""PyTorch modules of the kinds in ``cait.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name). Each has
timm's submodule names, so timm's state_dict loads strictly."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ClassAttention(nn.Module):
    """CaiT's class attention (timm.models.cait.ClassAttn): q from the first
    token, k and v from all, the fused softmax(q k^T / sqrt(D/h)) v, proj:
    (B, N, D) -> (B, 1, D). ``kv``: k and v as one Linear (VOLO's
    ClassAttention), its first D outputs k."""

    def __init__(self, width, heads, bias=False, dropout=0.0, proj_dropout=0.0, kv=False):
        super().__init__()
        self.init_args = (width, heads, bias, dropout, proj_dropout, kv)
        self.num_heads = heads
        self.scale = (width // heads) ** -0.5
        self.q = nn.Linear(width, width, bias=bias)
        if kv:
            self.kv = nn.Linear(width, 2 * width, bias=bias)
        else:
            self.k = nn.Linear(width, width, bias=bias)
            self.v = nn.Linear(width, width, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_dropout)

    def extra_repr(self):
        return f"num_heads={self.num_heads}"

    def forward(self, x):
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(x[:, 0]).reshape(b, 1, h, c // h).transpose(1, 2)
        if hasattr(self, "kv"):
            k, v = self.kv(x).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            k = self.k(x).reshape(b, n, h, c // h).transpose(1, 2)
            v = self.v(x).reshape(b, n, h, c // h).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p
                                           if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, 1, c)))


class TalkingHeadsAttention(nn.Module):
    """Talking-heads attention (Shazeer et al. 2020) as CaiT's
    (timm.models.cait.TalkingHeadAttn): qkv, the scores mixed across heads by
    ``proj_l`` before the softmax and ``proj_w`` after it, proj."""

    def __init__(self, width, heads, bias=False, dropout=0.0, proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, bias, dropout, proj_dropout)
        self.num_heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.proj_l = nn.Linear(heads, heads)
        self.proj_w = nn.Linear(heads, heads)
        self.proj_drop = nn.Dropout(proj_dropout)

    def extra_repr(self):
        return f"num_heads={self.num_heads}"

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).softmax(dim=-1)
        attn = self.attn_drop(self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class CrossCovarianceAttention(nn.Module):
    """XCiT's cross-covariance attention (timm.models.xcit.XCA): qkv, q and k
    L2-normalized along the tokens, q times a learned ``temperature`` per
    head, softmax over the D/h x D/h channel scores, applied to v, proj."""

    def __init__(self, width, heads, bias=False, dropout=0.0, proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, bias, dropout, proj_dropout)
        self.num_heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_dropout)

    def extra_repr(self):
        return f"num_heads={self.num_heads}"

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 4, 1).unbind(0)
        q = F.normalize(q, dim=-1) * self.temperature
        k = F.normalize(k, dim=-1)
        x = F.scaled_dot_product_attention(q, k, v, scale=1.0, dropout_p=self.attn_drop.p
                                           if self.training else 0.0)
        return self.proj_drop(self.proj(x.permute(0, 3, 1, 2).reshape(b, n, c)))
