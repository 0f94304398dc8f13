"""Any list of records (dicts with the same keys) as JSON, CSV or markdown: the
one way the commands that print a table of their own (kinds, check, explain,
bench) honour --format beside rich."""
from __future__ import annotations

import csv
import io
import json

from .safe import clean


def render(records: list[dict], fmt: str, extra: dict | None = None) -> str:
    """``extra``: fields of the whole result (totals, notes) that JSON keeps
    beside the rows; CSV and markdown append them as rows of their own."""
    if fmt == "json":
        return json.dumps({"rows": records, **(extra or {})}, indent=2, default=str)
    keys = list(records[0]) if records else []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(keys)
        for r in records:
            writer.writerow([_cell(r.get(k)) for k in keys])
        for name, value in (extra or {}).items():
            for item in (value if isinstance(value, list) else [value]):
                writer.writerow([name, _cell(item)])
        return out.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_md(r.get(k)) for k in keys) + " |" for r in records]
        for name, value in (extra or {}).items():
            lines += ["", f"**{name}**", ""]
            lines += [f"- {_md(v)}" for v in (value if isinstance(value, list) else [value])]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}")  # a bug: click checked the choice


def _cell(v) -> str:
    if isinstance(v, (list, tuple)):
        return "x".join(map(str, v))
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return "" if v is None else str(v)


def _md(v) -> str:
    return clean(_cell(v)).replace("|", r"\|").replace("*", r"\*")
