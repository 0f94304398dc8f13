"""PyTorch modules of the kinds in ``iformer.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class ModulationAttention(nn.Module):
    """iFormer's single-head modulation attention (timm.models.iformer.SHMA,
    unwindowed): ``q``, ``k``, ``v_gate`` and ``proj``, each a 1x1 conv
    without a bias (``c``) and a batch norm (``bn``), as timm's ConvNorm, so
    its state_dict loads strictly."""

    def __init__(self, channels, attn, mid, eps=1e-5):
        super().__init__()
        self.init_args = (channels, attn, mid, eps)

        def conv_norm(cin, cout):
            part = nn.Sequential()
            part.add_module("c", nn.Conv2d(cin, cout, 1, bias=False))
            part.add_module("bn", nn.BatchNorm2d(cout, eps=eps))
            return part

        self.scale = attn ** -0.5
        self.window_size = 0
        self.q, self.k = conv_norm(channels, attn), conv_norm(channels, attn)
        self.v_gate = conv_norm(channels, 2 * mid)
        self.gate_act = nn.Sigmoid()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = conv_norm(mid, channels)

    def forward(self, x):
        b, _, h, w = x.shape
        v, gate = self.gate_act(self.v_gate(x)).chunk(2, dim=1)
        q = self.q(x).flatten(2).transpose(-1, -2).unsqueeze(1)
        k = self.k(x).flatten(2).transpose(-1, -2).unsqueeze(1)
        v = v.flatten(2).transpose(-1, -2).unsqueeze(1)
        x = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, -1, h, w)
        return self.proj(x * gate)
