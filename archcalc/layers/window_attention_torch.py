"""PyTorch modules of the kinds in ``window_attention.py`` (Swin's shifted-window
attention and patch merging, MaxViT's partitions and relative attention).

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class with ``inspect.getsource``: a class uses only ``torch``, ``nn`` and
``F``. Each module keeps torchvision's attribute, parameter and buffer names,
so torchvision's state_dict loads strictly and ``from_torch`` reads either
module the same way; each takes tokens (B, N, C) in archcalc's layout (N = H*W
positions in row-major order, a channels-last map read flat) and views them as
the map its arithmetic needs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShiftedWindowAttention(nn.Module):
    """torchvision's ShiftedWindowAttention (``v2=False``) or
    ShiftedWindowAttentionV2 (``v2=True``: cosine attention, a learned logit
    scale per head, the continuous position bias MLP 2 -> 512 -> heads), on
    tokens of an ``height`` x ``width`` map. The forward is torchvision's
    ``shifted_window_attention``, step for step (padding to whole windows,
    the cyclic shift and its mask, the k bias zeroed in V2)."""

    def __init__(self, dim, window_size, shift_size, num_heads, height, width, qkv_bias=True,
                 proj_bias=True, attention_dropout=0.0, dropout=0.0, v2=False, k_bias=True,
                 pretrained_window=None, roll_first=False):
        super().__init__()
        self.init_args = (dim, list(window_size), list(shift_size), num_heads, height, width,
                          qkv_bias, proj_bias, attention_dropout, dropout, v2, k_bias,
                          pretrained_window, roll_first)
        self.roll_first = roll_first    # timm's order: roll the map, then pad it
        self.window_size, self.shift_size = list(window_size), list(shift_size)
        self.num_heads, self.map_size, self.v2 = num_heads, (height, width), v2
        self.attention_dropout, self.dropout = attention_dropout, dropout
        # timm's V2 layout (k_bias=False): q_bias and v_bias, the k bias a zero buffer
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias and k_bias)
        if qkv_bias and not k_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.pretrained_window_size = tuple(pretrained_window or (0, 0))
        wh, ww = self.window_size
        if v2:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
            self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True),
                                         nn.Linear(512, num_heads, bias=False))
            self.register_buffer("relative_coords_table", self._coords_table())
        else:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij"))
        coords = torch.flatten(coords, 1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        relative[:, :, 0] += wh - 1
        relative[:, :, 1] += ww - 1
        relative[:, :, 0] *= 2 * ww - 1
        self.register_buffer("relative_position_index", relative.sum(-1).flatten())

    def _coords_table(self):
        """V2's log-spaced relative coordinates, (1, 2*Wh-1, 2*Ww-1, 2)."""
        wh, ww = self.window_size
        h = torch.arange(-(wh - 1), wh, dtype=torch.float32)
        w = torch.arange(-(ww - 1), ww, dtype=torch.float32)
        table = torch.stack(torch.meshgrid([h, w], indexing="ij"))
        table = table.permute(1, 2, 0).contiguous().unsqueeze(0)
        if any(self.pretrained_window_size):        # timm's pretrained_window_size
            wh, ww = self.pretrained_window_size
        table[:, :, :, 0] /= max(wh - 1, 1)
        table[:, :, :, 1] /= max(ww - 1, 1)
        table *= 8
        return torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / 3.0

    def extra_repr(self):
        return (f"window_size={self.window_size}, shift_size={self.shift_size}, "
                f"num_heads={self.num_heads}, map_size={self.map_size}, v2={self.v2}, "
                f"attention_dropout={self.attention_dropout}, dropout={self.dropout}"
                + (f", pretrained_window_size={self.pretrained_window_size}"
                   if any(self.pretrained_window_size) else "")
                + (", roll_first=True" if self.roll_first else ""))

    def relative_position_bias(self):
        n = self.window_size[0] * self.window_size[1]
        table = (self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads) if self.v2
                 else self.relative_position_bias_table)
        bias = table[self.relative_position_index].view(n, n, -1)
        bias = bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        return 16 * torch.sigmoid(bias) if self.v2 else bias

    def forward(self, tokens):
        b, _, c = tokens.shape
        h, w = self.map_size
        x = self.windows(tokens.view(b, h, w, c), self.relative_position_bias())
        return x.reshape(b, h * w, c)

    def windows(self, x, relative_position_bias):
        """torchvision's shifted_window_attention on a (B, H, W, C) map."""
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
        qkv_bias = self.qkv.bias
        if getattr(self, "q_bias", None) is not None:
            qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        elif self.v2 and qkv_bias is not None:   # V2 keeps no k bias (zeroed on each call)
            qkv_bias = qkv_bias.clone()
            qkv_bias[c:2 * c].zero_()
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        qkv = qkv.reshape(x.size(0), x.size(1), 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.v2:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=4.605170185988092).exp()  # log(100)
        else:
            attn = (q * (c // heads) ** -0.5).matmul(k.transpose(-2, -1))
        attn = attn + relative_position_bias
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


class PatchMerging(nn.Module):
    """torchvision's PatchMerging (``post_norm=False``: layer norm of the 4C
    concatenation, then the reduction) or PatchMergingV2 (``post_norm=True``:
    the reduction, then a layer norm of 2C), on tokens of a ``height`` x
    ``width`` map: each 2 x 2 block of positions (padded to even sizes)
    concatenated in torchvision's order (0,0), (1,0), (0,1), (1,1)."""

    def __init__(self, dim, height, width, post_norm=False, eps=1e-5):
        super().__init__()
        self.init_args = (dim, height, width, post_norm, eps)
        self.dim, self.map_size, self.post_norm = dim, (height, width), post_norm
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim if post_norm else 4 * dim, eps=eps)

    def extra_repr(self):
        return f"map_size={self.map_size}, post_norm={self.post_norm}"

    def forward(self, tokens):
        b, _, c = tokens.shape
        h, w = self.map_size
        x = F.pad(tokens.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        x = self.norm(self.reduction(x)) if self.post_norm else self.reduction(self.norm(x))
        return x.reshape(b, -1, 2 * c)


class WindowPartition(nn.Module):
    """(B, C, H, W) -> (B, H*W, C), the positions in window order: P x P
    windows row by row, each window's P*P positions row by row (torchvision
    MaxViT's WindowPartition, whose (B, G, P*P, C) is this, flat)."""

    def __init__(self, p):
        super().__init__()
        self.init_args = (p,)
        self.p = p

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.p
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, h * w, c)


class GroupTranspose(nn.Module):
    """(B, N, C) read as (B, G, N/G, C), the two group axes swapped and read
    flat again (MaxViT's SwapAxes(-2, -3) between window and grid order)."""

    def __init__(self, groups):
        super().__init__()
        self.init_args = (groups,)
        self.groups = groups

    def extra_repr(self):
        return f"groups={self.groups}"

    def forward(self, x):
        b, n, c = x.shape
        return x.view(b, self.groups, n // self.groups, c).transpose(1, 2).reshape(b, n, c)


class WindowDepartition(nn.Module):
    """The inverse of WindowPartition: tokens in window order -> (B, C, H, W)."""

    def __init__(self, p, height, width):
        super().__init__()
        self.init_args = (p, height, width)
        self.p, self.map_size = p, (height, width)

    def extra_repr(self):
        return f"p={self.p}, map_size={self.map_size}"

    def forward(self, x):
        b, _, c = x.shape
        p, (h, w) = self.p, self.map_size
        x = x.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, h, w)


class RelativePositionalMultiHeadAttention(nn.Module):
    """torchvision MaxViT's attention within each group of P*P consecutive
    tokens, with a learned (2P-1)^2 x heads relative position bias table. As
    torchvision: the keys scaled by feat_dim ** -0.5 (the width, not a head's).
    Its two einsums are written as the matmuls they lower to."""

    def __init__(self, feat_dim, head_dim, max_seq_len):
        super().__init__()
        self.init_args = (feat_dim, head_dim, max_seq_len)
        self.n_heads, self.head_dim = feat_dim // head_dim, head_dim
        self.size = int(round(max_seq_len ** 0.5))
        self.max_seq_len = max_seq_len
        self.to_qkv = nn.Linear(feat_dim, self.n_heads * self.head_dim * 3)
        self.scale_factor = feat_dim ** -0.5
        self.merge = nn.Linear(self.head_dim * self.n_heads, feat_dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.empty(((2 * self.size - 1) * (2 * self.size - 1), self.n_heads)))
        coords = torch.stack(torch.meshgrid([torch.arange(self.size), torch.arange(self.size)],
                                            indexing="ij"))
        coords = torch.flatten(coords, 1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        relative[:, :, 0] += self.size - 1
        relative[:, :, 1] += self.size - 1
        relative[:, :, 0] *= 2 * self.size - 1
        self.register_buffer("relative_position_index", relative.sum(-1))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, tokens):
        b, n, d = tokens.shape
        g, p, h, dh = n // self.max_seq_len, self.max_seq_len, self.n_heads, self.head_dim
        q, k, v = torch.chunk(self.to_qkv(tokens.view(b, g, p, d)), 3, dim=-1)
        q = q.reshape(b, g, p, h, dh).permute(0, 1, 3, 2, 4)
        k = k.reshape(b, g, p, h, dh).permute(0, 1, 3, 2, 4) * self.scale_factor
        v = v.reshape(b, g, p, h, dh).permute(0, 1, 3, 2, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(p, p, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        # torchvision's two einsums, as the batched products they lower to
        # (fvcore estimates an einsum's MACs to 4 digits; it counts matmul exactly)
        attn = F.softmax(q.matmul(k.transpose(-2, -1)) + bias, dim=-1)
        out = attn.matmul(v)
        out = out.permute(0, 1, 3, 2, 4).reshape(b, g, p, d)
        return self.merge(out).reshape(b, n, d)
