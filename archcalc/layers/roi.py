"""Region-of-interest pooling (Girshick 2015, Fast R-CNN) and RoI align (He et
al. 2017, Mask R-CNN): R regions of the C x H x W feature map, each pooled to
a fixed oh x ow grid of bins, so that fully connected layers can read them.

Shape: C x H x W -> R x (C*oh*ow): one row per region, its pooled map
flattened (as Fast R-CNN's fc6 reads it); an fc after it acts on each region
(R tokens), so the whole second stage's cost is a formula in R, a spec
variable (``--set R=300`` makes it a number).

``stride``: the feature map's stride in input pixels (16 after VGG-16's
conv5_3): torchvision's spatial_scale = 1/stride maps image boxes onto the map.

No parameters and no MACs. FLOPs rules (region sizes are not known before the
proposals exist, so the rules count per output bin):
- roi_pool: one comparison per output element, R*C*oh*ow: a lower bound (a
  bin of a region covering m x m map cells takes m*m - 1 comparisons);
- roi_align: sampling^2 bilinear samples per bin, each 4 weighted terms
  (4 multiplies + 3 adds = 7 FLOPs) plus one add into the bin's average:
  8 * sampling^2 FLOPs per output element, R*C*oh*ow*8*sampling^2 in all.

What autograd keeps (torchvision's autograd functions): the regions (R x 5:
batch index and box) and, for roi_pool, the int32 argmax of every output
element; never the feature map.

Builder: torchvision.ops.roi_pool / roi_align over regions that `build`,
`check` and `bench` generate deterministically (R boxes at low-discrepancy
centres, 10% to 50% of the image per side, the same for every image): no
region proposal network has to be trained for the figures to be measured.
"""
from __future__ import annotations

from .. import limits, sym
from .base import Arg, Cost, Kind, Saved, register
from .linear import global_window

INT32 = 4


class _RoI(Kind):
    primary = "output"
    inputs = "chw"
    args = {
        "output": Arg("pair", min=1, numeric=True, doc="bins per region: 7 or [7, 7]"),
        "regions": Arg("int", "R", min=1, doc="R, regions per image (a variable)"),
        "stride": Arg("int", 16, min=1, numeric=True,
                      doc="the map's stride in input pixels (spatial_scale = 1/stride)"),
    }

    def output_shape(self, a, x):
        oh, ow = a.output
        features = sym.norm(x[0] * oh * ow)
        if isinstance(features, int):
            limits.check_value(features, f"{self.name}: C*oh*ow features")
        return (a.regions, features)

    def window(self, a, x):
        return global_window(x)   # a region may lie anywhere on the map

    def cost(self, a, x, y):
        """Not calibrated (region sizes are unknown before the proposals):
        rated as a 3x3 max pool over the R*C*oh*ow output elements, each bin
        reading a few cells, times the kind's scale (roi_align: its
        sampling^2 bilinear samples of 4 reads)."""
        return (Cost("maxpool3s2", elements=sym.prod(y), scale=self.cost_scale(a)),)

    def cost_scale(self, a) -> float:
        return 1.0

    # the mode of roi_torch.RoIPool that builds this kind (one module, two kinds)
    torch_mode = ""

    def from_torch(self, call, m):
        """archcalc's RoIPool back to the kind of its mode (both kinds share
        this hook: the importer finds one mapper per module class)."""
        from .from_torch import NoMapping, pair, require_chw, row
        require_chw(call, "RoIPool")
        if m.mode == RoIPool.torch_mode:
            return row("roi_pool", output=pair(m.output), regions=m.regions, stride=m.stride)
        if m.mode == RoIAlign.torch_mode:
            return row("roi_align", output=pair(m.output), regions=m.regions, stride=m.stride,
                       sampling=m.sampling, aligned=m.aligned)
        raise NoMapping(f"RoIPool with mode={m.mode!r}")

    def size_arithmetic(self, a, x):
        oh, ow = a.output
        return [f"R x (C*oh*ow) = {sym.plain(a.regions)} x ({sym.plain(x[0])}*{oh}*{ow}) = "
                f"{sym.fmt_int(a.regions)} x {sym.fmt_int(sym.norm(x[0] * oh * ow))}"]


@register
class RoIPool(_RoI):
    name = "roi_pool"
    torch_mode = "max"
    torch_modules = ("archcalc.layers.roi_torch.RoIPool",)   # from_torch reads them
    torch_classes = ('RoIPool',)  # in roi_torch.py
    aliases = ("roi_pooling", "roipool")
    summary = ("RoI max pooling (Fast R-CNN): R regions of a C x H x W map, each to oh x ow "
               "bins: R x (C*oh*ow)")
    flops_rule = "1 comparison per output element, R*C*oh*ow (a lower bound: bins cover m*m cells)"

    def flops(self, a, x, y):
        return sym.prod(y)

    def saved(self, a, x, y):
        return Saved(extra=((sym.prod(y), INT32), (sym.norm(a.regions * 5), None)))

    def build(self, a, x):
        from .roi_torch import RoIPool as Module
        return Module(a.output, int(a.regions), a.stride, self.torch_mode)


@register
class RoIAlign(_RoI):
    name = "roi_align"
    torch_mode = "align"
    torch_modules = ("archcalc.layers.roi_torch.RoIPool",)   # from_torch reads them
    torch_classes = ('RoIPool',)  # in roi_torch.py
    aliases = ("roialign",)
    summary = ("RoI align (Mask R-CNN): bilinear samples instead of rounded bins: "
               "R x (C*oh*ow)")
    flops_rule = ("8 * sampling^2 per output element: sampling^2 bilinear samples per bin "
                  "(4 multiplies + 3 adds each) and their average")
    args = {**_RoI.args,
            "sampling": Arg("int", 2, min=1, numeric=True,
                            doc="samples per bin side (torchvision's sampling_ratio)"),
            "aligned": Arg("bool", True, doc="half-pixel offset (torchvision's aligned)")}

    def flops(self, a, x, y):
        return sym.norm(sym.prod(y) * 8 * a.sampling * a.sampling)

    def saved(self, a, x, y):
        return Saved(extra=((sym.norm(a.regions * 5), None),))

    def cost_scale(self, a) -> float:
        return 4.0 * a.sampling * a.sampling / 9.0

    def build(self, a, x):
        from .roi_torch import RoIPool as Module
        return Module(a.output, int(a.regions), a.stride, self.torch_mode, a.sampling,
                      a.aligned)
