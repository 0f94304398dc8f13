"""Upsampling (nearest, bilinear): FCN/U-Net style decoders."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, register
from .conv import upsampled_receptive_field

BILINEAR_PER_OUTPUT = 7  # 4 weighted neighbours: 4 multiplies + 3 additions


@register
class Upsample(Kind):
    name = "upsample"
    primary = "scale"
    summary = "upsample by an integer scale or to a size [h, w]; mode nearest or bilinear"
    flops_rule = f"nearest: 0; bilinear: {BILINEAR_PER_OUTPUT} per output element"
    inputs = "chw"
    args = {
        "scale": Arg("pair", None, min=1),
        "size": Arg("pair", None, min=1),
        "mode": Arg("str", "nearest", choices=("nearest", "bilinear")),
        "align_corners": Arg("bool", False),
    }

    def _scale(self, a, x):
        if (a.scale is None) == (a.size is None):
            raise SpecError("upsample takes one of scale or size. "
                            f"Received: scale={a.scale}, size={a.size}")
        return a.scale

    def output_shape(self, a, x):
        scale = self._scale(a, x)
        if scale is not None:
            return (x[0], *(sym.norm(n * s) for n, s in zip(x[1:], scale)))
        return (x[0], *a.size)

    def flops(self, a, x, y):
        return sym.prod(y) * BILINEAR_PER_OUTPUT if a.mode == "bilinear" else 0

    def cost(self, a, x, y):
        """A gather into the output: a copy's time on the output, three for bilinear."""
        return (Cost("copy", elements=sym.prod(y), scale=3.0 if a.mode == "bilinear" else 1.0),)

    def receptive_field(self, a, x, rf, jump):
        scale = self._scale(a, x) or tuple(
            max(1, m // n) if isinstance(n, int) and isinstance(m, int) else 1
            for n, m in zip(x[1:], a.size))
        kernel = (2, 2) if a.mode == "bilinear" else (1, 1)
        return upsampled_receptive_field(rf, jump, tuple(k * s for k, s in zip(kernel, scale)),
                                         scale)

    def build(self, a, x):
        from torch import nn
        kw = {"align_corners": a.align_corners} if a.mode == "bilinear" else {}
        if a.scale is not None:
            return nn.Upsample(scale_factor=tuple(float(s) for s in a.scale), mode=a.mode, **kw)
        return nn.Upsample(size=tuple(a.size), mode=a.mode, **kw)

    torch_modules = ("torch.nn.Upsample",)   # from_torch reads them

    def from_torch(self, call, m):
        return upsample_row(call, m.size, m.scale_factor, m.mode, m.align_corners)


def upsample_row(call, size, scale, mode, align_corners):
    """nn.Upsample's or F.interpolate's arguments as an upsample row: nearest or
    bilinear, by an integer scale or to a size."""
    from .from_torch import NoMapping, pair, require_chw, row
    require_chw(call, "upsampling")
    if mode not in ("nearest", "bilinear"):
        raise NoMapping(f"upsampling mode {mode!r}")
    args = {"mode": mode}
    if mode == "bilinear":
        args["align_corners"] = bool(align_corners)
    if scale is not None:
        scales = scale if isinstance(scale, (list, tuple)) else (scale, scale)
        if any(float(v) != int(v) for v in scales):
            raise NoMapping(f"upsampling by {scale}")
        args["scale"] = pair([int(v) for v in scales])
    else:
        args["size"] = pair(size)
    return row("upsample", **args)
