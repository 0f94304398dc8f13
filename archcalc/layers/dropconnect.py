"""DropConnect (Wan, Zeiler, Zhang, LeCun, Fergus 2013; the regularization
lecture): a fully connected layer whose weights, not activations, are dropped
at random while training. Dropout is the special case of dropping whole rows
of W (a unit's outputs) when the activation has f(0) = 0.

At inference it is the fc layer (params, MACs and FLOPs are the fc's). While
training, one mask per minibatch is drawn over W (the paper draws one per
example; implementations share one across the batch) and the kept weights
are scaled by 1/(1 - p), as inverted dropout does, so that inference needs no
rescaling (the paper instead matches moments of a Gaussian at inference).
What a training step keeps beyond the fc's input: the bool mask, out x in,
whatever the batch size (the masked weights are recomputed for backward,
not kept)."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Saved, register
from .linear import FullyConnected

BOOL = 1


@register
class DropConnect(FullyConnected):
    name = "dropconnect"
    bias_redundant_before_norm = False  # the lint rule was never stated for it
    torch_classes = ('DropConnectLinear',)  # in dropconnect_torch.py
    aliases = ("drop_connect", "dropconnect_fc")
    summary = ("fully connected with DropConnect: each weight dropped with probability p while "
               "training (one mask per minibatch, kept weights / (1 - p)); an fc at inference")
    flops_rule = "as fc: 2 x MACs; MACs = in_features * out_features (inference)"
    args = {**FullyConnected.args, "p": Arg("float", 0.5, min=0.0, max=1.0,
                                            doc="probability of dropping each weight")}

    def output_shape(self, a, x):
        if a.p >= 1:
            from ..errors import SpecError
            raise SpecError(f"dropconnect: p must be below 1 (every weight dropped leaves "
                            f"nothing to scale by 1/(1 - p)). Received: p={a.p}")
        return super().output_shape(a, x)

    def cost(self, a, x, y):
        """The fc's GEMM; while training also one mask per step over the
        weights and W * mask * scale (rated as a dropout of the weights, twice:
        the backward recomputes the masked weights and masks their gradient).
        Per step, not per sample."""
        fc = super().cost(a, x, y)
        if a.p == 0:
            return fc
        weights = sym.norm(self.fan_in(x) * a.out)
        return (Cost("dropout", elements=weights, scale=2.0, train_only=True, per_batch=True),
                *fc)

    def saved(self, a, x, y):
        if a.p == 0:
            return Saved(input=True)
        weights = sym.norm(self.fan_in(x) * a.out)
        return Saved(input=True, per_batch=((weights, BOOL),))   # the bool mask

    def build(self, a, x):
        from torch import nn

        from .dropconnect_torch import DropConnectLinear
        linear = DropConnectLinear(self.fan_in(x), a.out, bias=a.bias, p=a.p)
        return nn.Sequential(nn.Flatten(), linear) if len(x) == 3 else linear

    torch_modules = ("archcalc.layers.dropconnect_torch.DropConnectLinear",)   # from_torch

    def from_torch(self, call, m):
        from .from_torch import NoMapping, row
        if len(call.x) == 3:
            raise NoMapping("DropConnectLinear on a C x H x W map")
        return row("dropconnect", out=m.out_features, bias=m.bias is not None, p=float(m.p))
