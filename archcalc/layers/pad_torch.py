"""The importer's functional hooks of the kind in ``pad.py``: F.pad (and the
aten ops torch.export's graph calls) as a pad row. The kind builds torch.nn's
own padding modules; this module holds no nn.Module."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def _pad_call(call):
    from .pad import pad_row
    return pad_row(call, call.arg("pad", 1, "pad"), call.arg("pad", 2, "mode", "constant"),
                   call.arg("pad", 3, "value", None))


def _constant_pad_call(call):
    from .pad import pad_row
    return pad_row(call, call.arg("constant_pad_nd", 1, "pad"), "constant",
                   call.arg("constant_pad_nd", 2, "value", 0.0))


FUNCTIONS = {F.pad: _pad_call, torch.ops.aten.pad.default: _pad_call,
             torch.constant_pad_nd: _constant_pad_call,
             torch.ops.aten.constant_pad_nd.default: _constant_pad_call}
