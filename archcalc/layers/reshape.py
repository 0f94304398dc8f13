"""Reshape each sample: YOLO's last fc (1470 features) read as its 7 x 7 grid
of 30 predictions. A view: no parameters, no arithmetic, nothing allocated
and nothing kept for backward. The element counts must agree; one entry may
be -1 (inferred, as PyTorch does)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, fmt_shape, register
from .linear import global_window


class ShapeArg(Arg):
    """A per-sample shape: one to three sizes (ints or expressions), one of
    which may be -1."""

    def read(self, kind, name, value, env):
        received = f"Received: {name}={value!r}"
        if not isinstance(value, list) or not 1 <= len(value) <= 3:
            raise SpecError(f"{kind}: {name} takes a list of one to three sizes per sample, "
                            f"such as [30, 7, 7] (C x H x W), [N, D] or [F]; one may be -1. "
                            f"{received}")
        sizes = []
        for v in value:
            if type(v) is int and v == -1:
                sizes.append(-1)
                continue
            size = Arg("int")._int(kind, name, v, env)
            if isinstance(size, int) and size < 1:
                raise SpecError(f"{kind}: {name}: sizes must be positive, or -1 for the one "
                                f"PyTorch infers. {received}")
            sizes.append(size)
        if sizes.count(-1) > 1:
            raise SpecError(f"{kind}: only one size may be -1. {received}")
        return tuple(sizes)


@register
class Reshape(Kind):
    name = "reshape"
    arg_examples = {"shape": ([-1], [1, -1], [-1, 1, 1], lambda x: list(x[::-1]))}
    torch_classes = ('Reshape',)  # in reshape_torch.py
    aliases = ("view",)
    primary = "shape"
    summary = ("each sample reshaped to [C, H, W], [N, D] or [F] (one size may be -1); "
               "element counts must agree; a view")
    flops_rule = "0 (a view)"
    view = True
    args = {"shape": ShapeArg("table", doc="[C, H, W], [N, D] or [F]; one entry may be -1")}

    def output_shape(self, a, x):
        total = sym.prod(x)
        known = sym.prod([s for s in a.shape if s != -1])
        if -1 in a.shape:
            if isinstance(total, int) and isinstance(known, int) and total % known:
                raise SpecError(f"cannot reshape {fmt_shape(x)} ({total:,} elements) to "
                                f"{_fmt(a.shape)}: {total:,} is not a multiple of {known:,}")
            inferred = sym.exact_div(total, known)
            return tuple(inferred if s == -1 else s for s in a.shape)
        if sym.norm(total - known) != 0 and not (sym.is_symbolic(total) or
                                                 sym.is_symbolic(known)):
            raise SpecError(f"cannot reshape {fmt_shape(x)} ({sym.fmt_int(total)} elements) to "
                            f"{_fmt(a.shape)} ({sym.fmt_int(known)} elements); the counts "
                            "must agree")
        return tuple(a.shape)

    def cost(self, a, x, y):
        """A view: the call only."""
        return (Cost("view", backward=False),)

    def window(self, a, x):
        # a reshape that keeps the map (C x H x W -> C x H x W) keeps the window;
        # one that mixes positions into features sees the whole input
        y = self.output_shape(a, x)
        if len(x) == 3 and len(y) == 3 and sym.norm(x[1] - y[1]) == 0 and \
                sym.norm(x[2] - y[2]) == 0:
            return (1, 1), (1, 1)
        return global_window(x)

    def size_arithmetic(self, a, x):
        y = self.output_shape(a, x)
        total = sym.fmt_int(sym.prod(x))
        before = f"{' * '.join(sym.plain(d) for d in x)} = {total}" if len(x) > 1 else total
        return [f"{before} = {' * '.join(sym.plain(d) for d in y)} elements"]

    def build(self, a, x):
        from .reshape_torch import Reshape as Module
        return Module(self.output_shape(a, x))

    torch_modules = ("archcalc.layers.reshape_torch.Reshape",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("reshape", shape=list(m.shape))


def _fmt(shape) -> str:
    return "[" + ", ".join(sym.fmt_int(s) for s in shape) + "]"
