"""Several designs side by side: the figures that decide between them, each
with its ratio to the first design. Formulas where variables are unbound,
with exact simplified ratios (27/49, not 0.551)."""
from __future__ import annotations

from dataclasses import dataclass

from . import sym
from .analysis import analyze

FIGURES = (
    ("params", "params", "params"),
    ("macs", "MACs", "macs"),
    ("flops", "FLOPs", "flops"),
    ("activations", "activations (per sample)", "activations"),
    ("train_memory_bytes", "training memory (bytes)", "train_memory_bytes"),
    ("receptive_field", "receptive field", "receptive_field"),
    ("weighted_layers", "depth (weighted layers)", "weighted_layers"),
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
    values = {key: [r.totals[total] for r in reports] for key, _, total in FIGURES}
    return Comparison([r.model.name for r in reports], [s.file for s in specs], values, reports)


def _known(spec, variables):
    """--set binds a variable in every spec that has it."""
    if not variables:
        return None
    return {k: v for k, v in variables.items() if k in spec.vars}
