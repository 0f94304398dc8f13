"""PyTorch modules of the kinds in ``mobilevit.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name). Each keeps
timm's submodule names (conv_kxk.conv, conv_kxk.bn, conv_1x1, transformer.i,
norm, conv_proj, conv_fusion), so timm's state_dict loads strictly; an
activation timm keeps inside its BatchNormAct2d (``bn.act``) sits beside the
norm here (``act``: no state)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MobileVitBlock(nn.Module):
    """MobileViT v1's block (timm's MobileVitBlock): conv k x k + BN + act,
    1x1 conv to ``dim``; the map unfolded into ph*pw sequences of the patches'
    same pixel (interpolated, bilinear, to a multiple of the patch first where
    it is not one), ``depth`` pre-norm ViT blocks (multi-head attention, MLP)
    and a LayerNorm on each; folded back, 1x1 conv + BN + act to ``out``,
    then (``fusion``) conv k x k + BN + act of the block's input concatenated
    with it."""

    def __init__(self, channels, dim, depth=2, heads=4, hidden=None, patch=(2, 2), kernel=3,
                 groups=1, out=None, fusion=True, activation="SiLU", eps=1e-5):
        super().__init__()
        self.init_args = (channels, dim, depth, heads, hidden, patch, kernel, groups, out,
                          fusion, activation, eps)
        out = out or channels
        hidden = hidden or 2 * dim

        def conv_norm_act(cin, cout, k, g=1):
            part = nn.Module()
            part.conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=g, bias=False)
            part.bn = nn.BatchNorm2d(cout)
            part.act = getattr(nn, activation)()
            return part

        def layer():
            block, attn, mlp = nn.Module(), nn.Module(), nn.Module()
            attn.qkv, attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            mlp.fc1, mlp.act, mlp.fc2 = (nn.Linear(dim, hidden), getattr(nn, activation)(),
                                         nn.Linear(hidden, dim))
            block.norm1, block.attn = nn.LayerNorm(dim, eps=eps), attn
            block.norm2, block.mlp = nn.LayerNorm(dim, eps=eps), mlp
            return block

        self.heads, self.patch_size = heads, tuple(patch)
        self.conv_kxk = conv_norm_act(channels, channels, kernel, groups)
        self.conv_1x1 = nn.Conv2d(channels, dim, 1, bias=False)
        self.transformer = nn.ModuleList([layer() for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.conv_proj = conv_norm_act(dim, out, 1)
        self.conv_fusion = conv_norm_act(channels + out, out, kernel) if fusion else None

    @staticmethod
    def run(part, x):
        return part.act(part.bn(part.conv(x)))

    def attend(self, attn, x):
        b, n, d = x.shape
        qkv = attn.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return attn.proj(x.transpose(1, 2).reshape(b, n, d))

    def forward(self, x):
        shortcut = x
        x = self.conv_1x1(self.run(self.conv_kxk, x))
        ph, pw = self.patch_size
        b, c, h, w = x.shape
        new_h, new_w = -(-h // ph) * ph, -(-w // pw) * pw   # ceil to a multiple
        nh, nw = new_h // ph, new_w // pw
        n, p = nh * nw, ph * pw
        if (new_h, new_w) != (h, w):   # timm's: no padding, the map resized to fit
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        # [B, C, H, W] -> [B*P, N, C]: one sequence per pixel of a patch
        x = x.reshape(b * c * nh, ph, nw, pw).transpose(1, 2)
        x = x.reshape(b, c, n, p).transpose(1, 3).reshape(b * p, n, -1)
        for blk in self.transformer:
            x = x + self.attend(blk.attn, blk.norm1(x))
            m = blk.mlp
            x = x + m.fc2(m.act(m.fc1(blk.norm2(x))))
        x = self.norm(x)
        x = x.contiguous().view(b, p, n, -1).transpose(1, 3).reshape(b * c * nh, nw, ph, pw)
        x = x.transpose(1, 2).reshape(b, c, nh * ph, nw * pw)
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = self.run(self.conv_proj, x)
        if self.conv_fusion is not None:
            x = self.run(self.conv_fusion, torch.cat((shortcut, x), dim=1))
        return x


class MobileVitV2Block(nn.Module):
    """MobileViT v2's block (timm's MobileVitV2Block): the map interpolated
    (bilinear, align_corners) to a multiple of the patch where it is not one,
    conv k x k (depthwise by default) + BN + act, 1x1 conv to ``dim``;
    unfolded to [B, dim, P, N], ``depth`` pre-norm blocks of separable
    (linear) self-attention and a 1x1-conv MLP, GroupNorm of one group before
    each and after the last; folded back, 1x1 conv + BN (no act) to ``out``."""

    def __init__(self, channels, dim, depth=2, hidden=None, patch=(2, 2), kernel=3,
                 groups=None, out=None, activation="SiLU", eps=1e-5):
        super().__init__()
        self.init_args = (channels, dim, depth, hidden, patch, kernel, groups, out,
                          activation, eps)
        out = out or channels
        hidden = hidden or 2 * dim

        def layer():
            block, attn, mlp = nn.Module(), nn.Module(), nn.Module()
            attn.qkv_proj, attn.out_proj = nn.Conv2d(dim, 1 + 2 * dim, 1), nn.Conv2d(dim, dim, 1)
            mlp.fc1, mlp.act, mlp.fc2 = (nn.Conv2d(dim, hidden, 1), getattr(nn, activation)(),
                                         nn.Conv2d(hidden, dim, 1))
            block.norm1, block.attn = nn.GroupNorm(1, dim, eps=eps), attn
            block.norm2, block.mlp = nn.GroupNorm(1, dim, eps=eps), mlp
            return block

        self.dim, self.patch_size = dim, tuple(patch)
        self.conv_kxk = nn.Module()
        self.conv_kxk.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2,
                                       groups=groups or channels, bias=False)
        self.conv_kxk.bn = nn.BatchNorm2d(channels)
        self.conv_kxk.act = getattr(nn, activation)()
        self.conv_1x1 = nn.Conv2d(channels, dim, 1, bias=False)
        self.transformer = nn.ModuleList([layer() for _ in range(depth)])
        self.norm = nn.GroupNorm(1, dim, eps=eps)
        self.conv_proj = nn.Module()
        self.conv_proj.conv = nn.Conv2d(dim, out, 1, bias=False)
        self.conv_proj.bn = nn.BatchNorm2d(out)

    def attend(self, attn, x):
        # one query per position, softmax over the patches N: a context vector
        # per pixel of a patch, which gates relu(value) everywhere
        q, k, v = attn.qkv_proj(x).split([1, self.dim, self.dim], dim=1)
        context = (k * F.softmax(q, dim=-1)).sum(dim=-1, keepdim=True)
        return attn.out_proj(F.relu(v) * context.expand_as(v))

    def forward(self, x):
        b, _, h, w = x.shape
        ph, pw = self.patch_size
        new_h, new_w = -(-h // ph) * ph, -(-w // pw) * pw   # ceil to a multiple
        nh, nw = new_h // ph, new_w // pw
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        cv = self.conv_kxk
        x = self.conv_1x1(cv.act(cv.bn(cv.conv(x))))
        c = x.shape[1]
        # [B, C, H, W] -> [B, C, P, N]
        x = x.reshape(b, c, nh, ph, nw, pw).permute(0, 1, 3, 5, 2, 4).reshape(b, c, -1, nh * nw)
        for blk in self.transformer:
            x = x + self.attend(blk.attn, blk.norm1(x))
            m = blk.mlp
            x = x + m.fc2(m.act(m.fc1(blk.norm2(x))))
        x = self.norm(x)
        x = x.reshape(b, c, ph, pw, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, c, new_h, new_w)
        return self.conv_proj.bn(self.conv_proj.conv(x))
