"""Tokens transposed: N x D -> D x N, so the next fc mixes the tokens rather
than each token's features (MLP-Mixer's and ResMLP's token-mixing MLP: a
transpose, a linear over the N tokens, a transpose back). A view in PyTorch
(x.transpose(1, 2)): no parameters, no arithmetic, nothing kept."""
from __future__ import annotations

from .base import Cost, Kind, register


@register
class TransposeTokens(Kind):
    name = "transpose_tokens"
    aliases = ("token_transpose",)
    torch_classes = ("TransposeTokens",)  # in transpose_torch.py
    summary = "N x D tokens -> D x N (a view), for a token-mixing fc (MLP-Mixer, ResMLP)"
    flops_rule = "0 (a view)"
    view = True
    inputs = "tokens"

    def output_shape(self, a, x):
        return (x[1], x[0])

    def cost(self, a, x, y):
        """A view: the call only."""
        return (Cost("view", backward=False),)

    def build(self, a, x):
        from .transpose_torch import TransposeTokens as Module
        return Module()

    torch_modules = ("archcalc.layers.transpose_torch.TransposeTokens",)

    def from_torch(self, call, m):
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping("a token transpose of something other than tokens")
        return row("transpose_tokens")
