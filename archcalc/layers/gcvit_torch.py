"""PyTorch module of the kind in ``gcvit.py`` (GCViT's stage).

Imported only by that kind's ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies the
class with ``inspect.getsource``: it uses only ``torch``, ``nn`` and ``F``,
and keeps timm's parameter names (plain containers), so timm's state_dict
loads strictly."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalContextStage(nn.Module):
    """timm's GlobalContextVitStage on a (B, C, H, W) map: the downsample
    (LayerNorm2d, MBConv, 3x3 stride-2 conv to ``dim``, LayerNorm2d), the
    global query generator (MBConvs and 3x3 stride-2 max pools), ``depth``
    window attention blocks on the channels-last map (the odd ones with the
    global query), a layer norm where ``stage_norm``."""

    def __init__(self, in_dim, dim, depth, num_heads, window_size, levels, downsample, hidden,
                 qkv_bias=True, stage_norm=False, eps=1e-5, init=None, se_in=8, se=8):
        super().__init__()
        self.init_args = (in_dim, dim, depth, num_heads, tuple(window_size), levels, downsample,
                          hidden, qkv_bias, stage_norm, eps, init, se_in, se)
        self.window_size, self.num_heads = tuple(window_size), num_heads
        if downsample:
            self.downsample = nn.Module()
            self.downsample.norm1 = nn.LayerNorm(in_dim, eps=eps)
            self.downsample.conv_block = self.mbconv(in_dim, se_in)
            self.downsample.reduction = nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False)
            self.downsample.norm2 = nn.LayerNorm(dim, eps=eps)
        self.global_block = nn.Module()
        self.global_block.blocks = nn.Sequential()
        for i in range(max(1, levels)):
            self.global_block.blocks.add_module(f"conv{i + 1}", self.mbconv(dim, se))
            if levels:
                self.global_block.blocks.add_module(f"pool{i + 1}", nn.MaxPool2d(3, 2, 1))
        wh, ww = self.window_size
        coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij"))
        coords = coords.flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        relative[:, :, 0] += wh - 1
        relative[:, :, 1] += ww - 1
        relative[:, :, 0] *= 2 * ww - 1
        self.blocks = nn.ModuleList()
        for i in range(depth):
            blk = nn.Module()
            blk.norm1 = nn.LayerNorm(dim, eps=eps)
            blk.attn = nn.Module()
            blk.attn.rel_pos = nn.Module()
            blk.attn.rel_pos.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
            nn.init.trunc_normal_(blk.attn.rel_pos.relative_position_bias_table, std=0.02)
            blk.attn.rel_pos.register_buffer("relative_position_index", relative.sum(-1).view(-1),
                                             persistent=False)
            blk.attn.qkv = nn.Linear(dim, dim * (2 if i % 2 else 3), bias=qkv_bias)
            blk.attn.proj = nn.Linear(dim, dim)
            blk.norm2 = nn.LayerNorm(dim, eps=eps)
            blk.mlp = nn.Module()
            blk.mlp.fc1, blk.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
            if init is not None:
                for name in ("ls1", "ls2"):
                    setattr(blk, name, nn.Module())
                    getattr(blk, name).gamma = nn.Parameter(init * torch.ones(dim))
            self.blocks.append(blk)
        self.norm = nn.LayerNorm(dim, eps=eps) if stage_norm else None

    @staticmethod
    def mbconv(c, rd):
        m = nn.Module()
        m.conv_dw = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        m.se = nn.Module()
        m.se.fc1, m.se.fc2 = nn.Conv2d(c, rd, 1, bias=False), nn.Conv2d(rd, c, 1, bias=False)
        m.conv_pw = nn.Conv2d(c, c, 1, bias=False)
        return m

    def extra_repr(self):
        return f"num_heads={self.num_heads}, window_size={self.window_size}"

    @staticmethod
    def run_mbconv(m, x):
        y = F.gelu(m.conv_dw(x))
        y = y * torch.sigmoid(m.se.fc2(F.gelu(m.se.fc1(y.mean((2, 3), keepdim=True)))))
        return x + m.conv_pw(y)

    @staticmethod
    def norm2d(norm, x):
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def attention(self, attn, x, q_global):
        """Window attention on a (B, H, W, C) map: q from ``q_global`` (B, Mh,
        Mw, C), the same for each window of an image, where given."""
        b, h, w, c = x.shape
        (wh, ww), heads, t = self.window_size, self.num_heads, self.window_size[0] * self.window_size[1]
        x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, t, c)
        bw = x.shape[0]
        if q_global is not None:
            k, v = attn.qkv(x).reshape(bw, t, 2, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
            q = q_global.repeat_interleave(bw // b, dim=0)
            q = q.reshape(bw, t, heads, c // heads).permute(0, 2, 1, 3)
        else:
            q, k, v = attn.qkv(x).reshape(bw, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        rel = attn.rel_pos
        bias = rel.relative_position_bias_table[rel.relative_position_index].view(t, t, -1)
        scores = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)
        x = attn.proj((scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, t, c))
        x = x.view(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, h, w, c)

    def forward(self, x):
        d = getattr(self, "downsample", None)
        if d is not None:
            x = self.run_mbconv(d.conv_block, self.norm2d(d.norm1, x))
            x = self.norm2d(d.norm2, d.reduction(x))
        g = x
        for name, m in self.global_block.blocks.named_children():
            g = m(g) if name.startswith("pool") else self.run_mbconv(m, g)
        x, g = x.permute(0, 2, 3, 1), g.permute(0, 2, 3, 1)
        for i, blk in enumerate(self.blocks):
            y = self.attention(blk.attn, blk.norm1(x), g if i % 2 else None)
            x = x + (y * blk.ls1.gamma if hasattr(blk, "ls1") else y)
            y = blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x))))
            x = x + (y * blk.ls2.gamma if hasattr(blk, "ls2") else y)
        if self.norm is not None:
            x = self.norm(x)
        return x.permute(0, 3, 1, 2).contiguous()
