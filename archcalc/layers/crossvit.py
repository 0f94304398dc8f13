"""CrossViT's kinds (Chen et al. 2021, "CrossViT: Cross-Attention Multi-Scale
Vision Transformer for Image Classification"), as timm's crossvit.py. Two
branches of tokens (small and large patches) exchange information through
their class tokens: each branch's class token, projected to the other
branch's width, attends to that branch's patch tokens.

- ``cross_attention``: timm's CrossAttention on N x D tokens -> 1 x D: the
  first token's query (wq on one token) attending to every token's keys and
  values (wk, wv on all N), then proj. The arithmetic of CaiT's class
  attention (``class_attention``), with CrossViT's weight names. MACs = D^2
  (wq) + 2*N*D^2 (wk, wv) + 2*N*D (one query's scores, weighted values) +
  D^2 (proj). A class_attention without its options (VOLO's fused kv).
- ``resize``: the image (any map) resized to a fixed [h, w] by interpolation,
  up or down (F.interpolate(x, size=...)): timm's ``scale_image``, which
  feeds the second branch its smaller image (240 -> 224, bicubic). No MACs
  (FlopCounterMode counts none for interpolation).

The rest of CrossViT is rows of other kinds: the patch embeddings, class
tokens and position embeddings, ViT blocks, the class token sliced off
(``first_tokens``) and the patch tokens (``skip_tokens``), concatenated
along the tokens (a ``concat`` merge), and the two heads' logits averaged
(an ``add`` merge and a ``multiply`` by 1/2)."""
from __future__ import annotations

from types import SimpleNamespace

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, register
from .cait import ClassAttention, _args, _linear, _scaled
from .conv import upsampled_receptive_field


@register
class CrossAttention(ClassAttention):
    """Class attention's arithmetic (the first token queries every token) under
    CrossViT's names: wq, wk, wv, proj."""
    name = "cross_attention"
    torch_classes = ("CrossAttention",)  # in crossvit_torch.py
    aliases = ()
    summary = ("CrossViT's cross attention on N x D tokens -> 1 x D: the first token (the "
               "other branch's class token) queries every token's keys and values")
    args = _args("the wq, wk and wv Linears' biases")

    def cost(self, a, x, y):
        return super().cost(SimpleNamespace(**vars(a), kv=False), x, y)

    def build(self, a, x):
        from .crossvit_torch import CrossAttention as Module
        return Module(x[1], a.heads, a.bias, a.dropout, a.proj_dropout)

    torch_modules = ("archcalc.layers.crossvit_torch.CrossAttention",
                     "timm.models.crossvit.CrossAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's CrossAttention (wq, wk, wv, proj Linears)."""
        from .from_torch import row
        found = self.common(call, m, "CrossAttention")
        d = call.x[1]
        bias = m.wq.bias is not None
        for what in ("wq", "wk", "wv"):
            _linear(getattr(m, what), d, d, bias, f"CrossAttention's {what}")
        _scaled(m, d // found["heads"], "CrossAttention")
        return row("cross_attention", **found, **({"bias": True} if bias else {}))


# per output element: the weighted neighbours it reads, and the FLOPs of
# weighting and summing them (n multiplies + n - 1 additions)
TAPS = {"nearest": 1, "bilinear": 2, "bicubic": 4}
PER_OUTPUT = {"nearest": 0, "bilinear": 7, "bicubic": 31}
COPY_SCALE = {"nearest": 1.0, "bilinear": 3.0, "bicubic": 12.0}   # bicubic: 4x bilinear's reads


@register
class Resize(Kind):
    name = "resize"
    torch_classes = ("Resize",)  # in crossvit_torch.py
    primary = "size"
    summary = ("the map resized to [h, w] by interpolation (bicubic, bilinear, nearest), up "
               "or down: F.interpolate(x, size=...), CrossViT's scale_image")
    flops_rule = ("per output element: nearest 0, bilinear 7 (4 neighbours), bicubic 31 "
                  "(16 neighbours: 16 multiplies + 15 additions)")
    inputs = "chw"
    args = {
        "size": Arg("pair", min=1, doc="the output's [height, width] (one number: square)"),
        "mode": Arg("str", "bicubic", choices=("bicubic", "bilinear", "nearest"),
                    doc="the interpolation, as F.interpolate's mode"),
        "align_corners": Arg("bool", False, doc="bilinear, bicubic: the corner pixels' "
                             "centres aligned (F.interpolate's align_corners)"),
    }
    arg_examples = {"size": (1, 3, [2, 5], [7, 4])}

    def output_shape(self, a, x):
        if a.mode == "nearest" and a.align_corners:
            raise SpecError("resize: align_corners applies to bilinear and bicubic only. "
                            "Received: mode='nearest', align_corners=true")
        return (x[0], *a.size)

    def flops(self, a, x, y):
        return sym.norm(sym.prod(y) * PER_OUTPUT[a.mode])

    def cost(self, a, x, y):
        """A gather into the output, weighted: a copy's time on the output,
        scaled by the neighbours each output element reads."""
        return (Cost("copy", elements=sym.prod(y), scale=COPY_SCALE[a.mode]),)

    def receptive_field(self, a, x, rf, jump):
        """Each output reads TAPS neighbours per axis (not widened on the way
        down: no antialias); its jump grows by the whole factor on the way
        down (n // m) and shrinks by it on the way up."""
        taps = TAPS[a.mode]
        out_rf, out_jump = [], []
        for r, j, n, m in zip(rf, jump, x[1:], a.size):
            if isinstance(n, int) and isinstance(m, int) and m < n:
                out_rf.append(sym.norm(r + (taps - 1) * j))
                out_jump.append(sym.norm(j * (n // m)))
                continue
            scale = max(1, m // n) if isinstance(n, int) and isinstance(m, int) else 1
            (r2,), (j2,) = upsampled_receptive_field((r,), (j,), (taps * scale,), (scale,))
            out_rf.append(r2)
            out_jump.append(j2)
        return tuple(out_rf), tuple(out_jump)

    def size_arithmetic(self, a, x):
        return [f"resized to {sym.plain(a.size[0])} x {sym.plain(a.size[1])} ({a.mode})"]

    def build(self, a, x):
        from .crossvit_torch import Resize as Module
        return Module(a.size, a.mode, a.align_corners)

    torch_modules = ("archcalc.layers.crossvit_torch.Resize",)

    def from_torch(self, call, m):
        """archcalc's Resize: its size, mode and align_corners."""
        return resize_row(call, m.size, m.mode, m.align_corners)


def resize_row(call, size, mode, align_corners):
    """F.interpolate to a size as a resize row; other modes have no row."""
    from .from_torch import NoMapping, pair, require_chw, row
    require_chw(call, "resize")
    if mode not in TAPS:
        raise NoMapping(f"resize in mode {mode!r}")
    args = {"size": pair(size)}
    if mode != "bicubic":
        args["mode"] = mode
    if align_corners and mode != "nearest":
        args["align_corners"] = True
    return row("resize", **args)
