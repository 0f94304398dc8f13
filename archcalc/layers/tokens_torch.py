"""PyTorch modules of the kinds in ``tokens.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class MapToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C), as torchvision's ViT reads its patch map."""

    init_args = ()

    def forward(self, x):
        return x.flatten(2).permute(0, 2, 1)


class ClassToken(nn.Module):
    """A learned token before the others (torchvision: ``class_token``, 1 x 1 x D)."""

    def __init__(self, width):
        super().__init__()
        self.init_args = (width,)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))

    def forward(self, x):
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)

    # export of a flat row (the parameter p on the enclosing block)
    @staticmethod
    def flat_forward(p, x):
        return f"torch.cat([{p}.expand({x}.shape[0], -1, -1), {x}], 1)"

    def flat_init(self, shape, literal):
        return f"torch.zeros({shape})"


class PositionEmbedding(nn.Module):
    """x + a learned (1, N, D) embedding (torchvision: ``pos_embedding``, N(0, 0.02))."""

    def __init__(self, tokens, width):
        super().__init__()
        self.init_args = (tokens, width)
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, width).normal_(std=0.02))

    def forward(self, x):
        return x + self.pos_embedding

    @staticmethod
    def flat_forward(p, x):
        return f"{x} + {p}"

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


class TokenPool(nn.Module):
    """(B, N, D) -> (B, D): the first (class) token, or the mean of all."""

    def __init__(self, mode="first"):
        super().__init__()
        self.init_args = (mode,)
        self.mode = mode

    def forward(self, x):
        return x[:, 0] if self.mode == "first" else x.mean(dim=1)


class TokensToMap(nn.Module):
    """(B, H*W, D) -> (B, D, H, W): tokens read back as a map (views), as
    ConvNeXt's permute back to channels first."""

    def __init__(self, height, width):
        super().__init__()
        self.init_args = (height, width)
        self.height, self.width = height, width

    def forward(self, x):
        return x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], self.height, self.width)
