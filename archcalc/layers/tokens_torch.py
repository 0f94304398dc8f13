"""PyTorch modules of the kinds in ``tokens.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MapToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C), as torchvision's ViT reads its patch map."""

    init_args = ()

    def forward(self, x):
        return x.flatten(2).permute(0, 2, 1)


class ClassToken(nn.Module):
    """Learned tokens before the others (torchvision: ``class_token``, 1 x 1 x D;
    timm's register tokens, 1 x count x D)."""

    def __init__(self, width, count=1):
        super().__init__()
        self.init_args = (width, count)
        self.class_token = nn.Parameter(torch.zeros(1, count, width))

    def forward(self, x):
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)

    # export of a flat row (the parameter p on the enclosing block)
    @staticmethod
    def flat_forward(p, x):
        return f"torch.cat([{p}.expand({x}.shape[0], -1, -1), {x}], 1)"

    def flat_init(self, shape, literal):
        return f"torch.zeros({shape})"


class PositionEmbedding(nn.Module):
    """x + a learned (1, N, D) embedding (torchvision: ``pos_embedding``, N(0, 0.02)),
    or (1, C, H, W) on a map (PiT's); stored in another shape, read in the
    tokens' order; ``resample`` = (mode, (H, W), antialias, align_corners):
    stored as (1, h, w, D), interpolated to the tokens' H x W grid (timm's
    NaFlexViT, in fp32)."""

    def __init__(self, *shape, stored=None, resample=None):
        super().__init__()
        self.init_args = shape
        self.shape = tuple(shape)
        self.resample = resample
        self.pos_embedding = nn.Parameter(torch.empty(1, *(stored or shape)).normal_(std=0.02))

    def embedding(self, p, dtype):
        if self.resample is None:
            return p.reshape(1, *self.shape)
        mode, size, antialias, align_corners = self.resample
        q = F.interpolate(p.permute(0, 3, 1, 2).float(), size=tuple(size), mode=mode,
                          align_corners=None if mode == "nearest" else align_corners,
                          antialias=antialias)
        return q.flatten(2).transpose(1, 2).to(dtype)

    def forward(self, x):
        return x + self.embedding(self.pos_embedding, x.dtype)

    def flat_forward(self, p, x):
        if self.resample is not None:
            mode, size, antialias, align_corners = self.resample
            corners = None if mode == "nearest" else align_corners
            return (f"{x} + F.interpolate({p}.permute(0, 3, 1, 2).float(), "
                    f"size={tuple(size)}, mode={mode!r}, align_corners={corners}, "
                    f"antialias={antialias}).flatten(2).transpose(1, 2).to({x}.dtype)")
        if tuple(self.pos_embedding.shape[1:]) == self.shape:
            return f"{x} + {p}"
        return f"{x} + {p}.reshape(1, {', '.join(map(str, self.shape))})"

    def flat_init(self, shape, literal):
        return f"torch.empty({shape}).normal_(std=0.02)"


class SelfAttention(nn.MultiheadAttention):
    """Multi-head self-attention as torchvision's encoder block calls it:
    nn.MultiheadAttention(batch_first=True)(x, x, x, need_weights=False). The
    module is the nn.MultiheadAttention itself, so its state_dict keys are
    torchvision's (``self_attention.in_proj_weight``)."""

    def __init__(self, width, heads, bias=True, dropout=0.0):
        super().__init__(width, heads, dropout=dropout, bias=bias, batch_first=True)
        self.init_args = (width, heads, bias, dropout)

    def forward(self, x):
        y, _ = super().forward(x, x, x, need_weights=False)
        return y


class QKVAttention(nn.Module):
    """Multi-head self-attention with timm's weights (timm.layers.Attention, the
    ViT/DeiT family): one ``qkv`` Linear to 3 x heads x head_dim, optional
    LayerNorms on each head's q and k (``q_norm``, ``k_norm``), the fused
    softmax(q k^T / sqrt(head_dim)) v, an optional LayerNorm on the heads'
    output (``norm``), the ``proj`` Linear back to the width; timm's
    state_dict loads strictly."""

    def __init__(self, width, heads, head_dim, bias=True, proj_bias=True, qk_norm=False,
                 scale_norm=False, eps=1e-5, dropout=0.0, proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, head_dim, bias, proj_bias, qk_norm, scale_norm, eps,
                          dropout, proj_dropout)
        self.num_heads, self.head_dim = heads, head_dim
        self.scale = head_dim ** -0.5
        inner = heads * head_dim
        self.qkv = nn.Linear(width, 3 * inner, bias=bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=eps) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(inner, eps=eps) if scale_norm else nn.Identity()
        self.proj = nn.Linear(inner, width, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_dropout)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p
                                           if self.training else 0.0)
        x = self.norm(x.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
        return self.proj_drop(self.proj(x))


class BeitAttention(nn.Module):
    """BEiT's attention (timm.models.beit.Attention): the qkv Linear without a
    bias, ``q_bias`` and ``v_bias`` in its place (the key's is a fixed zero, a
    buffer out of the state_dict), and, given a window of wh x ww patches, a
    learned relative position bias per head added to the scores:
    ``relative_position_bias_table`` ((2wh-1)(2ww-1) + 3 rows: the class token's
    three), gathered by ``relative_position_index`` (a buffer)."""

    def __init__(self, width, heads, head_dim, bias=True, window=None, dropout=0.0,
                 proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, head_dim, bias, window, dropout, proj_dropout)
        self.num_heads, self.head_dim = heads, head_dim
        self.scale = head_dim ** -0.5
        inner = heads * head_dim
        self.qkv = nn.Linear(width, 3 * inner, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(inner, width)
        self.proj_drop = nn.Dropout(proj_dropout)
        self.q_bias = nn.Parameter(torch.zeros(inner)) if bias else None
        self.register_buffer("k_bias", torch.zeros(inner) if bias else None, persistent=False)
        self.v_bias = nn.Parameter(torch.zeros(inner)) if bias else None
        self.window_size = tuple(window) if window else None
        table, index = None, None
        if window:
            (wh, ww), area = window, window[0] * window[1]
            distances = (2 * wh - 1) * (2 * ww - 1) + 3
            table = nn.Parameter(torch.zeros(distances, heads))
            coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww),
                                                indexing="ij")).flatten(1)
            relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
            index = torch.full((area + 1, area + 1), distances - 3, dtype=torch.long)
            index[1:, 1:] = (relative[:, :, 0] + wh - 1) * (2 * ww - 1) + relative[:, :, 1] + ww - 1
            index[1:, 0] = distances - 2
            index[0, 0] = distances - 1
        self.relative_position_bias_table = table
        self.register_buffer("relative_position_index", index, persistent=False)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, " \
            f"window_size={self.window_size}"

    def forward(self, x):
        b, n, _ = x.shape
        bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        scores_bias = None
        if self.relative_position_bias_table is not None:
            scores_bias = self.relative_position_bias_table[
                self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=scores_bias,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(x))


class TokenPool(nn.Module):
    """(B, N, D) -> (B, D): one token (the first by default), or the mean or
    the maximum of all."""

    def __init__(self, mode="first", index=0):
        super().__init__()
        self.init_args = (mode, index)
        self.mode, self.index = mode, index

    def extra_repr(self):
        return f"mode={self.mode!r}, index={self.index}"

    def forward(self, x):
        if self.mode == "max":
            return x.max(dim=1)[0]
        return x[:, self.index] if self.mode == "first" else x.mean(dim=1)


class SkipTokens(nn.Module):
    """(B, N, D) -> (B, N - count, D): the tokens after the first ``count`` (a view)."""

    def __init__(self, count):
        super().__init__()
        self.init_args = (count,)
        self.count = count

    def extra_repr(self):
        return f"count={self.count}"

    def forward(self, x):
        return x[:, self.count:]


class FirstTokens(nn.Module):
    """(B, N, D) -> (B, count, D): the first ``count`` tokens (a view)."""

    def __init__(self, count=1):
        super().__init__()
        self.init_args = (count,)
        self.count = count

    def extra_repr(self):
        return f"count={self.count}"

    def forward(self, x):
        return x[:, :self.count]


class TokensToMap(nn.Module):
    """(B, H*W, D) -> (B, D, H, W): tokens read back as a map (views), as
    ConvNeXt's permute back to channels first."""

    def __init__(self, height, width):
        super().__init__()
        self.init_args = (height, width)
        self.height, self.width = height, width

    def forward(self, x):
        return x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], self.height, self.width)


def _max_of_tokens(c):
    """x.max(1) (its values: an item read but the first is refused where the
    call is read) or x.amax(1) over N x D tokens, or amax((1, 2)) over a
    channels-last map's positions: token_pool's max."""
    from .from_torch import NoMapping, row
    dims = c.arg("max", 1, "dim", None)
    keep = c.arg("max", 2, "keepdim", False)
    given = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    if keep or not given or not all(isinstance(d, int) and not isinstance(d, bool)
                                    for d in given):
        raise NoMapping(f"max over {dims} (keepdim {keep}): a max over the tokens is "
                        "token_pool's")
    if len(c.x) == 2 and len(c.x_torch) == 2 and [d % 3 for d in given] == [1]:
        return row("token_pool", mode="max")
    if len(c.x) == 2 and len(c.x_torch) == 3 and sorted(d % 4 for d in given) == [1, 2]:
        return row("token_pool", mode="max")
    raise NoMapping(f"max over {dims} of a {list(c.x_torch)} input")


FUNCTIONS = {torch.max: _max_of_tokens, torch.amax: _max_of_tokens}
METHODS = {"max": _max_of_tokens, "amax": _max_of_tokens}
