"""Kinds of single-shot detectors (SSD, Liu et al. 2016; torchvision's
ssd300_vgg16): the L2 normalisation of a feature map with a learned scale per
channel, and the rows of per-anchor predictions a head's conv is read as.

l2norm (ParseNet, Liu et al. 2015; SSD section 3.1 on conv4_3): each
position's C-vector divided by its L2 norm, then multiplied by a learned
scale per channel (initialised to ``scale``, 20 in SSD). C params. FLOPs:
4 per element (square, sum, divide, scale) + 2 per position (square root and
the clamp at eps). Autograd keeps the input, the norm and the clamped norm
(H x W each) and the normalised map (for the scale's gradient).

per_anchor: a head's conv output (A*K) x H x W, K values for each of A
anchors at each position, read as (H*W*A) x K rows, torchvision's
``view(N, A, K, H, W).permute(0, 3, 4, 1, 2).reshape(N, -1, K)``: one row
per default box. The permute makes the reshape a copy (allocated, no
arithmetic, nothing kept for backward).
"""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, fmt_shape, register


@register
class L2Norm(Kind):
    name = "l2norm"
    torch_classes = ('L2Norm',)  # in boxes_torch.py
    aliases = ("l2_norm", "l2_normalize")
    primary = "scale"
    inputs = "chw"
    summary = "x / ||x||_2 over channels at each position, times a learned scale per channel"
    flops_rule = "4 per element (square, sum, divide, scale) + 2 per position (sqrt, clamp)"
    args = {"scale": Arg("float", 20.0, min=0.0, doc="initial scale (20 in SSD)"),
            "eps": Arg("float", 1e-12, min=0.0)}

    def params(self, a, x):
        return x[0]

    def params_formula(self, a, x):
        return f"{sym.plain(x[0])} (a scale per channel)"

    def flops(self, a, x, y):
        return sym.norm(4 * sym.prod(x) + 2 * x[1] * x[2])

    def saved(self, a, x, y):
        return Saved(input=True, extra=((sym.norm(2 * x[1] * x[2]), None), (sym.prod(x), None)))

    def cost(self, a, x, y):
        """A normalisation over the channels at each position: rated as layer
        norm on the input's elements, with its scale vector stepped."""
        return (Cost("layer_norm", elements=sym.prod(x), tensors=(x[0],)),)

    def build(self, a, x):
        from .boxes_torch import L2Norm as Module
        return Module(int(x[0]), a.scale, a.eps)

    torch_modules = ("archcalc.layers.boxes_torch.L2Norm",)   # from_torch reads them

    def from_torch(self, call, m):
        """The module's initial scale (a trained weight differs: the spec
        describes the layer, the checkpoint its values) and eps."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "L2Norm")
        if m.channels != call.x[0]:
            raise NoMapping(f"L2Norm of {m.channels} channels on a {call.x[0]}-channel map")
        return row("l2norm", scale=float(m.scale), eps=float(m.eps))


@register
class PerAnchor(Kind):
    name = "per_anchor"
    torch_classes = ('PerAnchor',)  # in boxes_torch.py
    aliases = ("anchor_rows",)
    primary = "values"
    inputs = "chw"
    summary = "(A*K) x H x W -> (H*W*A) x K: one row of K values per anchor box (a copy)"
    flops_rule = "0 (a permuted copy)"
    args = {"values": Arg("int", min=1, doc="K, values per anchor (4 offsets, or the classes)")}

    def anchors(self, a, x):
        c = x[0]
        if isinstance(c, int) and isinstance(a.values, int) and c % a.values:
            raise SpecError(f"per_anchor: {c} channels are not a multiple of {a.values} "
                            f"values per anchor (input {fmt_shape(x)})")
        return sym.exact_div(c, a.values)

    def output_shape(self, a, x):
        return (sym.norm(x[1] * x[2] * self.anchors(a, x)), a.values)

    def size_arithmetic(self, a, x):
        n = self.anchors(a, x)
        return [f"H*W*A = {sym.plain(x[1])}*{sym.plain(x[2])}*{sym.plain(n)} = "
                f"{sym.fmt_int(sym.norm(x[1] * x[2] * n))} boxes of {sym.plain(a.values)} values "
                f"(A = {sym.plain(x[0])}/{sym.plain(a.values)})"]

    def cost(self, a, x, y):
        """permute + reshape: a contiguous copy of the input."""
        return (Cost("copy", elements=sym.prod(x)),)

    def build(self, a, x):
        from .boxes_torch import PerAnchor as Module
        return Module(int(a.values))

    torch_modules = ("archcalc.layers.boxes_torch.PerAnchor",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import require_chw, row
        require_chw(call, "PerAnchor")
        return row("per_anchor", values=int(m.values))
