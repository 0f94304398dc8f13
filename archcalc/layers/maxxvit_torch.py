"""PyTorch modules of the kinds in ``maxxvit.py``: timm's MaxViT and CoAtNet
attention (timm.models.maxxvit's Attention2d and AttentionCl, with timm's
relative position biases RelPosBias, RelPosMlp and RelPosBiasTf) and the
partition transformer (PartitionAttentionCl, ParallelPartitionAttention).

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class with ``inspect.getsource``: a class uses only ``torch``, ``nn`` and
``F`` (PartitionTransformer finds MaxxAttention, copied beside it, through
``globals()``). Submodule, parameter and buffer names are timm's (``qkv``,
``proj``, ``rel_pos.relative_position_bias_table``, ``rel_pos.mlp.fc1``,
``norm1``, ``mlp.fc2``, ``ls1.gamma``, ...), so timm's state_dict loads
strictly; the relative position buffers are not persistent, as in timm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaxxAttention(nn.Module):
    """timm's Attention2d (``nchw=True``: 1x1 conv projections on a B x C x H x W
    map, attention over all H*W positions) or AttentionCl (``nchw=False``:
    Linear projections on channels-last tokens B' x ... x C), with a relative
    position bias over a ``window`` of positions (``rel_pos``: "none", "bias"
    a gathered table, "mlp" an MLP of log-spaced coordinates, "bias_tf" a table
    reindexed by two one-hot einsums). ``head_first``: the qkv channels are
    [head][q, k, v][head_dim] (else [q, k, v][head][head_dim]). The attention
    is F.scaled_dot_product_attention with the bias as its mask, as timm's
    fused path."""

    def __init__(self, dim, dim_out, heads, dim_head, bias=True, head_first=True,
                 rel_pos="bias", window=(7, 7), rel_hidden=512, attn_drop=0.0, proj_drop=0.0,
                 nchw=True):
        super().__init__()
        self.init_args = (dim, dim_out, heads, dim_head, bias, head_first, rel_pos,
                          tuple(window), rel_hidden, attn_drop, proj_drop, nchw)
        self.num_heads, self.dim_head, self.head_first = heads, dim_head, head_first
        self.rel_pos_type, self.window_size, self.nchw = rel_pos, tuple(window), nchw
        attn = heads * dim_head
        if nchw:
            self.qkv = nn.Conv2d(dim, attn * 3, 1, bias=bias)
            self.proj = nn.Conv2d(attn, dim_out, 1, bias=bias)
        else:
            self.qkv = nn.Linear(dim, attn * 3, bias=bias)
            self.proj = nn.Linear(attn, dim_out, bias=bias)
        self.attn_drop, self.proj_drop = nn.Dropout(attn_drop), nn.Dropout(proj_drop)
        self.rel_pos = self.relative_position(rel_pos, self.window_size, heads, rel_hidden)

    def extra_repr(self):
        return (f"heads={self.num_heads}, dim_head={self.dim_head}, "
                f"head_first={self.head_first}, rel_pos={self.rel_pos_type!r}, "
                f"window={self.window_size}, nchw={self.nchw}")

    @staticmethod
    def relative_position(kind, window, heads, hidden):
        """timm's rel_pos submodule, its names kept (a container: the bias is
        computed in ``bias``)."""
        if kind == "none":
            return None
        (h, w), table = window, (2 * window[0] - 1, 2 * window[1] - 1)
        rel = nn.Module()
        if kind == "bias_tf":
            rel.relative_position_bias_table = nn.Parameter(torch.randn(heads, *table) * 0.02)
            for name, side in (("height_lookup", h), ("width_lookup", w)):
                offset = torch.arange(side)[None, :] - torch.arange(side)[:, None] + side - 1
                lookup = (offset[..., None] == torch.arange(2 * side - 1)).float()
                rel.register_buffer(name, lookup, persistent=False)
            return rel
        coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"))
        coords = coords.flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        index = (relative[:, :, 0] + h - 1) * (2 * w - 1) + relative[:, :, 1] + w - 1
        rel.register_buffer("relative_position_index", index.reshape(-1), persistent=False)
        if kind == "bias":
            rel.relative_position_bias_table = nn.Parameter(
                torch.randn(table[0] * table[1], heads) * 0.02)
            return rel
        axes = [torch.arange(-(s - 1), s).float() for s in (h, w)]
        log = torch.stack(torch.meshgrid(*axes, indexing="ij")).permute(1, 2, 0)
        rel.register_buffer("rel_coords_log", torch.sign(log) * torch.log(1.0 + log.abs()),
                            persistent=False)
        rel.mlp = nn.Module()
        rel.mlp.fc1, rel.mlp.act = nn.Linear(2, hidden), nn.ReLU()
        rel.mlp.drop1, rel.mlp.fc2 = nn.Dropout(0.125), nn.Linear(hidden, heads)
        return rel

    def bias(self):
        """The heads x T x T bias (T = the window's positions), as timm's get_bias."""
        rel, kind = self.rel_pos, self.rel_pos_type
        if kind == "none":
            return None
        area = self.window_size[0] * self.window_size[1]
        if kind == "bias_tf":
            t = torch.einsum("nhw,ixh->nixw", rel.relative_position_bias_table, rel.height_lookup)
            t = torch.einsum("nixw,jyw->nijxy", t, rel.width_lookup)
            return t.reshape(self.num_heads, area, area)
        if kind == "bias":
            table = rel.relative_position_bias_table
        else:
            mlp = rel.mlp
            table = mlp.fc2(mlp.drop1(mlp.act(mlp.fc1(rel.rel_coords_log))))
            table = table.view(-1, self.num_heads)
        t = table[rel.relative_position_index].view(area, area, -1).permute(2, 0, 1)
        return t.unsqueeze(0).contiguous()

    def forward(self, x):
        heads, dh, drop = self.num_heads, self.dim_head, self.attn_drop.p if self.training else 0.0
        b = x.shape[0]
        if self.nchw:
            _, _, h, w = x.shape
            if self.head_first:
                q, k, v = self.qkv(x).view(b, heads, dh * 3, -1).chunk(3, dim=2)
            else:
                q, k, v = self.qkv(x).reshape(b, 3, heads, dh, -1).unbind(1)
            x = F.scaled_dot_product_attention(
                q.transpose(-1, -2).contiguous(), k.transpose(-1, -2).contiguous(),
                v.transpose(-1, -2).contiguous(), attn_mask=self.bias(), dropout_p=drop)
            x = x.transpose(-1, -2).reshape(b, -1, h, w)
        else:
            restore = x.shape[:-1]
            if self.head_first:
                q, k, v = self.qkv(x).view(b, -1, heads, dh * 3).transpose(1, 2).chunk(3, dim=3)
            else:
                q, k, v = self.qkv(x).reshape(b, -1, 3, heads, dh).transpose(1, 3).unbind(2)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias(), dropout_p=drop)
            x = x.transpose(1, 2).reshape(restore + (-1,))
        return self.proj_drop(self.proj(x))


class PartitionTransformer(nn.Module):
    """timm's PartitionAttentionCl (``partition`` "block": P x P windows, or
    "grid": a P x P grid strided over the map) or ParallelPartitionAttention
    ("parallel": both, each projecting to C/2, concatenated), on tokens
    (B, N, C) of an h x w map (channels-last, row-major): pre-norm attention
    within each partition and an MLP, each a residual, with optional layer
    scales (``init``). ``nchw``: timm's PartitionAttention2d on a B x C x H x W
    map (layer norms over the channels, 1x1 conv MLP and projections)."""

    def __init__(self, dim, partition, window, height, width, heads, dim_head, head_first=True,
                 bias=True, rel_pos="bias", rel_hidden=512, hidden=None, approximate="none",
                 eps=1e-5, init=None, attn_drop=0.0, proj_drop=0.0, nchw=False):
        super().__init__()
        self.init_args = (dim, partition, tuple(window), height, width, heads, dim_head,
                          head_first, bias, rel_pos, rel_hidden, hidden, approximate, eps, init,
                          attn_drop, proj_drop, nchw)
        self.partition, self.partition_size = partition, tuple(window)
        self.map_size, self.nchw = (height, width), nchw
        attention = globals()["MaxxAttention"]      # copied beside this class by export
        kw = dict(heads=heads, dim_head=dim_head, bias=bias, head_first=head_first,
                  rel_pos=rel_pos, window=window, rel_hidden=rel_hidden, attn_drop=attn_drop,
                  proj_drop=proj_drop, nchw=nchw)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        if partition == "parallel":
            self.attn_block = attention(dim, dim // 2, **kw)
            self.attn_grid = attention(dim, dim // 2, **kw)
        else:
            self.attn = attention(dim, dim, **kw)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = hidden or 4 * dim
        self.mlp = nn.Module()
        if nchw:        # timm's ConvMlp
            self.mlp.fc1, self.mlp.fc2 = nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, dim, 1)
        else:
            self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.mlp.act = nn.GELU(approximate=approximate)
        self.mlp.drop1, self.mlp.drop2 = nn.Dropout(proj_drop), nn.Dropout(proj_drop)
        for name in ("ls1", "ls2"):
            if init is not None:
                scale = nn.Module()
                scale.gamma = nn.Parameter(torch.full((dim,), float(init)))
                setattr(self, name, scale)

    def extra_repr(self):
        return f"partition={self.partition!r}, window={self.partition_size}, " \
            f"map_size={self.map_size}, nchw={self.nchw}"

    @staticmethod
    def split(x, p, grid, nchw):
        """timm's window_partition (grid=False) or grid_partition on B x H x W x C
        (their _nchw forms on B x C x H x W)."""
        if nchw:
            b, c, h, w = x.shape
            if grid:
                x = x.view(b, c, p[0], h // p[0], p[1], w // p[1]).permute(0, 3, 5, 1, 2, 4)
            else:
                x = x.view(b, c, h // p[0], p[0], w // p[1], p[1]).permute(0, 2, 4, 1, 3, 5)
            return x.contiguous().view(-1, c, p[0], p[1])
        b, h, w, c = x.shape
        if grid:
            x = x.view(b, p[0], h // p[0], p[1], w // p[1], c).permute(0, 2, 4, 1, 3, 5)
        else:
            x = x.view(b, h // p[0], p[0], w // p[1], p[1], c).permute(0, 1, 3, 2, 4, 5)
        return x.contiguous().view(-1, p[0], p[1], c)

    @staticmethod
    def merge(x, p, size, grid, nchw):
        """timm's window_reverse (grid=False) or grid_reverse (or their _nchw forms)."""
        (h, w), c = size, x.shape[1 if nchw else -1]
        if nchw:
            x = x.view(-1, h // p[0], w // p[1], c, p[0], p[1])
            order = (0, 3, 4, 1, 5, 2) if grid else (0, 3, 1, 4, 2, 5)
            return x.permute(*order).contiguous().view(-1, c, h, w)
        x = x.view(-1, h // p[0], w // p[1], p[0], p[1], c)
        order = (0, 3, 1, 4, 2, 5) if grid else (0, 1, 3, 2, 4, 5)
        return x.permute(*order).contiguous().view(-1, h, w, c)

    def partition_attn(self, x, attn, grid):
        size = x.shape[-2:] if self.nchw else x.shape[1:3]
        parts = self.split(x, self.partition_size, grid, self.nchw)
        return self.merge(attn(parts), self.partition_size, size, grid, self.nchw)

    def scaled(self, name, x):
        scale = getattr(self, name, None)
        if scale is None:
            return x
        return x * (scale.gamma.view(1, -1, 1, 1) if self.nchw else scale.gamma)

    def normed(self, norm, x):
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if self.nchw else norm(x)

    def forward(self, tokens):
        if self.nchw:
            return self.block(tokens)
        b, n, c = tokens.shape
        x = self.block(tokens.view(b, *self.map_size, c))
        return x.reshape(b, n, c)

    def block(self, x):
        y = self.normed(self.norm1, x)
        if self.partition == "parallel":
            y = torch.cat([self.partition_attn(y, self.attn_block, False),
                           self.partition_attn(y, self.attn_grid, True)], dim=-1)
        else:
            y = self.partition_attn(y, self.attn, self.partition == "grid")
        x = x + self.scaled("ls1", y)
        mlp = self.mlp
        y = mlp.drop2(mlp.fc2(mlp.drop1(mlp.act(mlp.fc1(self.normed(self.norm2, x))))))
        return x + self.scaled("ls2", y)
