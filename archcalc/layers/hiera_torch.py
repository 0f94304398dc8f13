"""PyTorch modules of the kinds in ``hiera.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name). Submodules and
parameters carry timm's names, so timm's state_dict loads strictly."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class HieraUnroll(nn.Module):
    """timm's Hiera ``Unroll``: the h x w grid of tokens (row-major) reordered,
    ``len(schedule)`` times, so that the tokens of each stride group lie
    [Sy, Sx, h/Sy, w/Sx] apart: a max over view(B, Sy*Sx, -1, C) is then a
    max pool. A fixed permutation, no weights."""

    def __init__(self, size, schedule):
        super().__init__()
        self.init_args = (size, schedule)
        self.size = [int(s) for s in size]
        self.schedule = [tuple(int(v) for v in s) for s in schedule]

    def extra_repr(self):
        return f"size={self.size}, schedule={self.schedule}"

    def forward(self, x):
        b, n, c = x.shape
        cur = list(self.size)
        x = x.view(b, *cur, c)
        for strides in self.schedule:
            cur = [i // s for i, s in zip(cur, strides)]
            shape = [b] + [d for i, s in zip(cur, strides) for d in (i, s)] + [c]
            x = x.view(shape)
            last = len(shape)
            x = x.permute([0] + list(range(2, last - 1, 2)) + list(range(1, last - 1, 2))
                          + [last - 1])
            x = x.flatten(0, len(strides))
            for s in strides:
                b *= s
        return x.reshape(-1, n, c)


class HieraBlock(nn.Module):
    """timm's HieraBlock on unrolled tokens (B x N x C): norm1; the shortcut
    widened to ``dim_out`` by ``proj`` and max-pooled over ``q_stride`` groups
    (or, ``proj`` None, the groups' max and mean side by side); mask unit
    attention (``attn``: qkv, q max-pooled over the groups, attention within
    each of N/(q_stride*window) mask units, or over all tokens; proj), layer
    scale ``ls1``; then x + ls2(mlp(norm2(x))) (fc1, GELU, fc2). Stochastic
    depth on both residual branches."""

    def __init__(self, dim, dim_out, heads, q_stride=1, window=0, mask_unit=False,
                 expand_proj=True, hidden=None, gamma=None, drop_path=0.0, eps=1e-6):
        super().__init__()
        self.init_args = (dim, dim_out, heads, q_stride, window, mask_unit, expand_proj,
                          hidden, gamma, drop_path, eps)
        hidden = hidden or 4 * dim_out
        self.dim, self.dim_out, self.drop_prob = dim, dim_out, drop_path
        self.do_expand = dim != dim_out
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.proj = nn.Linear(dim, dim_out) if self.do_expand and expand_proj else None
        attn = self.attn = nn.Module()
        attn.heads, attn.q_stride, attn.dim_out = heads, q_stride, dim_out
        attn.head_dim = dim_out // heads
        attn.window_size, attn.use_mask_unit_attn = window, mask_unit
        attn.qkv = nn.Linear(dim, 3 * dim_out)
        attn.proj = nn.Linear(dim_out, dim_out)
        self.norm2 = nn.LayerNorm(dim_out, eps=eps)
        mlp = self.mlp = nn.Module()
        mlp.fc1, mlp.act, mlp.fc2 = nn.Linear(dim_out, hidden), nn.GELU(), \
            nn.Linear(hidden, dim_out)
        self.ls1 = self.ls2 = None
        if gamma is not None:
            self.ls1, self.ls2 = nn.Module(), nn.Module()
            self.ls1.gamma = nn.Parameter(torch.full((dim_out,), float(gamma)))
            self.ls2.gamma = nn.Parameter(torch.full((dim_out,), float(gamma)))

    def extra_repr(self):
        a = self.attn
        return (f"heads={a.heads}, q_stride={a.q_stride}, window_size={a.window_size}, "
                f"use_mask_unit_attn={a.use_mask_unit_attn}, drop_path={self.drop_prob}")

    def drop(self, x, ls):
        """Layer scale, then stochastic depth (per sample, the rest scaled by 1/(1 - p))."""
        if ls is not None:
            x = x * ls.gamma
        p = self.drop_prob
        if not self.training or p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
        return x * (keep / (1 - p) if p < 1 else keep)

    def attention(self, x):
        """timm's MaskUnitAttention, step for step (the token order it assumes)."""
        a = self.attn
        b, n, _ = x.shape
        if a.use_mask_unit_attn:
            windows = n // (a.q_stride * a.window_size)
            q, k, v = a.qkv(x).reshape(b, -1, windows, 3, a.heads, a.head_dim).permute(
                3, 0, 4, 2, 1, 5).unbind(0)
            if a.q_stride > 1:
                q = q.view(b, a.heads, windows, a.q_stride, -1, a.head_dim).amax(dim=3)
            x = F.scaled_dot_product_attention(q, k, v)
            x = x.transpose(1, 3).reshape(b, -1, a.dim_out)
        else:
            q, k, v = a.qkv(x).reshape(b, n, 3, a.heads, a.head_dim).permute(
                2, 0, 3, 1, 4).unbind(0)
            if a.q_stride > 1:
                q = q.view(b, a.heads, a.q_stride, -1, a.head_dim).amax(dim=2)
            x = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
            x = x.transpose(1, 2).reshape(b, -1, a.dim_out)
        return a.proj(x)

    def forward(self, x):
        x_norm = self.norm1(x)
        s = self.attn.q_stride
        if self.do_expand:
            if self.proj is not None:
                x = self.proj(x_norm)
                x = x.view(x.shape[0], s, -1, x.shape[-1]).amax(dim=1)
            else:
                groups = x.view(x.shape[0], s, -1, x.shape[-1])
                x = torch.cat([groups.amax(dim=1), groups.mean(dim=1)], dim=-1)
        x = x + self.drop(self.attention(x_norm), self.ls1)
        mlp = self.mlp
        return x + self.drop(mlp.fc2(mlp.act(mlp.fc1(self.norm2(x)))), self.ls2)


class PositionGrid(nn.Module):
    """x + a learned 1 x C x gh x gw grid of position embeddings resized to
    the tokens' h x w grid (bicubic, as timm's Hiera abswin and HieraDet's
    ``pos_embed``), read as the tokens (row-major) are."""

    def __init__(self, width, grid, size, antialias=False):
        super().__init__()
        self.init_args = (width, grid, size, antialias)
        self.size, self.antialias = tuple(size), antialias
        self.pos_embed = nn.Parameter(torch.empty(1, width, *grid).normal_(std=0.02))

    def extra_repr(self):
        return f"size={self.size}, antialias={self.antialias}"

    def embedding(self, p):
        return F.interpolate(p, size=self.size, mode="bicubic", antialias=self.antialias)

    def forward(self, x):
        return x + self.embedding(self.pos_embed).flatten(2).transpose(1, 2)

    def flat_forward(self, p, x):
        return (f"{x} + F.interpolate({p}, size={self.size}, mode='bicubic', "
                f"antialias={self.antialias}).flatten(2).transpose(1, 2)")

    def flat_init(self, shape, literal):
        return f"torch.empty({shape}).normal_(std=0.02)"


class PositionWindow(nn.Module):
    """x + a learned 1 x C x wh x ww window of position embeddings tiled over
    the tokens' h x w grid (timm's Hiera abswin ``pos_embed_win``, HieraDet's
    ``pos_embed_window``), read as the tokens (row-major) are."""

    def __init__(self, width, window, size):
        super().__init__()
        self.init_args = (width, window, size)
        self.size = tuple(size)
        self.reps = (self.size[0] // window[0], self.size[1] // window[1])
        self.pos_embed_window = nn.Parameter(torch.empty(1, width, *window).normal_(std=0.02))

    def extra_repr(self):
        return f"size={self.size}"

    def forward(self, x):
        return x + self.pos_embed_window.tile(self.reps).flatten(2).transpose(1, 2)

    def flat_forward(self, p, x):
        return f"{x} + {p}.tile({self.reps}).flatten(2).transpose(1, 2)"

    def flat_init(self, shape, literal):
        return f"torch.empty({shape}).normal_(std=0.02)"
