"""`archcalc sweep` as text: rich (the front, the counts), JSON and CSV (every
point), markdown (the front, for docs)."""
from __future__ import annotations

from .. import sym
from .records import render as render_records
from .safe import json_text

SHOWN = ("params", "macs", "flops", "activations", "train_memory_bytes")   # beside objectives
RICH_ROWS = 40     # the front past this many rows: the first ones, and a count


def number(v) -> str:
    """A variable or a total as a person reads it: 1.21 (not 1.2100000000000002)."""
    if isinstance(v, float):
        return f"{v:.6g}"
    return sym.fmt_int(v) if isinstance(v, int) else str(v)


def columns(result) -> list[str]:
    """The totals shown: the objectives first, then the usual ones."""
    keys = [o.name for o in result.objectives if o.name not in result.points[0].variables] \
        if result.points else []
    extra = ["predicted_ms"] if result.points and "predicted_ms" in result.points[0].metrics \
        else []
    return list(dict.fromkeys([*keys, *SHOWN, *extra]))


def variable_names(result) -> list[str]:
    return list(result.points[0].variables) if result.points else []


def record(p, names, keys, batch_column: bool) -> dict:
    r = {"index": p.index, **{n: p.variables.get(n) for n in names}}
    r["input"] = "x".join(map(str, p.input))
    if batch_column:
        r["batch"] = p.batch
    r.update({k: p.metrics.get(k) for k in keys})
    r.update(feasible=p.feasible, front=p.front, cut_by=p.cut_by or "", error=p.error or "")
    return r


def to_dict(result) -> dict:
    return {
        "model": result.model, "spec": result.spec_file, "options": result.options,
        "objectives": [o.text for o in result.objectives],
        "constraints": [c.text for c in result.constraints],
        "points": [p.as_json() for p in result.points],
        "front": [p.index for p in result.front],
        "evaluated": len(result.points),
        "feasible": len(result.feasible),
        "infeasible": dict(result.infeasible),
        "errors": dict(result.errors),
        **({"fit": result.fit} if result.fit else {}),
    }


def render_json(result) -> str:
    return json_text(to_dict(result), indent=2)


def render_csv(result) -> str:
    names, keys = variable_names(result), columns(result)
    return render_records([record(p, names, keys, "batch" not in names)
                           for p in result.points], "csv")


def summary_lines(result) -> list[str]:
    n, feasible = len(result.points), len(result.feasible)
    head = f"{result.model}: {n:,} points evaluated, {feasible:,} feasible"
    if result.objectives:
        head += (f", {len(result.front):,} on the Pareto front of "
                 f"{', '.join(o.text for o in result.objectives)} (- minimised, + maximised)")
    lines = [head]
    for text, count in result.infeasible.most_common():
        lines.append(f"cut by {text}: {count:,} points")
    for text, count in result.errors.most_common(3):
        lines.append(f"cannot be analysed ({count:,} points): {text}")
    for answer in (result.fit or {}).get("answers", []):
        lines.append(fit_line(result, answer))
    return lines


def fit_line(result, answer) -> str:
    fit = result.fit
    fixed = ", ".join(f"{k}={number(v)}" for k, v in answer["fixed"].items())
    where = f" at {fixed}" if fixed else ""
    word = "largest" if fit["goal"] == "maximize" else "smallest"
    if answer["value"] is None:
        return (f"fit{where}: no value of {fit['variable']} meets "
                f"{' and '.join(fit['constraints'])}; {answer['method']}")
    p = next(q for q in result.points if q.index == answer["point"])
    totals = ", ".join(f"{k} {number(p.metrics[k])}" for k in _read(result) if k in p.metrics)
    return (f"fit{where}: the {word} {fit['variable']} = {number(answer['value'])} meets "
            f"{' and '.join(fit['constraints'])} ({totals}); by {answer['method']}")


def _read(result) -> list[str]:
    from ..sweep.constraints import ALIASES
    names = []
    for c in result.constraints:
        for n in sorted(c.names):
            names.append(ALIASES.get(n, n))
    return list(dict.fromkeys(names))


def front_rows(result, limit: int | None = None):
    """The front, ordered by the first objective."""
    rows = result.front
    if result.objectives:
        first = result.objectives[0]
        rows = sorted(rows, key=lambda p: (p.value(first.name), p.index),
                      reverse=first.maximize)
    return rows if limit is None else rows[:limit]


def shown_rows(result) -> tuple[str, list]:
    """A small sweep: every point, the front marked; a large one: its front."""
    if len(result.points) <= RICH_ROWS:
        return ("Every point (state: * on the Pareto front, or the constraint that cut it)"
                if result.objectives else "Every point evaluated"), result.points
    rows = front_rows(result)
    more = f" (first {RICH_ROWS} of {len(rows):,})" if len(rows) > RICH_ROWS else ""
    return "Pareto front" + more, rows[:RICH_ROWS]


def _cells(p, names, keys) -> list[str]:
    state = "*" if p.front else ("" if p.feasible else
                                 "cut: " + (p.cut_by or "") if p.cut_by else "error")
    return [str(p.index), *(number(p.variables[n]) for n in names),
            "x".join(map(str, p.input)), *(number(p.metrics.get(k, "")) for k in keys), state]


def render_markdown(result) -> str:
    from .safe import md_cell
    names, keys = variable_names(result), columns(result)
    head = ["#", *names, "input", *keys, "state"]
    title, rows = shown_rows(result)
    lines = [f"*{md_cell(line)}*" if i == 0 else f"- {md_cell(line)}" for i, line in
             enumerate(summary_lines(result))]
    if not rows:
        return "\n".join(lines) + "\n"
    lines += ["", f"{title}:", "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for p in rows:
        lines.append("| " + " | ".join(md_cell(c) for c in _cells(p, names, keys)) + " |")
    return "\n".join(lines) + "\n"


def render_rich(result, console) -> None:
    from rich.table import Table
    from .safe import rich_text
    lines = summary_lines(result)
    console.print(rich_text(lines[0], style="bold"))
    for line in lines[1:]:
        console.print(rich_text(line))
    names, keys = variable_names(result), columns(result)
    title, rows = shown_rows(result)
    if not rows:
        return
    heads = ["#", *names, "input", *keys, "state"]
    cells = [_cells(p, names, keys) for p in rows]
    keep = _fitting(heads, cells, console.width)
    table = Table(title=title)
    for i in keep:
        table.add_column(heads[i], justify="right", no_wrap=True)
    for row in cells:
        table.add_row(*(rich_text(row[i]) for i in keep))
    console.print(table)
    left = [heads[i] for i in range(len(heads)) if i not in keep]
    if left:
        console.print(rich_text(f"(left out to fit {console.width} columns: {', '.join(left)}; "
                                "a wider COLUMNS or --format csv shows them)"))


def _fitting(heads, cells, width: int) -> list[int]:
    """The columns that fit whole, in order of importance: the index, the
    variables and the input, the objectives, the state, then the others. A
    number is never cut short: a column that does not fit is left out."""
    need = [max(len(h), *(len(r[i]) for r in cells)) + 3 for i, h in enumerate(heads)]
    order = [0, *range(1, len(heads) - 1)]
    order.insert(min(len(order), 1 + heads.index("input") + 2), len(heads) - 1)
    keep, used = [], 1
    for i in order:
        if used + need[i] <= width or not keep:
            keep.append(i)
            used += need[i]
    return sorted(keep)
