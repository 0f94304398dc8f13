"""Any list of records (dicts with the same keys) as JSON, CSV or markdown: the
one way the commands that print a table of their own (kinds, check, explain,
bench) honour --format beside rich."""
from __future__ import annotations

import csv
import io

from .safe import csv_row, json_text, md_cell


def render(records: list[dict], fmt: str, extra: dict | None = None) -> str:
    """``extra``: fields of the whole result (totals, notes) that JSON keeps
    beside the rows; CSV and markdown append them as rows of their own."""
    if fmt == "json":
        return json_text({"rows": records, **(extra or {})}, indent=2)
    keys = list(records[0]) if records else []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(csv_row(keys))
        for r in records:
            writer.writerow(csv_row(_cell(r.get(k)) for k in keys))
        for name, value in (extra or {}).items():
            for item in (value if isinstance(value, list) else [value]):
                writer.writerow(csv_row([name, _cell(item)]))
        return out.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(map(md_cell, keys)) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_md(r.get(k)) for k in keys) + " |" for r in records]
        for name, value in (extra or {}).items():
            lines += ["", f"**{md_cell(name)}**", ""]
            lines += [f"- {_md(v)}" for v in (value if isinstance(value, list) else [value])]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}")  # a bug: click checked the choice


def _cell(v):
    """A value as one cell; numbers stay numbers (csv_cell keeps them)."""
    if isinstance(v, (list, tuple)):
        return "x".join(map(str, v))
    if isinstance(v, dict):
        return json_text(v)
    return v


def _md(v) -> str:
    v = _cell(v)
    return md_cell("" if v is None else v)
