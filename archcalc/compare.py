"""Several designs side by side: the figures that decide between them, each
with its ratio to the first design. Formulas where variables are unbound,
with exact simplified ratios (27/49, not 0.551)."""
from __future__ import annotations

from dataclasses import dataclass

from . import sym
from .analysis import analyze
from .graph import Heads, Join, Layer, Merge, Sequence, Transform
from .structures import Visitor

FIGURES = (
    ("params", "params", "params"),
    ("macs", "MACs", "macs"),
    ("flops", "FLOPs", "flops"),
    ("activations", "activations (per sample)", "activations"),
    ("train_memory_bytes", "training memory (bytes)", "train_memory_bytes"),
    ("receptive_field", "receptive field", "receptive_field"),
    # the papers' depth (VGG-16, ResNet-50, GoogLeNet's 22): weighted layers on
    # the longest path; every weighted layer of every branch apart (GoogLeNet 58)
    ("depth", "depth (weighted layers on the longest path)", "depth"),
    ("weighted_layers", "weighted layers (all branches)", "weighted_layers"),
    ("nonlinearities", "nonlinearities", "nonlinearities"),
    ("outputs", "outputs (named heads)", "outputs"),
)


@dataclass
class Comparison:
    names: list
    files: list
    values: dict          # figure key -> [value per design]
    reports: list

    def ratio(self, key: str, i: int):
        """design i over the first: a simplified fraction or formula."""
        base, value = self.values[key][0], self.values[key][i]
        if base == 0:
            return None
        if isinstance(base, int) and isinstance(value, int):
            from fractions import Fraction
            return Fraction(value, base)
        import sympy
        return sympy.simplify(value / base)

    def as_json(self) -> dict:
        return {
            "designs": [{"name": n, "file": f,
                         "outputs": [{"name": o, "shape": [sym.to_json(d) for d in shape]}
                                     for o, shape in r.outputs]}
                        for n, f, r in zip(self.names, self.files, self.reports)],
            "figures": {key: {"values": [sym.to_json(v) for v in vals],
                              "ratios": [_ratio_json(self.ratio(key, i)) for i in range(len(vals))]}
                        for key, vals in self.values.items()},
        }


def _ratio_json(r):
    if r is None:
        return None
    from fractions import Fraction
    if isinstance(r, Fraction):
        return float(r) if r.denominator != 1 else r.numerator
    return str(r)


def ratio_text(r) -> str:
    if r is None:
        return "-"
    from fractions import Fraction
    if isinstance(r, Fraction):
        if r == 1:
            return "1"
        exact = f" ({r.numerator}/{r.denominator})" if r.denominator <= 1000 and r.denominator != 1 else ""
        return f"{float(r):.3g}x{exact}"
    return str(r).replace("**", "^")


def compare(specs, *, variables=None, batch=1, dtype="fp32", input=None) -> Comparison:
    reports = [analyze(spec, variables=_known(spec, variables), batch=batch, dtype=dtype,
                       input=input) for spec in specs]
    return Comparison([r.model.name for r in reports], [s.file for s in specs],
                      figure_values(reports), reports)


def figure_values(reports) -> dict:
    """Each figure's value per design (depth is walked, the others are totals)."""
    return {key: [depth(r.model.body, r.model.outputs) if total == "depth" else r.totals[total]
                  for r in reports] for key, _, total in FIGURES}


def _weighted(layer: Layer) -> int:
    return 1 if layer.ops and layer.ops[0].kind.weighted else 0


class _Depth(Visitor):
    """Weighted layers (conv, fc, ...) on the longest path from the input to an
    output: branches count their deepest, a projection shortcut one, heads
    branch off the main line. What "VGG-16" and "ResNet-50" count. Each visit
    takes the depth at the node's input and gives the depth at its output; in
    a general graph a node that reads ``from`` a named value starts at that
    value's depth, a merge entry at its deepest input (the longest path
    through the DAG)."""

    def __init__(self):
        self.values: dict = {}    # Ref key -> depth of that value
        self.side = None          # the deepest head of the Heads node just visited

    def walk(self, node, d: int) -> int:
        if node.source is not None:
            d = self.values[node.source.key]
        d = self.visit(node, d)
        self.values[(id(node), False)] = d
        return d

    def visit_layer(self, node: Layer, d: int) -> int:
        return d + _weighted(node)

    def visit_sequence(self, node: Sequence, d: int) -> int:
        """The deeper of the main line's end and the heads along it."""
        self.values[(id(node), True)] = d
        deepest = d
        for item in node.items:
            self.side = None
            out = self.walk(item, d)
            side, self.side = self.side, None
            if side is None:
                d = out
            else:     # heads: side outputs; the main line goes on unchanged
                deepest = max(deepest, side)
        return max(d, deepest)

    def _branches(self, node, d: int) -> int:
        return max((self.walk(b, d) for b in node.branches), default=d)

    visit_concat = visit_split = _branches

    def visit_heads(self, node: Heads, d: int) -> int:
        self.side = self._branches(node, d)   # read by the sequence holding it
        return d

    def visit_merge(self, node: Merge, d: int) -> int:
        short = node.shortcut
        across = self.walk(short, d) if isinstance(short, Sequence) else \
            d + int(short != "identity")
        return max(self.walk(node.body, d), across)

    def visit_transform(self, node: Transform, d: int) -> int:
        return self.walk(node.loc, d) + (1 if node.sampler.kind.weighted else 0)

    def visit_join(self, node: Join, d: int) -> int:
        return max(self.values[ref.key] for ref in node.sources)


def depth(node, outputs: tuple = ()) -> int:
    """Weighted layers on the longest path (see _Depth); ``outputs``: the
    model's Refs of [model] outputs, each an end of a path."""
    walk = _Depth()
    end = walk.walk(node, 0)
    return max([end, *(walk.values[ref.key] for ref in outputs)])


def _known(spec, variables):
    """--set binds a variable in every spec that has it."""
    if not variables:
        return None
    return {k: v for k, v in variables.items() if k in spec.vars}
