"""Space to depth (TResNet's stem, Ridnik et al. 2021), as timm's SpaceToDepth:
each block x block patch of the map moved into the channels, C x H x W ->
C*block^2 x H/block x W/block, in timm's order (the patch's row, its column,
then the channel). A view, a permute and the copy that makes it contiguous:
no parameters, no arithmetic, nothing kept for backward."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, register


@register
class SpaceToDepth(Kind):
    name = "space_to_depth"
    torch_classes = ("SpaceToDepth",)  # in space_to_depth_torch.py
    aliases = ("s2d",)
    primary = "block_size"
    summary = "space to depth: block x block patches into channels (TResNet's stem)"
    flops_rule = "0 (a copy)"
    inputs = "chw"
    args = {"block_size": Arg("int", 4, min=1, numeric=True, doc="the patch's side")}

    def output_shape(self, a, x):
        c, h, w = x
        for side, n in (("height", h), ("width", w)):
            if isinstance(n, int) and n % a.block_size:
                raise SpecError(f"space_to_depth: block_size={a.block_size} must divide the "
                                f"{side}. Received: {side}={n}")
        return (sym.norm(c * a.block_size * a.block_size), sym.floordiv(h, a.block_size),
                sym.floordiv(w, a.block_size))

    def window(self, a, x):
        return (a.block_size, a.block_size), (a.block_size, a.block_size)

    def cost(self, a, x, y):
        """A view, a permute and the copy that makes it contiguous."""
        return (Cost("copy", elements=sym.prod(y)),)

    def build(self, a, x):
        from .space_to_depth_torch import SpaceToDepth as Module
        return Module(a.block_size)

    torch_modules = ("archcalc.layers.space_to_depth_torch.SpaceToDepth",
                     "timm.layers.space_to_depth.SpaceToDepth")

    def from_torch(self, call, m):
        from .from_torch import require_chw, row
        require_chw(call, "SpaceToDepth")
        return row("space_to_depth", block_size=int(m.bs))
