"""PyTorch modules of the kinds in ``crossvit.py`` that torch.nn lacks, and
the importer's hook for timm's ``scale_image``.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name). CrossAttention
has timm's submodule names, so timm's state_dict loads strictly."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class CrossAttention(nn.Module):
    """CrossViT's cross attention (timm.models.crossvit.CrossAttention): q
    from the first token, k and v from all, the fused softmax(q k^T /
    sqrt(D/h)) v, proj: (B, N, D) -> (B, 1, D)."""

    def __init__(self, width, heads, bias=False, dropout=0.0, proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, bias, dropout, proj_dropout)
        self.num_heads = heads
        self.scale = (width // heads) ** -0.5
        self.wq = nn.Linear(width, width, bias=bias)
        self.wk = nn.Linear(width, width, bias=bias)
        self.wv = nn.Linear(width, width, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_dropout)

    def extra_repr(self):
        return f"num_heads={self.num_heads}"

    def forward(self, x):
        b, n, c = x.shape
        h = self.num_heads
        q = self.wq(x[:, 0:1]).reshape(b, 1, h, c // h).transpose(1, 2)
        k = self.wk(x).reshape(b, n, h, c // h).transpose(1, 2)
        v = self.wv(x).reshape(b, n, h, c // h).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p
                                           if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, 1, c)))


class Resize(nn.Module):
    """The map resized to a fixed size by interpolation, up or down:
    F.interpolate(x, size, mode) (CrossViT's scale_image, bicubic)."""

    def __init__(self, size, mode="bicubic", align_corners=False):
        super().__init__()
        self.init_args = (tuple(size), mode, align_corners)
        self.size = tuple(size)
        self.mode = mode
        self.align_corners = align_corners

    def extra_repr(self):
        return f"size={self.size}, mode={self.mode!r}, align_corners={self.align_corners}"

    def forward(self, x):
        corners = None if self.mode == "nearest" else self.align_corners
        return F.interpolate(x, size=self.size, mode=self.mode, align_corners=corners)


def _scale_image_call(call):
    """timm's scale_image(x, ss, crop_scale): x itself at that size already,
    a centre crop where it crops (an even border: timm rounds half of an odd
    one), else a bicubic resize."""
    from .crossvit import resize_row
    from .from_torch import NoMapping, pair, require_chw, row
    require_chw(call, "scale_image")
    sh, sw = (int(v) for v in call.arg("scale_image", 1, "ss"))
    crop = call.arg("scale_image", 2, "crop_scale", False)
    h, w = call.x[1:]
    if (h, w) == (sh, sw):
        return []
    if crop and sh <= h and sw <= w:
        if (h - sh) % 2 or (w - sw) % 2:
            raise NoMapping(f"scale_image's crop of {h}x{w} to {sh}x{sw} (an odd border, "
                            "rounded: not a centre crop)")
        return row("crop", border=pair(((h - sh) // 2, (w - sw) // 2)))
    return resize_row(call, (sh, sw), "bicubic", False)


def __getattr__(name):
    """FUNCTIONS (the importer's mappers, mappers.py) names timm's scale_image:
    looked up only when the importer asks, so building never imports timm."""
    if name != "FUNCTIONS":
        raise AttributeError(name)
    try:
        from timm.models.crossvit import scale_image
    except ImportError:
        return {}
    return {scale_image: _scale_image_call}
