"""PyTorch module of the kind in ``sam_vit.py`` (SAM's ViT block).

Imported only by that kind's ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies the
class into the exported file with ``inspect.getsource``: it uses only
``torch``, ``nn`` and ``F``, and keeps timm's names (norm1, attn.qkv,
attn.rel_pos_h, attn.rel_pos_w, attn.proj, norm2, mlp.fc1, mlp.fc2), so
timm's state_dict loads strictly."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SamBlock(nn.Module):
    """timm's vision_transformer_sam.Block on the tokens of an h x w map
    (B x N x C, N = h*w): x + attention(norm1(x)) in M x M windows of the map
    padded at the bottom and right (``window`` 0: the whole map), with the
    decomposed relative position bias where ``rel_pos``; x + MLP(norm2(x));
    stochastic depth on both residual branches."""

    def __init__(self, dim, heads, window, height, width, hidden, qkv_bias=True, rel_pos=True,
                 sides=(1, 1), drop_path=0.0, eps=1e-5):
        super().__init__()
        self.init_args = (dim, heads, window, height, width, hidden, qkv_bias, rel_pos,
                          tuple(sides), drop_path, eps)
        self.num_heads, self.window_size = heads, window
        self.map_size, self.drop_prob = (height, width), drop_path
        hd = dim // heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        attn = self.attn = nn.Module()
        attn.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        attn.proj = nn.Linear(dim, dim)
        if rel_pos:
            attn.rel_pos_h = nn.Parameter(torch.zeros(2 * sides[0] - 1, hd))
            attn.rel_pos_w = nn.Parameter(torch.zeros(2 * sides[1] - 1, hd))
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        mlp = self.mlp = nn.Module()
        mlp.fc1, mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, window_size={self.window_size}, "
                f"map_size={self.map_size}, drop_path={self.drop_prob}")

    def drop(self, x):
        """Stochastic depth: each sample's branch dropped with p, the rest scaled by 1/(1 - p)."""
        p = self.drop_prob
        if not self.training or p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
        return x * (keep / (1 - p) if p < 1 else keep)

    @staticmethod
    def offsets(table, side):
        """The table's rows for each (query, key) offset along one axis: side x side x d."""
        coords = torch.arange(side, device=table.device)
        return table[coords[:, None] - coords[None, :] + side - 1]

    def attention(self, x):
        """Multi-head attention over each (B', h, w, C) map (a window, or the map)."""
        at = self.attn
        b, h, w, c = x.shape
        heads, n = self.num_heads, h * w
        qkv = at.qkv(x.reshape(b, n, c)).view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * heads, n, -1).unbind(0)
        bias = None
        if hasattr(at, "rel_pos_h"):
            r_q = q.reshape(b * heads, h, w, -1)
            rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, self.offsets(at.rel_pos_h, h))
            rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, self.offsets(at.rel_pos_w, w))
            bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(-1, n, n)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x.view(b, heads, n, -1).transpose(1, 2).reshape(b, n, c)
        return at.proj(x).view(b, h, w, c)

    def forward(self, tokens):
        b, n, c = tokens.shape
        (h, w), m = self.map_size, self.window_size
        x = self.norm1(tokens).view(b, h, w, c)
        if m:
            pad_b, pad_r = (-h) % m, (-w) % m
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            x = x.view(b, ph // m, m, pw // m, m, c).permute(0, 1, 3, 2, 4, 5)
            x = self.attention(x.reshape(-1, m, m, c))
            x = x.view(b, ph // m, pw // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
            x = x.reshape(b, ph, pw, c)[:, :h, :w]
        else:
            x = self.attention(x)
        x = tokens + self.drop(x.reshape(b, n, c))
        return x + self.drop(self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x)))))


def _resample_call(call):
    """timm's resample_abs_pos_embed_nhwc reads the position embedding alone
    (no row of its own: the add that reads it is the position_embedding row);
    on a computed tensor it has no kind."""
    from .from_torch import NoMapping
    raise NoMapping("resample_abs_pos_embed_nhwc of a computed tensor")


def __getattr__(name):
    """FUNCTIONS (the importer's mappers, mappers.py) names timm's
    resample_abs_pos_embed_nhwc, so fx keeps its call whole (its size test
    on the map's shape is control flow fx cannot trace; timm's torch.fx.wrap
    does not reach SAM's module): looked up only when the importer asks, so
    building never imports timm."""
    if name != "FUNCTIONS":
        raise AttributeError(name)
    try:
        from timm.layers import resample_abs_pos_embed_nhwc
    except ImportError:
        return {}
    return {resample_abs_pos_embed_nhwc: _resample_call}
