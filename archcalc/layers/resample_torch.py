"""The importer's functional hook of the kind in ``resample.py``:
F.interpolate as an upsample row. The kind builds torch.nn's Upsample; this
module holds no nn.Module."""
from __future__ import annotations

from torch.nn import functional as F


def _interpolate_call(call):
    from .from_torch import NoMapping
    from .resample import upsample_row
    name = "interpolate"
    if call.arg(name, 5, "recompute_scale_factor", None) or call.arg(name, 6, "antialias", False):
        raise NoMapping("interpolate with recompute_scale_factor or antialias")
    return upsample_row(call, call.arg(name, 1, "size", None),
                        call.arg(name, 2, "scale_factor", None),
                        call.arg(name, 3, "mode", "nearest"),
                        call.arg(name, 4, "align_corners", None))


FUNCTIONS = {F.interpolate: _interpolate_call}   # the importer's mappers (mappers.py)
