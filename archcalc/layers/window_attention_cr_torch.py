"""PyTorch module of the kind in ``window_attention_cr.py``: timm's Swin V2-cr
shifted-window attention (WindowMultiHeadAttention, and the roll, padding and
window partition of SwinTransformerV2CrBlock), on tokens.

Imported only by that kind's ``build`` (and ``module_classes``); ``archcalc
export --to python`` copies the class with ``inspect.getsource``: it uses only
``torch``, ``nn`` and ``F``. Its parameter names are timm's (``qkv``,
``proj``, ``meta_mlp.fc1``, ``meta_mlp.fc2``, ``logit_scale``), so timm's
state_dict loads strictly."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrWindowAttention(nn.Module):
    """Cosine attention in (shifted) M x M windows of an ``height`` x ``width``
    map read as tokens: q and k normalized, times exp(min(logit_scale, log
    100)) per head, plus a bias per pair of positions in a window from an MLP
    (2 -> hidden -> heads, ReLU) of their log-spaced offsets, sign(d) *
    log(1 + |d|); the map padded to whole windows, rolled by -shift (a mask of
    -100 between the wrapped regions), the windows' output rolled back."""

    def __init__(self, dim, window_size, shift_size, num_heads, height, width, hidden=384,
                 qkv_bias=True, proj_bias=True, attention_dropout=0.0, dropout=0.0,
                 bias_dropout=0.125, roll_first=False):
        super().__init__()
        self.init_args = (dim, list(window_size), list(shift_size), num_heads, height, width,
                          hidden, qkv_bias, proj_bias, attention_dropout, dropout, bias_dropout,
                          roll_first)
        self.roll_first = roll_first    # timm's order: roll the map, then pad it
        self.window_size, self.shift_size = list(window_size), list(shift_size)
        self.num_heads, self.map_size = num_heads, (height, width)
        self.attention_dropout, self.dropout = attention_dropout, dropout
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.meta_mlp = nn.Module()
        self.meta_mlp.fc1 = nn.Linear(2, hidden)
        self.meta_mlp.fc2 = nn.Linear(hidden, num_heads)
        self.bias_dropout = bias_dropout
        self.logit_scale = nn.Parameter(torch.full((num_heads,), 2.302585092994046))  # log 10
        wh, ww = self.window_size
        coords = torch.stack(torch.meshgrid(torch.arange(wh, dtype=torch.float32),
                                            torch.arange(ww, dtype=torch.float32),
                                            indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).reshape(-1, 2)
        self.register_buffer("relative_coordinates_log",
                             torch.sign(relative) * torch.log(1.0 + relative.abs()),
                             persistent=False)

    def extra_repr(self):
        return (f"window_size={self.window_size}, shift_size={self.shift_size}, "
                f"num_heads={self.num_heads}, map_size={self.map_size}, "
                f"hidden={self.meta_mlp.fc1.out_features}, bias_dropout={self.bias_dropout}, "
                f"attention_dropout={self.attention_dropout}, dropout={self.dropout}, "
                f"roll_first={self.roll_first}")

    def relative_position_bias(self):
        n = self.window_size[0] * self.window_size[1]
        hidden = F.relu(self.meta_mlp.fc1(self.relative_coordinates_log))
        hidden = F.dropout(hidden, p=self.bias_dropout, training=self.training)
        bias = self.meta_mlp.fc2(hidden)
        return bias.transpose(1, 0).reshape(self.num_heads, n, n).unsqueeze(0)

    def forward(self, tokens):
        b, _, c = tokens.shape
        h, w = self.map_size
        x = self.windows(tokens.view(b, h, w, c), self.relative_position_bias())
        return x.reshape(b, h * w, c)

    def windows(self, x, relative_position_bias):
        """Pad to whole windows, roll, attend in each window, undo both."""
        b, h, w, c = x.shape
        ws, heads, shift = self.window_size, self.num_heads, list(self.shift_size)
        if self.roll_first and sum(shift) > 0:      # timm's: roll, then pad
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        x = F.pad(x, (0, 0, 0, (ws[1] - w % ws[1]) % ws[1], 0, (ws[0] - h % ws[0]) % ws[0]))
        _, ph, pw, _ = x.shape
        if not self.roll_first:     # torchvision's: pad, then roll (not in one window)
            shift = [0 if ws[0] >= ph else shift[0], 0 if ws[1] >= pw else shift[1]]
            if sum(shift) > 0:
                x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        n_windows = (ph // ws[0]) * (pw // ws[1])
        x = x.view(b, ph // ws[0], ws[0], pw // ws[1], ws[1], c)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b * n_windows, ws[0] * ws[1], c)
        qkv = self.qkv(x).reshape(x.size(0), x.size(1), 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        scale = torch.clamp(self.logit_scale.reshape(1, heads, 1, 1), max=4.605170185988092).exp()
        attn = attn * scale + relative_position_bias
        if sum(shift) > 0:
            attn = self.masked(attn, x, (ph, pw), shift, n_windows)
        attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout, training=self.training)
        x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), c)
        x = F.dropout(self.proj(x), p=self.dropout, training=self.training)
        x = x.view(b, ph // ws[0], pw // ws[1], ws[0], ws[1], c)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if sum(shift) > 0 and not self.roll_first:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        x = x[:, :h, :w, :]
        if sum(shift) > 0 and self.roll_first:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x.contiguous()

    def masked(self, attn, x, padded, shift, n_windows):
        """The shifted windows' mask: -100 between tokens from different regions."""
        (ph, pw), ws, heads = padded, self.window_size, self.num_heads
        mask = x.new_zeros((ph, pw))
        count = 0
        for h0, h1 in ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None)):
            for w0, w1 in ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None)):
                mask[h0:h1, w0:w1] = count
                count += 1
        mask = mask.view(ph // ws[0], ws[0], pw // ws[1], ws[1])
        mask = mask.permute(0, 2, 1, 3).reshape(n_windows, ws[0] * ws[1])
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, float(-100.0)).masked_fill(mask == 0, float(0.0))
        attn = attn.view(x.size(0) // n_windows, n_windows, heads, x.size(1), x.size(1))
        attn = attn + mask.unsqueeze(1).unsqueeze(0)
        return attn.view(-1, heads, x.size(1), x.size(1))
