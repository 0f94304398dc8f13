"""Focal modulation (Yang et al. 2022, FocalNet), as timm's FocalModulation:
a 1x1 conv to a query (C), a context (C) and level+1 gates; the context
through `level` depthwise convs of growing kernels (window, window+factor,
...), each with a GELU, each level's output weighted by its gate (one per
position) and summed, plus a global context (the last level's mean, a GELU)
weighted by the last gate; the sum (divided by level+1 where normalized)
through a 1x1 conv (the modulator) times the query, a layer norm (post_norm),
a 1x1 projection. One row: the gates weigh every position of every level,
and the query multiplies the modulator, which a chain of rows cannot say."""
from __future__ import annotations

from .. import sym
from .base import Arg, Kind, register
from .composite import Composite, between, part


@register
class FocalModulation(Composite, Kind):
    name = "focal_modulation"
    torch_classes = ("FocalModulation",)  # in focal_modulation_torch.py
    aliases = ("focal_mod",)
    primary = "level"
    summary = ("FocalNet's focal modulation: gated depthwise contexts of growing kernels and "
               "a global one, a 1x1 modulator times the query, a 1x1 projection")
    flops_rule = ("the parts' FLOPs (the 1x1 convs, the depthwise convs, the GELUs, the norm) "
                  "+ (level+1)*C*H*W gate products and as many adds + C*H*W (the mean) + "
                  "C*H*W (query times modulator) + C*H*W where normalized")
    inputs = "chw"
    args = {
        "level": Arg("int", 2, min=1, doc="focal levels (depthwise convs)"),
        "window": Arg("int", 3, min=1, doc="the first level's kernel"),
        "factor": Arg("int", 2, min=0, doc="each next level's kernel grows by it"),
        "bias": Arg("bool", True, doc="the 1x1 convs f's and h's bias"),
        "post_norm": Arg("bool", False, doc="a layer norm over the channels before proj"),
        "normalize": Arg("bool", False, doc="the context divided by level + 1"),
        "eps": Arg("float", 1e-5, min=0.0, doc="the post norm's eps"),
        "p": Arg("float", 0.0, min=0.0, max=1.0, doc="the projection's dropout"),
    }
    arg_examples = {"level": [1, 2, 3], "window": [1, 3], "factor": [0, 2]}

    def kernels(self, a):
        return [a.factor * k + a.window for k in range(a.level)]

    def parts(self, a, x):
        c = x[0]
        f = part("conv", x, out=sym.norm(2 * c + a.level + 1), kernel=(1, 1), padding=(0, 0),
                 bias=a.bias)
        parts = [f]
        for k in self.kernels(a):
            conv = part("conv", x, out=c, kernel=(k, k), padding=(k // 2, k // 2), groups=c,
                        bias=False)
            parts += [conv, part("gelu", conv.y)]
        parts.append(part("gelu", (c, 1, 1)))
        parts.append(part("conv", x, out=c, kernel=(1, 1), padding=(0, 0), bias=a.bias))
        if a.post_norm:
            parts.append(part("layer_norm", x, eps=a.eps))
        return parts + [part("conv", x, out=c, kernel=(1, 1), padding=(0, 0)),
                        part("dropout", x, p=a.p)]

    def output_shape(self, a, x):
        shapes = {p.y for p in self.parts(a, x)[1:2 * a.level + 1]}
        if len(shapes) != 1 or shapes != {tuple(x)}:
            from ..errors import SpecError
            raise SpecError(f"focal_modulation: even kernels {self.kernels(a)} change the map's "
                            "size (timm pads k // 2)")
        return tuple(x)

    def between(self, a, x):
        n, levels = sym.prod(x), a.level + 1
        return between(("mul", levels * n), ("add", levels * n), ("global_avgpool", n),
                       ("mul", n), *((("mul", n),) if a.normalize else ()))

    def kept_between(self, a, x):
        # each gate product keeps its level's output (kept by its GELU) and a
        # gate (one per position); the query product keeps q and the modulator
        n = sym.prod(x)
        return ((sym.norm((a.level + 1) * x[1] * x[2]), None), (n, None), (n, None))

    def window(self, a, x):
        k = sum(k - 1 for k in self.kernels(a)) + 1
        return (k, k), (1, 1)

    def build(self, a, x):
        from .focal_modulation_torch import FocalModulation as Module
        return Module(x[0], a.window, a.level, a.factor, a.bias, a.post_norm, a.normalize,
                      a.p, a.eps)

    torch_modules = ("archcalc.layers.focal_modulation_torch.FocalModulation",
                     "timm.models.focalnet.FocalModulation")

    def from_torch(self, call, m):
        """archcalc's and timm's (f, focal_layers.i.0, h, norm, proj)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "FocalModulation")
        norm = type(m.norm).__name__
        if norm not in ("Identity", "LayerNorm2d") or (
                norm == "LayerNorm2d" and (not m.norm.elementwise_affine or m.norm.bias is None)):
            raise NoMapping(f"a FocalModulation with a {norm}")
        args = dict(level=m.focal_level, window=m.focal_window, factor=m.focal_factor,
                    bias=m.f.bias is not None, post_norm=norm == "LayerNorm2d",
                    normalize=bool(m.normalize_modulator), p=float(m.proj_drop.p))
        if norm == "LayerNorm2d":
            args["eps"] = float(m.norm.eps)
        if (m.h.bias is not None) != args["bias"] or m.proj.bias is None or \
                type(m.act).__name__ != "GELU" or m.act.approximate != "none":
            raise NoMapping("a FocalModulation whose f and h differ in bias, or another act")
        for i, layer in enumerate(m.focal_layers):
            conv, act = layer[0], layer[1]
            k = m.focal_factor * i + m.focal_window
            if (conv.kernel_size, conv.padding, conv.groups, conv.stride, conv.bias,
                    type(act).__name__) != ((k, k), (k // 2, k // 2), call.x[0], (1, 1), None,
                                            "GELU") or act.approximate != "none":
                raise NoMapping(f"a FocalModulation whose level {i} is not a {k}x{k} "
                                "depthwise conv and a GELU")
        return row("focal_modulation", **args)
