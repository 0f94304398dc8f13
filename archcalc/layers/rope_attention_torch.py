"""PyTorch module of the kind in ``rope_attention.py`` (imported only by its
``build``; ``archcalc export`` copies the classes: only torch, nn and F)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RopeAttention(nn.Module):
    """Multi-head self-attention with a rotary position embedding on q and k
    (the tokens after the first ``prefix``), with timm's EvaAttention and
    AttentionRope state_dict keys: ``qkv`` (with ``q_bias`` and ``v_bias``
    where bias = "qv", its own bias where "qkv") or ``q_proj``, ``k_proj``,
    ``v_proj``; ``q_norm``, ``k_norm``, ``norm``, ``proj``. The table is a
    buffer that is not saved (timm's is the model's rope module's)."""

    def __init__(self, width, heads, head_dim=None, kv_heads=None, qkv="fused", bias="qv",
                 proj_bias=True, qk_norm="none", scale_norm="none", eps=1e-6, prefix=1,
                 rope="index", grid=None, temperature=10000.0, ref=None, offset=0.0,
                 xy=False, half=False, dropout=0.0, proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, head_dim, kv_heads, qkv, bias, proj_bias, qk_norm,
                          scale_norm, eps, prefix, rope, grid, temperature, ref, offset, xy,
                          half, dropout, proj_dropout)
        self.num_heads, self.head_dim = heads, head_dim or width // heads
        self.num_kv_heads = kv_heads or heads
        self.num_prefix_tokens, self.rotate_half = prefix, half
        inner, kv = heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = self.k_proj = self.v_proj = self.qkv = None
        self.q_bias = self.v_bias = None
        if qkv == "fused":
            self.qkv = nn.Linear(width, 3 * inner, bias=bias == "qkv")
            if bias == "qv":
                self.q_bias = nn.Parameter(torch.zeros(inner))
                self.register_buffer("k_bias", torch.zeros(inner), persistent=False)
                self.v_bias = nn.Parameter(torch.zeros(inner))
        else:
            self.q_proj = nn.Linear(width, inner, bias=bias != "none")
            self.k_proj = nn.Linear(width, kv, bias=bias == "qkv")
            self.v_proj = nn.Linear(width, kv, bias=bias != "none")
        self.q_norm = self.norm_of(qk_norm, self.head_dim, eps)
        self.k_norm = self.norm_of(qk_norm, self.head_dim, eps)
        self.attn_drop = nn.Dropout(dropout)
        self.norm = self.norm_of(scale_norm, inner, eps)
        self.proj = nn.Linear(inner, width, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_dropout)
        table = self.rope_table(rope, grid, self.head_dim, temperature, ref, offset, xy,
                                half) if rope != "none" else None
        self.register_buffer("rope", table, persistent=False)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, " \
               f"num_prefix_tokens={self.num_prefix_tokens}"

    @staticmethod
    def rope_table(rope, grid, head_dim, temperature, ref=None, offset=0.0, xy=False,
                   half=False):
        """The rotary table of a grid of H x W patches, (H*W, 2*head_dim): sines
        then cosines, as timm computes it (float32). ``rope`` is "index"
        (timm's RotaryEmbeddingCat: integer positions + offset, rescaled to a
        reference grid, bands 1/temperature^(i/F)) or "centered" (its
        RotaryEmbeddingDinoV3: 0.5-centred positions in [-1, 1], angles
        2*pi*position/period, period temperature^(i/F)); F = head_dim/4."""
        bands = head_dim // 4
        shape = [int(grid[1]), int(grid[0])] if xy else [int(grid[0]), int(grid[1])]
        if rope == "index":
            t = [torch.arange(s, dtype=torch.int64).to(torch.float32) + offset for s in shape]
            if ref is not None:
                ref = [ref[1], ref[0]] if xy else list(ref)
                t = [v / f * r for v, f, r in zip(t, shape, ref)]
        else:
            t = [(torch.arange(0.5, s, dtype=torch.float32) + offset) / float(s) for s in shape]
        coords = torch.stack(torch.meshgrid(t, indexing="xy" if xy else "ij"), dim=-1)
        if rope == "index":
            exp = torch.arange(0, bands, 1, dtype=torch.int64).to(torch.float32) / bands
            angles = (coords.unsqueeze(-1) * (1.0 / (temperature ** exp))).flatten(-2)
            angles = angles.flatten(0, -2)
        else:
            coords = (2.0 * coords - 1.0).flatten(0, -2)
            periods = temperature ** (2.0 * torch.arange(bands, dtype=torch.float32)
                                      / (head_dim // 2))
            angles = (2 * torch.pi * coords[:, :, None] / periods[None, None, :]).flatten(1)
        sin, cos = angles.sin(), angles.cos()
        if half:
            return torch.cat([sin, sin, cos, cos], -1)
        return torch.cat([sin.repeat_interleave(2, -1), cos.repeat_interleave(2, -1)], -1)

    @staticmethod
    def rotate(x, table, half):
        """x * cos + rotate(x) * sin (timm's apply_rot_embed_cat)."""
        sin, cos = table.chunk(2, -1)
        if half:
            x1, x2 = x.chunk(2, dim=-1)
            turned = torch.cat([-x2, x1], dim=-1)
        else:
            turned = torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
        return (x * cos + turned * sin).to(dtype=x.dtype)

    @staticmethod
    def norm_of(kind, width, eps):
        if kind == "layer":
            return nn.LayerNorm(width, eps=eps)
        return nn.RMSNorm(width, eps=eps) if kind == "rms" else nn.Identity()

    def _qkv(self, x):
        b, n, _ = x.shape
        if self.qkv is not None:
            bias = self.qkv.bias
            if self.q_bias is not None:
                bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias)
            return qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return (self.q_proj(x).reshape(b, n, self.num_heads, -1).transpose(1, 2),
                self.k_proj(x).reshape(b, n, self.num_kv_heads, -1).transpose(1, 2),
                self.v_proj(x).reshape(b, n, self.num_kv_heads, -1).transpose(1, 2))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self._qkv(x)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            p = self.num_prefix_tokens
            q = torch.cat([q[:, :, :p], self.rotate(q[:, :, p:], self.rope, self.rotate_half)], 2)
            k = torch.cat([k[:, :, :p], self.rotate(k[:, :, p:], self.rope, self.rotate_half)], 2)
        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        x = F.scaled_dot_product_attention(
            q.type_as(v), k.type_as(v), v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = self.norm(x.transpose(1, 2).reshape(b, n, -1))
        return self.proj_drop(self.proj(x))
