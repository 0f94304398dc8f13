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
             f"{report.model.file}", _input_line(row)]
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
    lines.append(_macs_line(row))
    lines.append(_merge_flops_line(row) if row.merge else _flops_line(row))
    dsize = DTYPES[report.dtype]
    per = "image" if report.batch == 1 else f"batch of {report.batch}"
    elems = "*".join(sym.plain(d) for d in row.output_shape)
    mem = row.activations * dsize * report.batch
    lines.append(f"memory: {elems} = {f(row.activations)} activations x {dsize} bytes "
                 f"({report.dtype}) = {sym.human_bytes(mem)} per {per}"
                 + ("" if row.allocates else " (a view or in place: no new memory)"))
    lines.append(_merge_rf_line(row) if row.merge else _rf_line(row))
    for remark in row.findings:
        lines.append(f"warning: {remark}")
    return lines


def _input_line(row) -> str:
    """What the row reads: a merge row, each value it combines (the row that
    wrote it and its shape); a row that reads by name (from), which row."""
    if row.merge:
        return "inputs: " + "; ".join(f"{name}: {fmt_shape(shape)}"
                                      for name, shape, _rf, _jump in row.merged)
    reads = f", from {', '.join(row.inputs)}" if row.inputs else ""
    return f"input: {fmt_shape(row.input_shape)}{reads}"


def _macs_line(row) -> str:
    f = sym.fmt_int
    parts = []
    x = row.input_shape
    for op in row.ops:
        y = op.kind.output_shape(op.args, x)
        macs = op.kind.macs(op.args, x, y)
        if macs != 0:  # every kind with MACs shows them: conv, fc, and se's inner fcs
            formula = op.kind.macs_formula(op.args, x, y) or sym.plain(macs)
            parts.append(formula if len(row.ops) == 1 or op.kind.weighted
                         else f"{op.kind.name}: {formula}")
        x = y
    if not parts:
        return f"MACs: {f(row.macs)} (no multiply-accumulates: not a conv or fc)"
    shown = " + ".join(parts)
    return f"MACs: {shown}" + ("" if shown == f(row.macs) else f" = {f(row.macs)}")


def _own_rule(kind) -> str:
    """A kind's FLOPs rule as it states it (its docstring's first line where it
    states none)."""
    if kind.flops_rule and kind.flops_rule != "none":
        return kind.flops_rule
    doc = (kind.__doc__ or "").strip().splitlines()
    return doc[0] if doc else "none stated"


def _flops_line(row) -> str:
    """FLOPs as 2 x MACs where that is all a weighted op computes; every other
    op (an elementwise kind, attention's softmax, a norm inside a kind) by its
    own rule, told apart by its figures: FLOPs other than 2 x its MACs."""
    f = sym.fmt_int
    plain, rules = False, []
    x = row.input_shape
    for op in row.ops:
        y = op.kind.output_shape(op.args, x)
        two_macs = sym.norm(op.kind.flops(op.args, x, y) - 2 * op.kind.macs(op.args, x, y)) == 0
        if op.kind.weighted and two_macs:
            plain = True
        elif op.kind.weighted or op.kind.flops_rule:
            rules.append(f"{op.kind.name}: {_own_rule(op.kind)}")
        x = y
    if not rules:
        return f"FLOPs: 2 x MACs = {f(row.flops)}"
    return f"FLOPs: {f(row.flops)} (" + ("2 x MACs + " if plain else "") + ", ".join(rules) + ")"


def _post_flops(row):
    """FLOPs of a merge row's fused ops (the post-add relu), each by its rule."""
    total, rules = 0, []
    x = row.output_shape
    for op in row.post:
        total = sym.norm(total + op.kind.flops(op.args, x, op.kind.output_shape(op.args, x)))
        rules.append(f"{op.kind.name}: {_own_rule(op.kind)}")
    return total, rules


def _merge_flops_line(row) -> str:
    """A merge: N inputs added or multiplied run N - 1 binary ops, one per
    output element each; a concatenation copies (no FLOPs)."""
    f = sym.fmt_int
    post, rules = _post_flops(row)
    own = sym.norm(row.flops - post)
    n = len(row.merged)
    if row.merge == "concat":
        text = "a concatenation copies: no arithmetic"
    elif n > 2 and sym.norm(own - (n - 1) * sym.prod(row.output_shape)) == 0:
        text = (f"(N - 1) x numel = ({n} - 1)*{f(sym.prod(row.output_shape))} = {f(own)} "
                f"for the {row.merge} of {n}")
    else:   # two inputs (or a C x 1 x 1 gate): one op per element of the full map
        text = f"{f(own)} for the {row.merge}: one per output element"
    return f"FLOPs: {f(row.flops)} ({', '.join([text, *rules])})"


def _rf_text(rf) -> str:
    f = sym.fmt_int
    return f(rf[0]) if sym.norm(rf[0] - rf[1]) == 0 else f"{f(rf[0])}x{f(rf[1])}"


def _merge_rf_line(row) -> str:
    """A merge sees what any of its inputs sees: the max over them."""
    rfs = ", ".join(f"{name}: {_rf_text(rf)}" for name, _s, rf, _j in row.merged)
    jumps = ", ".join(_rf_text(jump) for *_rest, jump in row.merged)
    return (f"receptive field: the max over its inputs = max({rfs}) = "
            f"{_rf_text(row.receptive_field)}; jump max({jumps}) = {_rf_text(row.jump)}")


def _rf_line(row) -> str:
    f = sym.fmt_int
    (r0, _), (j0, _) = row.rf_in, row.jump_in
    r1, j1 = row.receptive_field[0], row.jump[0]
    numeric = all(isinstance(v, int) for v in (r0, r1, j0, j1)) and j0
    k_eff = (r1 - r0) // j0 + 1 if numeric else None
    stride = j1 // j0 if numeric else None
    if k_eff is not None and r1 != r0:
        return (f"receptive field: r = r_in + (F - 1)*j_in = {f(r0)} + ({f(k_eff)} - 1)*{f(j0)}"
                f" = {f(r1)}; jump j = j_in*S = {f(j0)}*{f(stride)} = {f(j1)}")
    return f"receptive field: {f(r1)} (unchanged); jump {f(j1)}"
