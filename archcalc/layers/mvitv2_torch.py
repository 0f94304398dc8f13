"""PyTorch modules of the kinds in ``mvitv2.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class MultiScaleAttention(nn.Module):
    """MViTv2's pooling attention (timm.models.mvitv2.MultiScaleAttention) on
    the tokens of an h x w map (B x N x D, N = h*w, plus a class token first
    where ``cls``): a qkv Linear to 3 x ``out``; q, k and v each pooled per
    head on the map (``pool_q``, ``pool_k``, ``pool_v``: a depthwise conv,
    then a LayerNorm over the head's width, ``norm_q``, ...; or a max or avg
    pool), the class token left out of the pool; the decomposed relative
    position bias along height and width (``rel_pos_h``, ``rel_pos_w``);
    softmax; the pooled q added to the heads' output; proj. timm's names, so
    its state_dict loads strictly; the map's size is fixed at build."""

    def __init__(self, dim, out, heads, size, cls=False, pool="conv", kernel_q=(3, 3),
                 stride_q=(1, 1), kernel_kv=(3, 3), stride_kv=(1, 1), bias=True,
                 rel_pos=True, residual_pooling=True, eps=1e-6):
        super().__init__()
        self.init_args = (dim, out, heads, size, cls, pool, kernel_q, stride_q, kernel_kv,
                          stride_kv, bias, rel_pos, residual_pooling, eps)
        self.num_heads, self.dim_out, self.head_dim = heads, out, out // heads
        self.scale = self.head_dim ** -0.5
        self.has_cls_token, self.map_size, self.mode = cls, tuple(size), pool
        self.residual_pooling = residual_pooling
        self.qkv = nn.Linear(dim, 3 * out, bias=bias)
        self.proj = nn.Linear(out, out)
        self.pool_q = self.norm_q = self.pool_k = self.norm_k = self.pool_v = self.norm_v = None
        sizes = {}
        for name, kernel, stride in (("q", kernel_q, stride_q), ("k", kernel_kv, stride_kv),
                                     ("v", kernel_kv, stride_kv)):
            kernel, stride = tuple(kernel), tuple(stride)
            # timm skips a 1 x 1 pool at stride 1
            if kernel[0] * kernel[1] == 1 and stride[0] * stride[1] == 1:
                sizes[name] = tuple(size)
                continue
            padding = (kernel[0] // 2, kernel[1] // 2)
            sizes[name] = tuple((s + 2 * p - k) // st + 1
                                for s, p, k, st in zip(size, padding, kernel, stride))
            if pool == "conv":
                hd = self.head_dim
                setattr(self, "pool_" + name, nn.Conv2d(hd, hd, kernel, stride, padding,
                                                        groups=hd, bias=False))
                setattr(self, "norm_" + name, nn.LayerNorm(hd, eps=eps))
            else:
                op = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
                setattr(self, "pool_" + name, op(kernel, stride, padding))
        self.q_size, self.k_size = sizes["q"], sizes["k"]
        self.rel_pos = rel_pos
        if rel_pos:
            (qh, qw), (kh, kw) = self.q_size, self.k_size
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * max(qh, kh) - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * max(qw, kw) - 1, self.head_dim))

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, map_size={self.map_size}, "
                f"has_cls_token={self.has_cls_token}, mode={self.mode}")

    def pooled(self, t, pool, norm):
        """B x heads x N x hd -> the pooled tokens (the class token kept first)."""
        if pool is None:
            return t
        b, heads, _, hd = t.shape
        first = int(self.has_cls_token)
        cls_tok, t = t[:, :, :first], t[:, :, first:]
        h, w = self.map_size
        t = pool(t.reshape(-1, h, w, hd).permute(0, 3, 1, 2))
        t = t.reshape(b, heads, hd, -1).transpose(2, 3)
        t = torch.cat((cls_tok, t), dim=2) if first else t
        return norm(t) if norm is not None else t

    @staticmethod
    def distances(q, k, device):
        """timm's cal_rel_pos_type indices along one axis: q x k."""
        q_ratio, k_ratio = max(k / q, 1.0), max(q / k, 1.0)
        dist = torch.arange(q, device=device).unsqueeze(-1) * q_ratio - \
            torch.arange(k, device=device).unsqueeze(0) * k_ratio
        return (dist + (k - 1) * k_ratio).long()

    def rel_bias(self, attn, q):
        """The decomposed relative position bias added to the map's scores."""
        (qh, qw), (kh, kw) = self.q_size, self.k_size
        first = int(self.has_cls_token)
        rel_h = self.rel_pos_h[self.distances(qh, kh, q.device)]
        rel_w = self.rel_pos_w[self.distances(qw, kw, q.device)]
        b, heads, _, hd = q.shape
        r_q = q[:, :, first:].reshape(b, heads, qh, qw, hd)
        rel_h = torch.einsum("byhwc,hkc->byhwk", r_q, rel_h)
        rel_w = torch.einsum("byhwc,wkc->byhwk", r_q, rel_w)
        spatial = attn[:, :, first:, first:].view(b, heads, qh, qw, kh, kw) + \
            rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)
        attn[:, :, first:, first:] = spatial.view(b, heads, qh * qw, kh * kw)
        return attn

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4) \
            .unbind(0)
        q = self.pooled(q, self.pool_q, self.norm_q)
        k = self.pooled(k, self.pool_k, self.norm_k)
        v = self.pooled(v, self.pool_v, self.norm_v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.rel_pos:
            attn = self.rel_bias(attn, q)
        x = attn.softmax(dim=-1) @ v
        if self.residual_pooling:
            x = x + q
        return self.proj(x.transpose(1, 2).reshape(b, -1, self.dim_out))
