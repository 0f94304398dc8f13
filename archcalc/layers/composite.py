"""What a kind made of other kinds' layers shares (split attention, selective
kernel): its inner layers as parts (a kind, its arguments, its input and
output shapes), and its figures as the sums of theirs, plus the elementwise
work between them that no part holds (a sum over the splits, a global mean, a
weighted sum). Not a kind: a helper of the kinds that use it."""
from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

from .. import sym
from ..errors import SpecError
from .base import REQUIRED, Cost, Saved, lookup


class Part(NamedTuple):
    kind: object
    a: SimpleNamespace
    x: tuple
    y: tuple

    def out(self) -> sym.Num:
        return sym.prod(self.y)


def part(name: str, x: tuple, **args) -> Part:
    """One inner layer: ``name``'s defaults, ``args`` over them (values already
    read: pairs as tuples, numbers that may be symbols), its output shape."""
    kind = lookup(name)
    base = kind.read_args({k: 1 for k, arg in kind.args.items() if arg.default is REQUIRED}, {})
    a = SimpleNamespace(**{**vars(base), **args})
    return Part(kind, a, tuple(x), tuple(kind.output_shape(a, tuple(x))))


def make_divisible(v, divisor=8, min_value=None):
    """timm's make_divisible: ``v`` rounded to a multiple of ``divisor``, never
    under ``min_value`` nor 10% under ``v`` (ints only: a symbol is refused)."""
    if not isinstance(v, (int, float)):
        raise SpecError(f"the attention width follows from the channels ({v}), which must be "
                        "a number here; give attn")
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Composite:
    """Mixin: a kind's figures from ``parts(a, x)`` (its inner layers, in
    order) and ``between(a, x)`` (the elementwise work between them: Costs of
    a calibrated op table, each ``elements`` also its FLOPs)."""
    weighted = True
    autocast = "low"

    def parts(self, a, x) -> list:  # pragma: no cover - each kind overrides
        raise NotImplementedError

    def between(self, a, x) -> tuple:  # pragma: no cover - each kind overrides
        raise NotImplementedError

    def params(self, a, x):
        return sym.norm(sum(p.kind.params(p.a, p.x) for p in self.parts(a, x)))

    def buffers(self, a, x):
        return sym.norm(sum(p.kind.buffers(p.a, p.x) for p in self.parts(a, x)))

    def macs(self, a, x, y):
        return sym.norm(sum(p.kind.macs(p.a, p.x, p.y) for p in self.parts(a, x)))

    def flops(self, a, x, y):
        return sym.norm(sum(p.kind.flops(p.a, p.x, p.y) for p in self.parts(a, x))
                        + sum(c.elements for c in self.between(a, x)))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        parts = self.parts(a, x)
        inner = sum(p.kind.backward_flops(p.a, p.x, p.y, needs_input_grad or i > 0)
                    for i, p in enumerate(parts))
        return sym.norm(inner + sum(c.elements for c in self.between(a, x)))

    def cost(self, a, x, y):
        """The parts' own primitives, then the elementwise work between them."""
        costs = [c for p in self.parts(a, x) for c in p.kind.cost(p.a, p.x, p.y)]
        return (*costs, *self.between(a, x))

    def saved(self, a, x, y):
        """What each part keeps (its input, its output, its extras), the first
        part's input being this layer's; the elementwise work between keeps
        what ``kept_between`` says."""
        extra, per_batch = [], []
        for i, p in enumerate(self.parts(a, x)):
            s = p.kind.saved(p.a, p.x, p.y)
            if s.input and i:
                extra.append((sym.prod(p.x), None))
            if s.output:
                extra.append((p.out(), None))
            extra.extend(s.extra)
            per_batch.extend(s.per_batch)
        extra.extend(self.kept_between(a, x))
        return Saved(input=True, extra=tuple(extra), per_batch=tuple(per_batch))

    def kept_between(self, a, x) -> tuple:
        return ()


def mlp_costs(n, c, hidden, activation: str = "gelu") -> tuple:
    """A transformer block's pre-norm MLP on n tokens of c: the LayerNorm, the
    fc to ``hidden``, the activation, the fc back (the residual's add is the
    caller's)."""
    return (Cost("layer_norm", elements=sym.norm(n * c), tensors=(c, c)),
            Cost("linear", gemm=(n, hidden, c), tensors=(hidden * c, hidden)),
            Cost(activation, elements=sym.norm(n * hidden)),
            Cost("linear", gemm=(n, c, hidden), tensors=(hidden * c, c)))


def between(*items) -> tuple:
    """Costs of elementwise ops: (op table, elements) pairs."""
    return tuple(Cost(op, elements=sym.norm(n)) for op, n in items)
