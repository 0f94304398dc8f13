"""One layer's arithmetic, step by step, as a lecture writes it."""
from __future__ import annotations

import difflib

from . import sym
from .analysis import DTYPES, Report
from .errors import SpecError, path_text, split_path
from .layers.base import fmt_shape


def find_row(report: Report, name: str):
    """A row by its module path in any spelling ('layer1.0.conv1',
    'layer1/0/conv1', 'layer1 > 0 > conv1') or by its own name if unique."""
    wanted = path_text(split_path(name))
    exact = [r for r in report.rows[1:] if r.name == wanted]
    if not exact:
        exact = [r for r in report.rows[1:] if r.path and r.path[-1] == wanted]
    if len(exact) == 1:
        return exact[0]
    names = [r.name for r in report.rows[1:]]
    if len(exact) > 1:
        raise SpecError(f"{len(exact)} layers are named {name!r}: "
                        f"{', '.join(r.name for r in exact[:5])}; give the path")
    close = difflib.get_close_matches(wanted, names, n=3)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else \
        f"; its layers: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}"
    raise SpecError(f"{report.model.name} has no layer {name!r}{hint}", file=report.model.file)


def explain(report: Report, name: str) -> list[str]:
    return explain_row(report, find_row(report, name))


def explain_row(report: Report, row) -> list[str]:
    """The lines of ``explain`` for a row already at hand (the HTML report)."""
    f = sym.fmt_int
    lines = [f"{report.model.name}: {row.name} ({row.type}), row {row.index} of "
             f"{report.model.file}",
             f"input: {fmt_shape(row.input_shape)}"]
    x = row.input_shape
    for op in row.ops:
        y = op.kind.output_shape(op.args, x)
        for text in op.kind.size_arithmetic(op.args, x):
            lines.append(f"output size ({op.kind.name}): {text}")
        x = y
    lines.append(f"output: {fmt_shape(row.output_shape)}")
    if row.params_formula and row.params:
        lines.append(f"params: {row.params_formula} = {f(row.params)}"
                     + ("  (weights + biases)" if row.ops and getattr(row.ops[0].args, "bias", False)
                        else ""))
    else:
        lines.append(f"params: {f(row.params)}")
    macs_parts = []
    x = row.input_shape
    for op in row.ops:
        y = op.kind.output_shape(op.args, x)
        macs = op.kind.macs(op.args, x, y)
        if macs != 0:  # every kind with MACs shows them: conv, fc, and se's inner fcs
            formula = op.kind.macs_formula(op.args, x, y) or sym.plain(macs)
            macs_parts.append(formula if len(row.ops) == 1 or op.kind.weighted
                              else f"{op.kind.name}: {formula}")
        x = y
    if macs_parts:
        shown = " + ".join(macs_parts)
        lines.append(f"MACs: {shown}" + ("" if shown == f(row.macs) else f" = {f(row.macs)}"))
    else:
        lines.append(f"MACs: {f(row.macs)} (no multiply-accumulates: not a conv or fc)")
    rules = [f"{op.kind.name}: {op.kind.flops_rule}" for op in row.ops
             if op.kind.flops_rule and not op.kind.weighted]
    if not row.ops:  # a merge row (concat, add, mul) and its fused ops
        lines.append(f"FLOPs: {f(row.flops)}" + (" (one per output element)"
                                                  if row.flops == row.activations else ""))
    elif not rules:
        lines.append(f"FLOPs: 2 x MACs = {f(row.flops)}")
    elif any(op.kind.weighted for op in row.ops):
        lines.append(f"FLOPs: {f(row.flops)} (2 x MACs + {', '.join(rules)})")
    else:
        lines.append(f"FLOPs: {f(row.flops)} ({', '.join(rules)})")
    dsize = DTYPES[report.dtype]
    per = "image" if report.batch == 1 else f"batch of {report.batch}"
    elems = "*".join(sym.plain(d) for d in row.output_shape)
    mem = row.activations * dsize * report.batch
    lines.append(f"memory: {elems} = {f(row.activations)} activations x {dsize} bytes "
                 f"({report.dtype}) = {sym.human_bytes(mem)} per {per}"
                 + ("" if row.allocates else " (a view or in place: no new memory)"))
    (r0, _), (j0, _) = row.rf_in, row.jump_in
    r1, j1 = row.receptive_field[0], row.jump[0]
    numeric = all(isinstance(v, int) for v in (r0, r1, j0, j1)) and j0
    k_eff = (r1 - r0) // j0 + 1 if numeric else None
    stride = j1 // j0 if numeric else None
    if k_eff is not None and r1 != r0:
        lines.append(f"receptive field: r = r_in + (F - 1)*j_in = {f(r0)} + ({f(k_eff)} - 1)*{f(j0)}"
                     f" = {f(r1)}; jump j = j_in*S = {f(j0)}*{f(stride)} = {f(j1)}")
    else:
        lines.append(f"receptive field: {f(r1)} (unchanged); jump {f(j1)}")
    for remark in row.findings:
        lines.append(f"warning: {remark}")
    return lines
