"""PyTorch modules of the kinds in ``affine.py`` that torch.nn lacks, and the
importer's functional hook of torch.addcmul(self.beta, self.alpha, x).

Imported only by those kinds' ``build`` (and ``module_classes``) and by the
importer, so the analysis never imports torch. ``archcalc export --to python``
copies each class into the exported file with ``inspect.getsource``: a class
here uses only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class Affine(nn.Module):
    """x * alpha + beta per channel; on tokens alpha and beta have ResMLP's
    shape (1, 1, D), so timm's state_dict loads."""

    def __init__(self, width, rank=2):
        super().__init__()
        self.init_args = (width, rank)
        shape = {1: (1, width), 2: (1, 1, width)}.get(rank, (1, width, 1, 1))
        self.alpha = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        return torch.addcmul(self.beta, self.alpha, x)


class ScalarGain(nn.Module):
    """x times one learned scalar (NFNet's skipinit_gain: a 0-d parameter)."""

    def __init__(self, init=0.0):
        super().__init__()
        self.init_args = (init,)
        self.gain = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x):
        return self.gain * x

    @staticmethod
    def flat_forward(p, x):
        return f"{p} * {x}"

    def flat_init(self, shape, literal):
        return f"torch.full({shape}, {literal(float(self.init_args[0]))})"


class ScalarAffine(nn.Module):
    """x * scale + bias, one learned value each: timm's LearnableAffineBlock
    (the same parameter names and shapes, [1])."""

    def __init__(self, scale=1.0, bias=0.0):
        super().__init__()
        self.init_args = (scale, bias)
        self.scale = nn.Parameter(torch.tensor([float(scale)]))
        self.bias = nn.Parameter(torch.tensor([float(bias)]))

    def forward(self, x):
        return self.scale * x + self.bias


def check_affine(call, alpha, beta):
    """alpha and beta hold one value per channel of the input, on its axis of
    channels (a map's dim -3, the last of tokens or a vector)."""
    from .from_torch import NoMapping
    x, xt = call.x, call.x_torch
    width = x[-1] if len(x) == 2 else x[0]
    axis = len(xt) - 3 if len(x) == 3 else len(xt) - 1      # in the per-sample torch shape
    for t in (alpha, beta):
        dims = [d for d in t.shape]
        sizes = [1] * (len(xt) + 1)
        sizes[axis + 1] = width
        if t.numel() != width or len(dims) > len(sizes) or dims != sizes[len(sizes) - len(dims):]:
            raise NoMapping(f"a scale and shift of shape {dims} on a {list(xt)} input "
                            "(archcalc's channel_affine holds one per channel)")


def _addcmul_call(call):
    """torch.addcmul(beta, alpha, x) (value 1): beta + alpha * x."""
    from .from_torch import NoMapping, require_learned, row
    beta, alpha = (call.parameter(call.arg("addcmul", i, name))
                   for i, name in ((0, "input"), (1, "tensor1")))
    if beta is None or alpha is None or call.arg("addcmul", 3, "value", 1) != 1:
        raise NoMapping("addcmul other than beta + alpha * x with the module's alpha and beta")
    check_affine(call, alpha, beta)
    require_learned(call, "addcmul", call.arg("addcmul", 0, "input"),
                    call.arg("addcmul", 1, "tensor1"))
    return row("channel_affine")


def _functions():
    from .from_torch import reads_state
    addcmul = reads_state(_addcmul_call)
    return {torch.addcmul: addcmul, torch.ops.aten.addcmul.default: addcmul}


FUNCTIONS = _functions()   # the importer's functional mappers of these kinds (mappers.py)
