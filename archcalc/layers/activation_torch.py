"""PyTorch modules of the kinds in ``activation.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth(p, mode): identity at inference or at
    p = 0; in training, zero each sample ("row") or the whole batch ("batch")
    with probability p and scale the survivors by 1 / (1 - p)."""

    def __init__(self, p, mode="row"):
        super().__init__()
        self.init_args = (p, mode)
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"


class Maxout(nn.Module):
    def __init__(self, pieces):
        super().__init__()
        self.init_args = (pieces,)
        self.pieces = pieces

    def forward(self, x):
        n, c = x.shape[:2]
        return x.view(n, c // self.pieces, self.pieces, *x.shape[2:]).max(2).values


# -- functional calls -------------------------------------------------------------
#
# F.softmax / x.softmax(dim) and F.dropout map to the kinds their modules map to.


def _softmax_call(call):
    from .activation import Softmax
    return Softmax.over_dim(call, call.arg("softmax", 1, "dim", None))


def _dropout_call(call):
    from .from_torch import row
    return row("dropout", p=float(call.arg("dropout", 1, "p", 0.5)))


FUNCTIONS = {nn.functional.softmax: _softmax_call, torch.softmax: _softmax_call,
             nn.functional.dropout: _dropout_call, torch.dropout: _dropout_call}
METHODS = {"softmax": _softmax_call}   # the importer's mappers of these kinds (mappers.py)
