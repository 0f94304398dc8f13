"""Render a Comparison: one column per design, each figure with its ratio."""
from __future__ import annotations

import csv
import io

from .. import sym
from .safe import csv_row, json_text, md_cell
from ..compare import FIGURES, ratio_text


def _cell(value) -> str:
    return sym.fmt_int(value)


def rows(comparison):
    for key, label, _ in FIGURES:
        values = comparison.values[key]
        cells = []
        for i, v in enumerate(values):
            text = _cell(v)
            if i:
                text += f"  [{ratio_text(comparison.ratio(key, i))}]"
            cells.append(text)
        yield label, cells


def render_rich(comparison, console, title="Comparison") -> None:
    from rich.table import Table
    from .safe import markup
    t = Table(title=markup(title), header_style="bold")
    t.add_column("figure")
    for name in comparison.names:
        t.add_column(markup(name), justify="right", overflow="fold")
    for label, cells in rows(comparison):
        t.add_row(label, *map(markup, cells))
    console.print(t)
    console.print(r"\[ratio to the first design]; MACs are multiply-accumulates, per sample.",
                  style="dim", highlight=False)


def render_markdown(comparison) -> str:
    out = ["| figure | " + " | ".join(md_cell(n) for n in comparison.names) + " |",
           "|---|" + "---:|" * len(comparison.names)]
    for label, cells in rows(comparison):
        out.append(f"| {md_cell(label)} | " + " | ".join(md_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def render_csv(comparison) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    # ratios twice: a number a spreadsheet can use, and the exact text (27/49)
    w.writerow(csv_row(["figure", *comparison.names,
                        *(f"ratio {n}" for n in comparison.names[1:]),
                        *(f"exact ratio {n}" for n in comparison.names[1:])]))
    for key, label, _ in FIGURES:
        vals = comparison.values[key]
        ratios = [comparison.ratio(key, i) for i in range(1, len(vals))]
        w.writerow(csv_row([key, *(sym.to_json(v) for v in vals), *(_number(r) for r in ratios),
                            *(ratio_text(r) for r in ratios)]))
    return buf.getvalue()


def _number(r):
    """A ratio as a plain number where it has one (a formula stays text)."""
    if r is None:
        return ""
    try:
        return f"{float(r):.6g}"
    except TypeError:
        return str(r).replace("**", "^")


def render_json(comparison) -> str:
    return json_text(comparison.as_json(), indent=2)
