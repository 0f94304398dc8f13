"""Calculated vs measured, row by row and in total (`archcalc check`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .build import build_model
from .measure import Measured, measure

TOLERANCE = {"exact": 0.0, "memory": 0.10}
MERGE_TYPES = ("concat", "add", "mul", "sub", "scale")


@dataclass
class Check:
    what: str
    calculated: object
    measured: object
    tolerance: float = 0.0
    note: str = ""

    @property
    def error(self) -> float | None:
        if not isinstance(self.calculated, (int, float)) or not isinstance(self.measured, (int, float)):
            return None
        if self.measured == 0:
            return 0.0 if self.calculated == 0 else float("inf")
        return abs(self.calculated - self.measured) / abs(self.measured)

    @property
    def ok(self) -> bool | None:
        if self.measured is None:
            return None  # not measured: neither a pass nor a failure
        if self.error is None:
            return self.calculated == self.measured
        return self.error <= self.tolerance


@dataclass
class RowCheck:
    name: str
    type: str
    checks: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)


@dataclass
class CheckResult:
    report: object
    measured: Measured
    rows: list
    totals: list
    notes: list

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and all(c.ok is not False for c in self.totals)


def run_check(spec, *, batch: int = 1, device: str = "cpu", variables=None, input=None,
              force_meta: bool = False, memory_check: bool = True) -> CheckResult:
    """Measure the built model beside the analysis. A model whose measurement
    would not fit in memory (an upper-bound estimate, made before anything is
    allocated) is built on the meta device: shapes and params only."""
    import torch

    from ..analysis import analyze
    from ..graph import build_graph
    from . import memory
    graph = build_graph(spec, variables=variables, input=input)
    report = analyze(graph, batch=batch)
    reason = "--meta: shapes and params measured on the meta device; FLOPs and memory " \
             "not measured." if force_meta else ""
    if not force_meta and memory_check:
        short = memory.shortfall(memory.for_check(graph, batch, device))
        if short is not None:
            need, free, where, _, what = short
            reason = (f"measuring needs up to {memory.gb(need)} of {what}, {memory.gb(free)} "
                      f"is available ({where}): shapes and params measured on the meta "
                      f"device, FLOPs and memory not measured ({memory.FLAG} measures anyway).")
    if reason:
        with torch.device("meta"):
            model = build_model(graph)
    else:
        model = build_model(graph)
    measured = measure(model, report, batch=batch, device=device, meta=bool(reason))
    measured.meta_reason = reason
    return compare(report, model.rows, measured)


def missed_by(row, peer: str) -> tuple:
    """MACs of a row that a peer tool cannot count, and why (the kinds say)."""
    total, why = 0, ""
    x = row.input_shape
    for op in row.ops:
        y = op.kind.output_shape(op.args, x)
        macs, reason = op.kind.macs_missed_by(op.args, x, y).get(peer, (0, ""))
        total, why = total + macs, why or reason
        x = y
    return total, why


def compare(report, rows_to_modules: dict, m: Measured) -> CheckResult:
    """Pair calculated and measured figures. The engine's MACs are per sample;
    fvcore and FlopCounterMode count the whole batch, so ours are scaled by it."""
    b = report.batch
    rows = []
    fvcore_missed, reasons = 0, set()
    for row in report.rows[1:]:
        module = rows_to_modules.get(row.name)
        rc = RowCheck(row.name, row.type)
        if module is None:
            rows.append(rc)
            continue
        rc.checks.append(Check("shape", tuple(row.output_shape), m.shapes.get(module)))
        if not row.type.split("+")[0] in MERGE_TYPES:
            rc.checks.append(Check("params", row.params, m.params.get(module)))
            if not m.meta:
                missed, why = missed_by(row, "fvcore")
                rc.checks.append(Check("MACs", (row.macs - missed) * b,
                                       m.macs.get(module) if m.macs else None, note=why))
                if missed:
                    fvcore_missed += missed
                    reasons.add(why)
        rows.append(rc)
    t = report.totals
    totals = [Check("params", t["params"], m.total_params)]
    if report.multi_output:  # each output of the heads, by name, from the returned dict
        totals += [Check(f"output {name}: shape", tuple(shape), m.outputs.get(name))
                   for name, shape in report.outputs]
    notes = ["fvcore counts one fused multiply-add as one flop: its conv and linear counts "
             "are MACs, compared exactly."]
    if not m.meta:
        totals += [
            Check(f"MACs x batch {b} (fvcore conv + linear"
                  + (", without what it cannot count)" if fvcore_missed else ")"),
                  (t["macs"] - fvcore_missed) * b, m.fvcore_total),
            Check(f"2 x MACs x batch {b} (FlopCounterMode on the meta device: conv + matmul)",
                  2 * t["macs"] * b, m.flop_counter_total),
            Check("forward activation bytes", t["activation_bytes"],
                  m.forward_activation_bytes, TOLERANCE["memory"]),
            Check("saved for backward (bytes)", t["saved_activation_bytes"], m.saved_bytes,
                  TOLERANCE["memory"],
                  "saved_tensors_hooks, distinct storages, parameters left out"
                  if m.device == "cpu" else "growth of torch.cuda.memory_allocated"),
        ]
        for why in sorted(reasons):
            notes.append(f"{why}: {fvcore_missed * b:,} MACs x batch left out of fvcore's "
                         "expected count (archcalc counts them).")
        device_count = m.flop_counter_device_total
        if device_count is not None and device_count != m.flop_counter_total:
            notes.append(f"FlopCounterMode on {m.device} counts {device_count:,} flops, "
                         f"{m.flop_counter_total - device_count:,} fewer than on the meta device "
                         "(a fused kernel such as nn.MultiheadAttention's fast path escapes it "
                         "there); the meta count is compared.")
        if m.fvcore_skipped:
            notes.append("fvcore does not count " + ", ".join(m.fvcore_skipped)
                         + ": not MACs, so not a mismatch.")
        if m.fvcore_total is None:
            notes.append("fvcore is not installed: MACs per module not measured "
                         '(pip install ".[torch]" in the archcalc clone).')
        notes.append(f"FLOPs (2 x MACs + elementwise) = {t['flops']:,} per sample; "
                     "FlopCounterMode counts only conv and matmul, so 2 x MACs is what it "
                     "measures.")
    else:
        notes.append(m.meta_reason or "shapes and params measured on the meta device; FLOPs "
                     "and memory not measured.")
    return CheckResult(report, m, rows, totals, notes)
