"""PyTorch modules of the kinds in ``conv.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PartialConv2d(nn.Module):
    """Output map i is a conv over the input maps ``connections[i]`` only.

    One weight tensor per output map holds exactly its links, so
    ``sum(p.numel())`` is the partial count (LeNet-5's C3: 1,516), not the
    full one a masked dense weight would report.
    """

    def __init__(self, connections, kernel, stride=(1, 1), padding=(0, 0), bias=True):
        super().__init__()
        self.init_args = ([list(c) for c in connections], kernel, stride, padding, bias)
        self.connections = [list(c) for c in connections]
        self.stride, self.padding = stride, padding
        for i, maps in enumerate(self.connections):
            self.register_buffer(f"index{i}", torch.tensor(maps), persistent=False)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(1, len(maps), *kernel)) for maps in self.connections)
        self.bias = nn.Parameter(torch.empty(len(self.connections))) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        for w in self.weights:
            nn.init.kaiming_uniform_(w, a=5 ** 0.5)
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        if self.bias is not None:
            bound = 1 / fan_in ** 0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        maps = [F.conv2d(x.index_select(1, getattr(self, f"index{i}")), w,
                         stride=self.stride, padding=self.padding)
                for i, w in enumerate(self.weights)]
        out = torch.cat(maps, 1)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self):
        return f"connections={self.connections}"


class LocallyConnected2d(nn.Module):
    """A conv whose weights differ at every output position (no sharing)."""

    def __init__(self, in_channels, out_channels, out_size, kernel, stride=(1, 1),
                 padding=(0, 0), bias=True):
        super().__init__()
        self.init_args = (in_channels, out_channels, out_size, kernel, stride, padding, bias)
        self.kernel, self.stride, self.padding, self.out_size = kernel, stride, padding, out_size
        positions = out_size[0] * out_size[1]
        fan_in = in_channels * kernel[0] * kernel[1]
        self.weight = nn.Parameter(torch.empty(positions, fan_in, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels, *out_size)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x):
        cols = F.unfold(x, self.kernel, stride=self.stride, padding=self.padding)  # N, fan_in, L
        out = torch.einsum("nfl,lfo->nol", cols, self.weight)
        out = out.reshape(x.shape[0], -1, *self.out_size)
        return out if self.bias is None else out + self.bias


# -- functional calls -------------------------------------------------------------
#
# F.conv2d(x, self.weight, self.bias, ...) in a module's own forward (timm's
# Conv2dSame pads, then calls it): a conv row named by the module whose weight
# it reads. The importer hands the call's parameters (call.parameter).


def _conv2d_call(call):
    from .from_torch import NoMapping, given, pair, padding, require_chw, require_learned, row
    require_chw(call, "conv2d")
    weight = call.parameter(call.arg("conv2d", 1, "weight"))
    if weight is None or weight.dim() != 4:
        raise NoMapping("conv2d with a weight computed in the forward (not a parameter)")
    require_learned(call, "conv2d", call.arg("conv2d", 1, "weight"),
                    call.arg("conv2d", 2, "bias", None))
    groups = int(call.arg("conv2d", 6, "groups", 1))
    args = dict(out=int(weight.shape[0]), kernel=pair(tuple(weight.shape[2:])),
                stride=pair(call.arg("conv2d", 3, "stride", 1)),
                padding=padding(call.arg("conv2d", 4, "padding", 0)),
                dilation=pair(call.arg("conv2d", 5, "dilation", 1)),
                bias=given(call.arg("conv2d", 2, "bias", None)))
    if groups > 1 and groups == call.x[0]:
        args["depthwise"] = True
    else:
        args["groups"] = groups
    return row("conv", **args)


def _functions():
    from .from_torch import reads_state
    conv2d = reads_state(_conv2d_call)
    return {F.conv2d: conv2d, torch.conv2d: conv2d, torch.ops.aten.conv2d.default: conv2d}


FUNCTIONS = _functions()   # the importer's functional mappers of these kinds (mappers.py)
