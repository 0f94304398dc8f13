"""Center crop: U-Net's "copy and crop" (Ronneberger et al. 2015). Unpadded
3x3 convolutions shrink every map by 2 pixels, so a skip from the contracting
path is larger than the upsampled map it joins; its border is cut off before
the concat. The amount per level is fixed by the architecture, not by the
input size (64 -> 56 at the deepest skip of the 572 x 572 net: 4 per side,
and 4 per side at every input the net takes), so the kind takes the border.

A view (a slice of the input): no parameters, no arithmetic, nothing
allocated and nothing kept for backward."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, fmt_shape, register


@register
class Crop(Kind):
    name = "crop"
    torch_classes = ("CenterCrop",)  # in crop_torch.py
    aliases = ("center_crop",)
    primary = "border"
    summary = ("center crop: `border` rows and columns cut off each side "
               "(U-Net's copy and crop); a view")
    flops_rule = "0 (a view)"
    inputs = "chw"
    view = True
    args = {"border": Arg("pair", min=0, doc="cut off each side: b, or [rows, columns]")}

    def output_shape(self, a, x):
        c, h, w = x
        out = (c, sym.norm(h - 2 * a.border[0]), sym.norm(w - 2 * a.border[1]))
        if any(isinstance(d, int) and d < 1 for d in out[1:]):
            raise SpecError(f"crop: border {_border(a)} leaves nothing of a {fmt_shape(x)} "
                            f"input (H - 2*border = {sym.plain(out[1])}, "
                            f"W - 2*border = {sym.plain(out[2])}). "
                            f"Received: border={_border(a)}")
        return out

    def cost(self, a, x, y):
        """A view: the call only."""
        return (Cost("view", backward=False),)

    def size_arithmetic(self, a, x):
        (_, h, w), (bh, bw) = x, a.border
        lines = [f"H - 2*border = {sym.plain(h)} - 2*{sym.plain(bh)} = {sym.plain(h - 2 * bh)}",
                 f"W - 2*border = {sym.plain(w)} - 2*{sym.plain(bw)} = {sym.plain(w - 2 * bw)}"]
        return lines[:1] if sym.norm(h - w) == 0 and bh == bw else lines

    def build(self, a, x):
        from .crop_torch import CenterCrop
        return CenterCrop(a.border)

    torch_modules = ("archcalc.layers.crop_torch.CenterCrop",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import pair, require_chw, row
        require_chw(call, "CenterCrop")
        return row("crop", border=pair(m.border))


def _border(a) -> str:
    bh, bw = a.border
    return sym.plain(bh) if bh == bw else f"[{sym.plain(bh)}, {sym.plain(bw)}]"
