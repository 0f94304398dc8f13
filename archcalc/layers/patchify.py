"""Patchify: a C x H x W map cut into non-overlapping patch x patch patches,
each flattened into one token: N = (H/p)*(W/p) tokens of width p*p*C (timm's
``batch_patchify``, the NaFlexViT linear patch embedding, whose ``proj`` is
then a Linear on the tokens). In timm's order: the patches row by row, each
token the patch's row, its column, then the channel (``channels_last``), or
the channel first. A view, a permute and the copy that makes it contiguous:
no parameters, no arithmetic, nothing kept for backward."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, register


@register
class Patchify(Kind):
    name = "patchify"
    torch_classes = ("Patchify",)  # in patchify_torch.py
    primary = "patch"
    summary = ("C x H x W -> N x (p*p*C): non-overlapping p x p patches as tokens, "
               "N = (H/p)*(W/p) (a linear patch embedding's input)")
    flops_rule = "0 (a copy)"
    inputs = "chw"
    args = {
        "patch": Arg("int", min=1, numeric=True, doc="the patch's side; divides H and W"),
        "channels_last": Arg("bool", True, doc="each token the patch's rows, columns, then "
                                               "channels (timm's); false: channels first"),
    }
    arg_examples = {"patch": (1, 2, 4)}

    def output_shape(self, a, x):
        c, h, w = x
        for side, n in (("height", h), ("width", w)):
            if isinstance(n, int) and n % a.patch:
                raise SpecError(f"patchify: patch={a.patch} must divide the {side}. "
                                f"Received: {side}={n}")
        return (sym.norm(sym.floordiv(h, a.patch) * sym.floordiv(w, a.patch)),
                sym.norm(c * a.patch * a.patch))

    def window(self, a, x):
        return (a.patch, a.patch), (a.patch, a.patch)

    def cost(self, a, x, y):
        """A view, a permute and the copy that makes it contiguous."""
        return (Cost("copy", elements=sym.prod(y)),)

    def build(self, a, x):
        from .patchify_torch import Patchify as Module
        return Module(a.patch, a.channels_last)

    torch_modules = ("archcalc.layers.patchify_torch.Patchify",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import require_chw, row
        require_chw(call, "Patchify")
        return row("patchify", patch=int(m.patch), **({} if m.channels_last else
                                                      {"channels_last": False}))
