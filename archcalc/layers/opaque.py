"""An opaque row: an operation archcalc has no kind for, kept by `archcalc
import` with what was measured on the real module at the spec's input: its
output shape (any rank: attention's heads x N x d too), its parameters and its
multiply-accumulates (FlopCounterMode on the meta device, that one call alone,
per sample). Its figures are measured, not derived from a formula: the table
marks them and the JSON row says ``"derived": false``. An older spec may leave
the MACs a variable of the spec ("?", unbound), so every total that includes
them is a formula; bind it (`--set NAME=VALUE`) when the count is known.

A spec never runs code, so an opaque row cannot be built: `check`, `export`,
`train` and `bench` refuse a spec that has one.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpecError
from .base import Arg, Kind, NoCostModel, Saved, fmt_shape, register


# PyTorch's own kernels take up to 8 dimensions at most places (TensorIterator's
# fast paths); a shape written by hand beyond that is a typo, not a tensor
MAX_RANK = 8


@dataclass(frozen=True)
class ShapeArg(Arg):
    """A per-sample shape of any rank: a list of 1 to MAX_RANK positive integers."""

    def read(self, kind, name, value, env):
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_RANK:
            raise SpecError(f"{kind}: {name} takes the output shape per sample, a list of "
                            f"1 to {MAX_RANK} sizes such as [96, 56, 56] or [12, 197, 64]. "
                            f"Received: {name}={value!r}")
        return tuple(Arg("int", min=1, numeric=True).read(kind, name, v, env) for v in value)

@register
class Opaque(Kind):
    name = "opaque"
    not_built = "it stands for code that is not in the spec"
    measured = True
    primary = "op"
    summary = ("an operation archcalc has no kind for (archcalc import): output shape, "
               "params and MACs measured on the module, not derived")
    flops_rule = "2 x MACs, as measured (FlopCounterMode counts matrix products and convolutions)"
    args = {
        "op": Arg("str", doc="what it stands for, e.g. the module's class"),
        "input": ShapeArg("shape", None, doc="the input shape per sample it was measured "
                                             "at: its figures hold there alone"),
        "output": ShapeArg("shape", doc="output shape per sample, as measured"),
        "params": Arg("int", 0, min=0, numeric=True, doc="parameters, as measured"),
        "buffers": Arg("int", 0, min=0, numeric=True),
        "macs": Arg("int", min=0, doc="multiply-accumulates per sample, as measured "
                                      "(FlopCounterMode / 2); a variable declared \"?\" "
                                      "when not known"),
    }

    def output_shape(self, a, x):
        if a.input is not None and tuple(x) != tuple(a.input):
            # measured figures hold at the input they were measured at, nowhere else
            raise SpecError(f"opaque ({a.op}) was measured on a {fmt_shape(a.input)} input; "
                            f"here it gets {fmt_shape(x)}: its output and MACs are not known "
                            "there; import the model again at this input")
        return a.output

    def params(self, a, x):
        return a.params

    def buffers(self, a, x):
        return a.buffers

    def macs(self, a, x, y):
        return a.macs

    def window(self, a, x):
        # what it reads is not known: take the whole input as its window
        return ((x[1], x[2]), (1, 1)) if len(x) == 3 else ((1, 1), (1, 1))

    def saved(self, a, x, y):
        return Saved(input=True)  # an assumption: its input (stated in the docs)

    def findings(self, a, x):
        return []

    def cost(self, a, x, y):
        # its MACs are measured, not what they run on (a GEMM, a convolution, a
        # gather): a time would be a guess
        raise NoCostModel(f"kind 'opaque' ({a.op}) has no cost model: its MACs are measured, "
                          "not the kind of work they are")

    def build(self, a, x):
        raise SpecError(f"an opaque row ({a.op}) stands for code that is not in the spec: "
                        "it can be analyzed, not built; import the module again and map "
                        "that operation, or replace the row with layers")

def opaque_rows(report) -> list:
    """The rows of a report measured rather than derived (its opaque rows)."""
    return [r for r in report.rows if not r.derived]


__all__ = ["Opaque", "opaque_rows"]

