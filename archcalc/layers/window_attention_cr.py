"""Swin V2-cr's shifted-window attention (timm's swin_transformer_v2_cr: Liu et
al. 2022's Swin V2 as Christoph Reich wrote it): the cosine attention of Swin
V2 with a learned logit scale per head, and a position bias per pair of
positions in a window from an MLP of their log-spaced offsets.

Layout and geometry as ``window_attention`` (tokens of an h x w map, padded to
whole M x M windows, rolled by the shift). MACs are FlopCounterMode's of the
module on the meta device, divided by two: the four matrix products of the
windows and the bias MLP on the (M*M)^2 pairs of offsets (once per forward
pass, whatever the batch: exact at batch 1).
"""
from __future__ import annotations

from .. import sym
from .base import Arg, Saved, register
from .window_attention import (FP32, WindowAttention, WindowAttentionV2, _require_tokens,
                               _square_or_pair, _torch_map)


@register
class WindowAttentionCr(WindowAttentionV2):
    """timm's Swin V2-cr window attention (WindowMultiHeadAttention inside
    SwinTransformerV2CrBlock's shifted-window attention): QKV and output
    projections, cosine scores times exp(min(logit_scale, log 100)) per head,
    plus a bias per pair of the T = Mh*Mw positions of a window: an MLP
    (2 -> hidden -> heads, ReLU, dropout after the ReLU) of the pair's offsets
    sign(d)*log(1 + |d|), computed for all T^2 pairs (no table, no sigmoid);
    the shift's mask of -100, softmax. Receptive field as window_attention."""
    name = "window_attention_cr"
    torch_classes = ("CrWindowAttention",)  # in window_attention_cr_torch.py
    aliases = ("swin_cr_attention",)
    summary = ("Swin V2-cr's window attention: cosine attention with a logit scale per head, "
               "a position bias MLP (2 -> hidden -> heads) on every pair of a window")
    flops_rule = ("as window_attention_v2; the bias MLP on T^2 pairs of offsets: "
                  "MACs add T^2*(2*hidden + hidden*heads), T = Mh*Mw")
    flop_counter_gap = ("the position bias MLP runs once per forward pass, not per sample: "
                        "FlopCounterMode at batch B counts it once where B x MACs counts it "
                        "B times")
    args = {**WindowAttention.args,
            "hidden": Arg("int", 384, min=1, numeric=True,
                          doc="the bias MLP's hidden width (timm's meta_hidden_dim)"),
            "bias_dropout": Arg("float", 0.125, min=0.0, max=1.0,
                                doc="dropout after the bias MLP's ReLU (training only)")}
    arg_examples = {**WindowAttention.arg_examples, "hidden": (1, 4)}

    def qkv_bias_count(self, a, d):
        return 3 * d if a.qkv_bias else 0

    def pairs(self, a):
        (wh, ww) = a.window
        return (wh * ww) ** 2

    def bias_params(self, a):
        return sym.norm(a.heads + 3 * a.hidden + a.hidden * a.heads + a.heads)

    def bias_formula(self, a):
        return f"{a.heads} + (2*{a.hidden} + {a.hidden}) + ({a.hidden}*{a.heads} + {a.heads})"

    def buffers(self, a, x):
        return 2 * self.pairs(a)        # relative_coordinates_log

    def bias_macs(self, a):
        return self.pairs(a) * (2 * a.hidden + a.hidden * a.heads)

    def macs_formula(self, a, x, y):
        (wh, ww) = a.window
        return (f"{WindowAttention.macs_formula(self, a, x, y)} + ({wh}*{ww})^2*"
                f"(2*{a.hidden} + {a.hidden}*{a.heads})")

    def saved(self, a, x, y):
        # as V2's per window; once per batch: the bias MLP's input, its hidden
        # layer and its ReLU's output, its output, the exponentiated logit scale
        found = super().saved(a, x, y)
        per_batch = sym.norm(self.pairs(a) * (2 + 2 * a.hidden + a.heads) + a.heads)
        return Saved(extra=found.extra, per_batch=((per_batch, FP32),))

    def build(self, a, x):
        from .window_attention_cr_torch import CrWindowAttention as Module
        (h, w), _, _, _ = self.geometry(a, x)
        return Module(x[1], list(a.window), list(a.shift), a.heads, h, w, a.hidden, a.qkv_bias,
                      a.proj_bias, a.attention_dropout, a.dropout, a.bias_dropout, a.roll_first)

    torch_modules = ("archcalc.layers.window_attention_cr_torch.CrWindowAttention",)
    torch_methods = {
        "timm.models.swin_transformer_v2_cr.SwinTransformerV2CrBlock._shifted_window_attn":
            "attn"}

    def from_torch(self, call, m):
        """archcalc's CrWindowAttention."""
        from .from_torch import pair, row
        _require_tokens(call, "window attention")
        h, w = _torch_map(call, m, "window attention")
        return row("window_attention_cr", heads=int(m.num_heads), window=pair(m.window_size),
                   shift=pair(m.shift_size), size=_square_or_pair(h, w),
                   hidden=int(m.meta_mlp.fc1.out_features), qkv_bias=m.qkv.bias is not None,
                   proj_bias=m.proj.bias is not None, bias_dropout=float(m.bias_dropout),
                   attention_dropout=float(m.attention_dropout), dropout=float(m.dropout),
                   roll_first=bool(m.roll_first))

    def from_torch_method(self, call, block):
        """timm's SwinTransformerV2CrBlock._shifted_window_attn: the shift,
        windows and attention of ``block.attn`` (WindowMultiHeadAttention)."""
        from .from_torch import NoMapping, pair, row
        from .swin_timm import timm_windows
        window, shift, h, w, roll_first = timm_windows(call, block, "timm's Swin V2-cr block")
        m, d = block.attn, call.x[1]
        mlp = m.meta_mlp
        fc1, fc2 = getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)
        act, norm = getattr(mlp, "act", None), getattr(mlp, "norm", None)
        if m.qkv.out_features != 3 * d or m.proj.in_features != d or d % m.num_heads or \
                fc1 is None or fc2 is None or fc1.in_features != 2 or fc1.bias is None or \
                fc2.bias is None or fc2.out_features != m.num_heads or \
                type(act).__name__ != "ReLU" or type(norm).__name__ != "Identity" or \
                getattr(mlp.drop2, "p", 0.0) or tuple(m.logit_scale.shape) != (m.num_heads,):
            raise NoMapping("timm's V2-cr window attention other than QKV of D/heads per head "
                            "and a 2 -> hidden -> heads ReLU bias MLP with biases")
        return row("window_attention_cr", heads=int(m.num_heads), window=pair(window),
                   shift=pair(shift), size=_square_or_pair(h, w),
                   hidden=int(fc1.out_features), qkv_bias=m.qkv.bias is not None,
                   proj_bias=m.proj.bias is not None, bias_dropout=float(mlp.drop1.p),
                   roll_first=roll_first,
                   attention_dropout=float(m.attn_drop.p), dropout=float(m.proj_drop.p))


__all__ = ["WindowAttentionCr"]
