"""Every command's output in the format asked for, through one function:

    render(result, fmt, console=None, **options)

"rich" prints to the console and returns None; json, csv and markdown return
the text. The renderer is chosen by the result's type (RENDERERS, keyed by the
class name so that choosing never imports torch or a renderer it does not
use); results that are not one object (a bench run, a prediction, a list of
records, lint findings, an explanation) travel in the small classes below.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BenchRun:
    spec_name: str
    results: list
    peak_source: str


@dataclass
class Prediction:
    results: list
    profile: object
    layers: bool = True     # False: totals only (--summary)


@dataclass
class Records:
    """Rows of plain values (the kinds list): json, csv or markdown."""
    rows: list
    extra: dict = field(default_factory=dict)


@dataclass
class LintResults:
    items: list             # (report, findings) per spec


@dataclass
class Explanation:
    report: object
    layer: str
    lines: list             # the steps, the heading first


def _report(report, fmt, console, columns=None, own=True):
    from . import table
    if fmt == "rich":
        return table.render_rich(report, console, columns, own=own)
    if fmt == "markdown":
        return table.render_markdown(report, columns, own=own)
    return {"json": table.render_json, "csv": table.render_csv}[fmt](report)


def _comparison(comparison, fmt, console, title="Comparison"):
    from . import compare
    if fmt == "rich":
        return compare.render_rich(comparison, console, title)
    return {"json": compare.render_json, "csv": compare.render_csv,
            "markdown": compare.render_markdown}[fmt](comparison)


def _check(result, fmt, console, all_rows=False):
    from . import check, records
    if fmt == "rich":
        return check.render_check(result, console, all_rows=all_rows)
    rows, extra = check.check_records(result)
    return records.render(rows, fmt, extra)


def _bench(run: BenchRun, fmt, console):
    from . import bench
    if fmt == "rich":
        return bench.render_rich(run.spec_name, run.results, run.peak_source, console)
    if fmt == "json":
        return bench.to_json(run.spec_name, run.results, run.peak_source)
    return {"csv": bench.to_csv, "markdown": bench.to_markdown}[fmt](run.results)


def _prediction(p: Prediction, fmt, console):
    from . import predict, records
    if fmt == "rich":
        return predict.render_rich(p.results, p.profile, console, layers=p.layers)
    if fmt == "json":
        from ..predict import to_json
        return to_json(p.results, p.profile, layers=p.layers)
    rows, extra = predict.records(p.results, p.profile, layers=p.layers)
    return records.render(rows, fmt, extra)


def _sweep(result, fmt, console):
    from . import sweep
    if fmt == "rich":
        return sweep.render_rich(result, console)
    return {"json": sweep.render_json, "csv": sweep.render_csv,
            "markdown": sweep.render_markdown}[fmt](result)


def _records(r: Records, fmt, console):
    from . import records
    return records.render(r.rows, fmt, r.extra or None)


def _lint(results: LintResults, fmt, console):
    from .. import lint
    if fmt == "json":
        from .safe import json_text
        data = [lint.to_json(report, found) for report, found in results.items]
        return json_text(data[0] if len(data) == 1 else data, indent=2)
    for report, found in results.items:
        lint.render_rich(report, found, console)
    return None


def _explanation(e: Explanation, fmt, console):
    import re
    from .safe import clean, json_text, md_cell
    if fmt == "json":
        from ..explain import find_row
        row = find_row(e.report, e.layer)
        return json_text({"layer": row.name, "row": row.as_json(), "steps": e.lines}, indent=2)
    if fmt == "markdown":
        body = [clean(line) for line in e.lines[1:]]
        # a fence longer than any run of backticks in the text: a name cannot close it
        fence = "`" * max(3, 1 + max((len(r) for b in body for r in re.findall("`+", b)),
                                     default=0))
        return f"### {md_cell(e.lines[0])}\n\n{fence}\n" + "\n".join(body) + f"\n{fence}"
    return "\n".join(clean(line) for line in e.lines)


# the result's class name -> its renderer
RENDERERS = {
    "Report": _report, "Comparison": _comparison, "CheckResult": _check,
    "BenchRun": _bench, "Prediction": _prediction, "SweepResult": _sweep,
    "Records": _records, "LintResults": _lint, "Explanation": _explanation,
}


def render(result, fmt: str, console=None, **options) -> str | None:
    """The result in fmt: the text, or None once "rich" has printed it on console."""
    for cls in type(result).__mro__:
        if cls.__name__ in RENDERERS:
            return RENDERERS[cls.__name__](result, fmt, console, **options)
    raise TypeError(f"no renderer for {type(result).__name__}")
