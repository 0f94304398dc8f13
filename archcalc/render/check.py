"""Render a CheckResult: per row and in total, calculated vs measured."""
from __future__ import annotations

from .. import sym
from ..layers.base import fmt_shape

MARK = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]-[/]"}
ASCII_MARK = {True: "[green]ok[/]", False: "[red]X[/]", None: "[dim]-[/]"}


def _marks(console) -> dict:
    """✓ and ✗ where the output encoding has them (not under PYTHONIOENCODING=ascii)."""
    return MARK if (console.encoding or "").lower().startswith("utf") else ASCII_MARK


def _value(v) -> str:
    if v is None:
        return "not measured"
    if isinstance(v, tuple):
        return fmt_shape(v)
    return sym.fmt_int(v) if isinstance(v, int) else str(v)


def render_check(result, console, all_rows: bool = False) -> None:
    from rich.table import Table
    r = result.report
    mark = _marks(console)
    from .safe import markup
    table = Table(title=f"{markup(r.model.name)}: calculated vs measured per sample, MACs x batch "
                        f"(batch {r.batch}, "
                        f"{result.measured.device})", header_style="bold")
    for col in ("#", "layer", "kind", "shape", "params", "MACs x batch (fvcore)", ""):
        table.add_column(col, overflow="fold")
    shown = 0
    for i, row in enumerate(result.rows, 1):
        if not all_rows and row.ok and len(result.rows) > 60:
            continue  # large nets: show the failures (and --all-rows for everything)
        cells = {c.what: c for c in row.checks}
        table.add_row(str(i), markup(row.name), markup(row.type),
                      *(_pair(cells.get(k)) for k in ("shape", "params", "MACs")),
                      mark[row.ok])
        shown += 1
    if shown:
        console.print(table)
    if len(result.rows) > shown:
        console.print(f"{len(result.rows) - shown} rows agree on every measured figure "
                      "(--all-rows shows them).", highlight=False)
    totals = Table(title="Totals", header_style="bold")
    for col in ("figure", "calculated", "measured", "rel. error", "tolerance", ""):
        totals.add_column(col, justify="right" if col not in ("figure",) else "left")
    for c in result.totals:
        err = "-" if c.error is None else f"{c.error:.2%}"
        totals.add_row(c.what, _value(c.calculated), _value(c.measured), err,
                       "exact" if not c.tolerance else f"{c.tolerance:.0%}", mark[c.ok])
    console.print(totals)
    for note in result.notes:
        console.print(markup(f"Note: {note}"), style="italic", highlight=False)
    console.print("[green]all figures agree[/]" if result.ok else
                  "[red]some figures disagree[/]")


def _pair(check) -> str:
    if check is None:
        return ""
    if check.ok is None:
        return _value(check.calculated) + " / [dim]not measured[/]"
    if check.ok:
        return _value(check.calculated)
    return f"[red]{_value(check.calculated)} vs {_value(check.measured)}[/]"


def check_records(result) -> tuple[list, dict]:
    """The check as records: one per row (each figure calculated and measured)
    and the totals and notes beside them, for --format json|csv|markdown."""
    rows = []
    for row in result.rows:
        record = {"layer": row.name, "type": row.type, "ok": row.ok}
        for c in row.checks:
            record[f"{c.what} calculated"] = _plain(c.calculated)
            record[f"{c.what} measured"] = _plain(c.measured)
        rows.append(record)
    keys = []
    for r in rows:  # one set of columns for every row (merge rows check fewer figures)
        keys += [k for k in r if k not in keys]
    rows = [{k: r.get(k) for k in keys} for r in rows]
    totals = [{"figure": c.what, "calculated": _plain(c.calculated), "measured": _plain(c.measured),
               "relative_error": c.error, "tolerance": c.tolerance, "ok": c.ok}
              for c in result.totals]
    return rows, {"totals": totals, "notes": list(result.notes), "ok": result.ok}


def _plain(v):
    if isinstance(v, tuple):
        return list(v)
    return v
