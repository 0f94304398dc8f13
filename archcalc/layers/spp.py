"""Spatial pyramid pooling (He et al. 2014, SPP-net; the PReLU-nets of He et
al. 2015 pool their last map with levels {7, 3, 2, 1}, 63 bins): each level
pools the C x H x W map to n x n bins, and the bins of every level are
flattened and concatenated into C * sum(n^2) features, whatever H and W.

Bins follow PyTorch's adaptive pooling windows, [floor(i*N/n), ceil((i+1)*N/n)),
which may overlap and always cover the map (SPP-net's own windows, size
ceil(N/n) at stride floor(N/n), can leave the last rows out: 14 with n = 3
gives windows of size 5 at 0, 4 and 8: rows 0 to 12, never the last one).

No parameters and no MACs. FLOPs per level as the adaptive pool of that
mode. What autograd keeps: the input (once) and, for max, int64 indices of
every bin; an average level to 1 x 1 is a mean and keeps nothing of its own."""
from __future__ import annotations

import math

from .. import limits, sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .linear import global_window

INT64 = 8


class Levels(Arg):
    def read(self, kind, name, value, env):
        received = f"Received: {name}={value!r}"
        if not isinstance(value, list) or not value:
            raise SpecError(f"{kind}: {name} takes a non-empty list of bin counts per side, "
                            f"such as [7, 3, 2, 1]. {received}")
        return tuple(Arg("int", min=1, numeric=True)._int(kind, name, v, env) for v in value)


@register
class SpatialPyramidPool(Kind):
    name = "spp"
    arg_examples = {"levels": ([1], [2, 1], [3, 2, 1])}
    torch_classes = ('SpatialPyramidPool',)  # in spp_torch.py
    aliases = ("spatial_pyramid_pool", "spatial_pyramid_pooling")
    primary = "levels"
    inputs = "chw"
    summary = ("spatial pyramid pooling: pool to n x n bins for each level n, flatten and "
               "concatenate: C x H x W -> C * sum(n^2) features")
    flops_rule = ("per level as the adaptive pool: max: window size - 1 comparisons per bin; "
                  "avg: one per input element in each bin's window")
    args = {
        "levels": Levels("table", doc="bins per side at each level, e.g. [7, 3, 2, 1]"),
        "mode": Arg("str", "max", choices=("max", "avg")),
    }

    def output_shape(self, a, x):
        features = sym.norm(x[0] * sum(n * n for n in a.levels))
        if isinstance(features, int):
            limits.check_value(features, "spp: C * sum(n^2) features")
        return (features,)

    def _covered(self, x, n):
        """Input elements summed over the n x n bins' windows (they may overlap).
        Along an axis of N the n windows [floor(i*N/n), ceil((i+1)*N/n)) cover
        N + n - gcd(N, n) positions in all: no loop over the bins."""
        if not all(isinstance(v, int) for v in x[1:]):
            return sym.prod(x)
        rows, cols = (m + n - math.gcd(m, n) for m in x[1:])
        return x[0] * rows * cols

    def flops(self, a, x, y):
        total = 0
        for n in a.levels:
            covered = self._covered(x, n)
            total += covered - x[0] * n * n if a.mode == "max" else covered
        return sym.norm(total)

    def window(self, a, x):
        return global_window(x)

    def cost(self, a, x, y):
        """Per level an adaptive pool (to 1 x 1 an average is a mean: the
        global pool; otherwise the calibrated pool nearest its windows), then
        the flattened levels concatenated."""
        from .pool import adaptive_window_stats, pool_cost
        family = "maxpool" if a.mode == "max" else "avgpool"
        out = []
        for n in a.levels:
            if n == 1 and a.mode == "avg":
                out.append(Cost("global_avgpool", elements=sym.prod(x)))
                continue
            kernel = tuple(adaptive_window_stats(m, n)[1] if isinstance(m, int)
                           else 1 for m in x[1:])
            stride = tuple(max(1, m // n) if isinstance(m, int) else 1 for m in x[1:])
            out.append(pool_cost(family, None, x, (x[0], n, n), kernel, stride))
        out.append(Cost("cat", elements=sym.prod(y)))
        return tuple(out)

    def saved(self, a, x, y):
        if a.mode == "max":
            return Saved(input=True, extra=((sym.prod(y), INT64),))
        if all(n == 1 for n in a.levels):
            return Saved()
        return Saved(input=True)

    def size_arithmetic(self, a, x):
        bins = " + ".join(f"{n}*{n}" for n in a.levels)
        total = sum(n * n for n in a.levels)
        return [f"C * ({bins}) = {sym.plain(x[0])} * {total} = "
                f"{sym.fmt_int(sym.norm(x[0] * total))} features"]

    def findings(self, a, x):
        small = [n for n in a.levels if any(isinstance(m, int) and m < n for m in x[1:])]
        if small:
            return [f"levels {small} have more bins per side than the map has rows or columns "
                    f"({sym.plain(x[1])} x {sym.plain(x[2])}): their bins repeat input values"]
        return []

    def build(self, a, x):
        from .spp_torch import SpatialPyramidPool as Module
        return Module(a.levels, a.mode)

    torch_modules = ("archcalc.layers.spp_torch.SpatialPyramidPool",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import require_chw, row
        require_chw(call, "SpatialPyramidPool")
        return row("spp", levels=list(m.levels), mode=m.mode)
