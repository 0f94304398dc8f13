"""Render a Report: a rich table with the lecture's summary lines, or plain
JSON, CSV and markdown. Rendering only reads the Report."""
from __future__ import annotations

import csv
import io

from .. import sym
from ..analysis import DTYPES, Report
from ..layers.base import fmt_shape

COLUMNS = ("#", "layer", "kind", "output (C x H x W)", "activations", "params", "MACs", "RF")

CONVENTIONS = (
    "Conventions: shapes per sample (C x H x W); params = weights + biases (+ BN affine); "
    "MACs = multiply-accumulates of conv and fc (fvcore's 'flops'); FLOPs = 2 x MACs + "
    "elementwise work; RF = receptive field in input pixels. Units: K = 10^3, M = 10^6, "
    "G = 10^9; MB = 10^6 bytes.")


def cells(report: Report, row) -> list[str]:
    """The text of one row, shared by the rich and markdown renderers."""
    f = sym.fmt_int
    if row.index == 0:
        return ["0", "input", "input", fmt_shape(row.output_shape),
                _activations(row), "0", "0", "1"]
    params = f(row.params)
    if row.params_formula and row.params:
        params = f"{row.params_formula} = {params}"
    rh, rw = row.receptive_field
    rf = f(rh) if rh == rw else f"{f(rh)}x{f(rw)}"
    return [str(row.index), " > ".join(row.path) or row.name, row.type, fmt_shape(row.output_shape),
            _activations(row), params, f(row.macs) if row.macs else "0", rf]


def both(x) -> str:
    """138M (138,357,544); a formula once."""
    return sym.fmt_int(x) if sym.is_symbolic(x) else f"{sym.human(x)} ({sym.fmt_int(x)})"


def _activations(row) -> str:
    x = row.activations
    text = sym.fmt_int(x) if sym.is_symbolic(x) else f"{sym.fmt_int(x)} ({sym.human(x)})"
    return text if row.allocates else f"{text}, view"


def summary_lines(report: Report) -> list[str]:
    t = report.totals
    dsize = DTYPES[report.dtype]
    per = "image" if report.batch == 1 else f"batch of {report.batch}"
    h, hb = sym.human, sym.human_bytes
    return [
        f"TOTAL memory: {h(t['activations'])} activations x {dsize} bytes ({report.dtype})"
        + (f" x batch {report.batch}" if report.batch > 1 else "")
        + f" = {hb(t['activation_bytes'])} / {per} (forward only; about x2 for backward)",
        f"TOTAL params: {both(t['params'])}, "
        f"{hb(t['param_bytes'])} of weights in {report.dtype}",
        f"TOTAL MACs: {both(t['macs'])} multiply-accumulates per sample; "
        f"FLOPs: {h(t['flops'])} (2 x MACs + elementwise)",
        f"Training step (batch {report.batch}, {report.dtype}, {report.optimizer}): weights "
        f"{hb(t['param_bytes'])} + gradients {hb(t['gradient_bytes'])} + optimizer state "
        f"{hb(t['optimizer_state_bytes'])} + saved for backward "
        f"{hb(t['saved_activation_bytes'])} = {hb(t['train_memory_bytes'])}",
    ]


RICH_ROW_LIMIT = 300  # above this, rich's layout costs seconds: plain columns instead

RIGHT = {"#", "activations", "params", "MACs", "RF"}


def render_plain_columns(report: Report, console) -> None:
    """The same cells in fixed-width columns, linear in the rows."""
    body = [cells(report, row) for row in report.rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]

    def line(values):
        return "  ".join(v.rjust(w) if col in RIGHT else v.ljust(w)
                         for v, w, col in zip(values, widths, COLUMNS)).rstrip()
    m = report.model
    out = [f"{m.name}  (input {fmt_shape(m.input)}, {len(report.rows)} rows; "
           "--depth N folds blocks)", line(COLUMNS), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    console.file.write("\n".join(out) + "\n")


def render_rich(report: Report, console) -> None:
    from rich.table import Table
    m = report.model
    if len(report.rows) > RICH_ROW_LIMIT:
        render_plain_columns(report, console)
        _footer(report, console)
        return
    from rich.markup import escape  # names and sources are data, never markup
    title = f"{escape(m.name)}  (input {fmt_shape(m.input)})"
    table = Table(title=title, caption=escape(m.source) or None, show_lines=False,
                  header_style="bold")
    for i, col in enumerate(COLUMNS):
        right = col in ("#", "activations", "params", "MACs", "RF")
        table.add_column(col, justify="right" if right else "left",
                         overflow="fold", no_wrap=col in ("layer", "kind"))
    for row in report.rows:
        table.add_row(*cells(report, row))
    console.print(table)
    _footer(report, console)


def _footer(report: Report, console) -> None:
    for line in summary_lines(report):
        console.print(line, highlight=False)
    from rich.markup import escape
    for note in _notes(report):
        console.print(escape(f"Note: {note}"), style="italic", highlight=False)
    console.print(CONVENTIONS, style="dim", highlight=False)


def _notes(report: Report) -> list[str]:
    notes = report.model.extra.get("notes", [])
    return [notes] if isinstance(notes, str) else list(notes)


def render_json(report: Report) -> str:
    return report.to_json()


CSV_FIELDS = ("index", "name", "type", "output_shape", "params", "macs", "flops",
              "activations", "receptive_field")


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in report.to_dict()["layers"]:
        writer.writerow(["x".join(map(str, row[k])) if k == "output_shape" else row[k]
                         for k in CSV_FIELDS])
    return out.getvalue()


def render_markdown(report: Report) -> str:
    lines = [f"## {report.model.name}", ""]
    if report.model.source:
        lines += [f"Source: {report.model.source}", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---:" if c in ("#", "activations", "params", "MACs", "RF")
                                else "---" for c in COLUMNS) + "|")
    for row in report.rows:
        lines.append("| " + " | ".join(c.replace("*", r"\*") for c in cells(report, row)) + " |")
    lines.append("")
    lines += [f"- {s}" for s in summary_lines(report)]
    lines += [f"- Note: {n}" for n in _notes(report)]
    lines += ["", CONVENTIONS]
    return "\n".join(lines) + "\n"
