"""PyTorch modules of the kinds in ``relpos_attention.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RelPosAttention(nn.Module):
    """timm's RelPosAttention with a RelPosMlp in 'cr' mode
    (timm.models.vision_transformer_relpos): qkv, the fused attention with an
    additive bias per head from ``rel_pos.mlp`` (fc1 2 -> hidden, ReLU, fc2
    hidden -> heads) of sign(d)*log(1+|d|) relative offsets, gathered to the
    grid's pairs, 0 for the prefix tokens; proj. timm's submodule names (the
    offsets and the index are buffers out of the state_dict). The bias is a
    nested class: export copies this class alone."""

    class RelPosMlp(nn.Module):
        class Mlp(nn.Module):
            def __init__(self, hidden, heads):
                super().__init__()
                self.fc1 = nn.Linear(2, hidden)
                self.act = nn.ReLU()
                self.drop1 = nn.Dropout(0.125)
                self.norm = nn.Identity()
                self.fc2 = nn.Linear(hidden, heads)
                self.drop2 = nn.Dropout(0.0)

            def forward(self, x):
                return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))

        def __init__(self, window, heads, hidden, prefix):
            super().__init__()
            self.window_size, self.prefix_tokens, self.num_heads = tuple(window), prefix, heads
            self.bias_gain, self.bias_act = None, nn.Identity()
            self.mlp = self.Mlp(hidden, heads)
            wh, ww = window
            offsets = torch.stack(torch.meshgrid(torch.arange(1 - wh, wh), torch.arange(1 - ww, ww),
                                                 indexing="ij"), dim=-1).float()
            self.register_buffer("rel_coords_log",
                                 torch.sign(offsets) * torch.log(1.0 + offsets.abs()),
                                 persistent=False)
            coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww),
                                                indexing="ij")).flatten(1)
            relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
            index = (relative[:, :, 0] + wh - 1) * (2 * ww - 1) + relative[:, :, 1] + ww - 1
            self.register_buffer("relative_position_index", index.reshape(-1), persistent=False)

        def get_bias(self):
            area = self.window_size[0] * self.window_size[1]
            bias = self.mlp(self.rel_coords_log).view(-1, self.num_heads)
            bias = bias[self.relative_position_index].view(area, area, -1).permute(2, 0, 1)
            p = self.prefix_tokens
            return F.pad(bias, [p, 0, p, 0]).unsqueeze(0)

    def __init__(self, width, heads, window, prefix=0, hidden=128, bias=False, dropout=0.0,
                 proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, window, prefix, hidden, bias, dropout, proj_dropout)
        self.num_heads, self.head_dim = heads, width // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        self.rel_pos = self.RelPosMlp(window, heads, hidden, prefix)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_dropout)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, window_size={self.rel_pos.window_size}, " \
            f"prefix_tokens={self.rel_pos.prefix_tokens}"

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.rel_pos.get_bias(),
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))
