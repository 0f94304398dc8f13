"""Per-layer bars: activations and params (log scale), MACs on a second panel.
The VGG-16 plot shows the lecture's point at a glance: memory sits in the
early convs, parameters in the first fully connected layer."""
from __future__ import annotations

import os

from .. import sym
from ..errors import SpecError, require
from ..output import shown

TITLES = ("Activations and parameters per layer (log scale)", "MACs per layer (log scale)")
ROW_LIMIT = 60  # more bars than this are unreadable: fold blocks into one bar each


def auto_depth(series, limit: int = ROW_LIMIT) -> int | None:
    """The deepest block level at which every net has at most ``limit`` bars;
    None when they all fit unfolded (1 when nothing does)."""
    from ..analysis import fold
    if all(len(rows) <= limit for rows in series):
        return None
    deepest = max(len(r.path) for rows in series for r in rows)
    for depth in range(deepest - 1, 0, -1):
        if all(len(fold(rows, depth)) <= limit for rows in series):
            return depth
    return 1


def _label(text: str) -> str:
    """A layer name as matplotlib text: no mathtext ($), no control characters."""
    from .safe import clean
    return clean(text).replace("$", r"\$")


def plot(reports, path: str, depth: int | None = None) -> int | None:
    """Draw the bars into ``path`` (.png, .svg or .pdf by its suffix). Returns the
    depth the bars were folded to (--depth, or chosen past ROW_LIMIT rows)."""
    matplotlib = require("matplotlib", "plot", "archcalc plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..analysis import fold
    for r in reports:
        if r.symbolic:
            raise SpecError("cannot plot formulas: bind the unbound variables with --set",
                            file=r.model.file)
    if depth is None:
        depth = auto_depth([r.rows for r in reports])
    series = [fold(r.rows, depth) if depth else r.rows for r in reports]
    n = max(len(s) for s in series)
    k = len(reports)
    width = 0.8 / (2 * k)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(10, 0.45 * n), 8), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (report, rows) in enumerate(zip(reports, series)):
        xs = range(len(rows))
        c1, c2 = colors[(2 * i) % len(colors)], colors[(2 * i + 1) % len(colors)]
        label = f" ({_label(report.model.name)})" if k > 1 else ""
        top.bar([x + (2 * i) * width - 0.4 + width / 2 for x in xs],
                [max(r.activations, 0) for r in rows], width, color=c1,
                label="activations" + label)
        top.bar([x + (2 * i + 1) * width - 0.4 + width / 2 for x in xs],
                [max(r.params, 0) for r in rows], width, color=c2, label="params" + label)
        bottom.bar([x + i * 2 * width - 0.4 + width for x in xs], [r.macs for r in rows],
                   2 * width, color=c1, label="MACs" + label)
    for ax, title in zip((top, bottom), TITLES):
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    names = [_label(r.name) for r in series[0]]
    bottom.set_xticks(range(len(names)))
    bottom.set_xticklabels(names if k == 1 else names, rotation=75, fontsize=7, ha="right")
    summary = "; ".join(
        f"{_label(r.model.name)}: {sym.human(r.totals['params'])} params, {sym.human(r.totals['macs'])} "
        f"MACs, {sym.human(r.totals['activations'])} activations"
        + (f", {len(r.outputs)} outputs" if r.multi_output else "") for r in reports)
    fig.suptitle(summary, fontsize=10)
    fig.tight_layout()
    from ..output import write_atomic
    # savefig into the atomic writer's file object: the format from the suffix
    suffix = os.path.splitext(str(path))[1].lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format=suffix))
    except ValueError as e:
        raise SpecError(f"cannot write {shown(path)}: {e}") from None
    finally:
        plt.close(fig)
    return depth
