"""The importer's functional hooks of the kinds in ``linear.py``: F.linear(x,
self.weight, self.bias) in a module's own forward as an fc row named by that
module. The kinds build torch.nn's own modules; this module holds no nn.Module."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def _linear_call(call):
    from .from_torch import NoMapping, given, require_learned, row
    if len(call.x) == 3:
        raise NoMapping("linear on a C x H x W map (it acts on the last dimension)")
    weight = call.parameter(call.arg("linear", 1, "weight"))
    if weight is None or weight.dim() != 2:
        raise NoMapping("linear with a weight computed in the forward (not a parameter)")
    require_learned(call, "linear", call.arg("linear", 1, "weight"),
                    call.arg("linear", 2, "bias", None))
    return row("fc", out=int(weight.shape[0]), bias=given(call.arg("linear", 2, "bias", None)))


def _functions():
    from .from_torch import reads_state
    linear = reads_state(_linear_call)
    return {F.linear: linear, torch.ops.aten.linear.default: linear}


FUNCTIONS = _functions()   # the importer's functional mappers of these kinds (mappers.py)
