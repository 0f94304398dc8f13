"""Multiplication by a constant: Inception-ResNet's residual scaling
(``out * 0.17 + x``) and the division of a sum by its count, which makes a
FractalNet join (an elementwise mean of columns) out of a residual add.

No parameters and no MACs; one multiply per element. Its backward needs no
tensor (the gradient is the incoming one times the same constant), so it
keeps nothing and runs in place where its input is not read elsewhere."""
from __future__ import annotations

import math
from fractions import Fraction

from ..errors import SpecError
from ..spec.expr import evaluate_value
from .base import Arg, Cost, Kind, register


class Factor(Arg):
    """A finite number: 0.17, 2, an exact fraction "1/3", or an expression of
    bound variables such as "1.0/C"."""

    def read(self, kind, name, value, env):
        received = f"Received: {name}={value!r}"
        if isinstance(value, bool):
            raise SpecError(f"{kind}: {name} takes a number. {received}")
        if isinstance(value, str):
            try:
                value = float(Fraction(value.strip()))
            except OverflowError:
                raise SpecError(f"{kind}: {name} takes a finite number. {received}") from None
            except (ValueError, ZeroDivisionError):
                try:
                    value = evaluate_value(value, env)
                except SpecError as e:
                    raise SpecError(f"{kind}: {name}: {e.message}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{kind}: {name} takes a number such as 0.17 or \"1/3\" "
                            f"(unbound variables are not allowed). {received}")
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(f"{kind}: {name} takes a finite number. {received}")
        return value


@register
class Multiply(Kind):
    name = "multiply"
    op_relatives = {"mul": "add"}
    torch_classes = ('Multiply',)  # in multiply_torch.py
    aliases = ("mul_const", "scale_by")
    primary = "by"
    summary = ('x times a constant: 0.17 (Inception-ResNet\'s residual scaling) or "1/3" '
               "(a sum of 3 columns made a mean: FractalNet's join)")
    flops_rule = "1 per element"
    args = {
        "by": Factor("float", doc='a number, or an exact fraction such as "1/3"'),
        "inplace": Arg("bool", True, doc="in place where its input is read nowhere else"),
    }

    def flops(self, a, x, y):
        from .. import sym
        return sym.prod(y)

    def cost(self, a, x, y):
        """One read and one write per element, as the calibrated mul (a map
        times a per-channel gate); its backward the same product of the
        incoming gradient."""
        from .. import sym
        return (Cost("mul", elements=sym.prod(y)),)

    def shares_storage(self, a):
        return a.inplace

    def build(self, a, x):
        from .multiply_torch import Multiply as Module
        return Module(a.by, a.inplace)

    torch_modules = ("archcalc.layers.multiply_torch.Multiply",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("multiply", by=float(m.by), inplace=bool(m.inplace))
