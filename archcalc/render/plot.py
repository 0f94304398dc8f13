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
MAX_BARS = 400  # even at a --depth asked for: past this, runs of rows share a bar


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


def figure(reports, depth: int | None = None):
    """The matplotlib figure and the depth its bars were folded to (--depth, or
    chosen past ROW_LIMIT rows). Several nets stand side by side, one column
    of panels each, every column under its own net's layer names: nets of
    other depths never share an axis of layer indices."""
    matplotlib = require("matplotlib", "plot", "archcalc plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..analysis import fold
    for r in reports:
        if r.symbolic:
            raise SpecError("cannot plot formulas: bind the unbound variables with --set",
                            file=r.model.file)
    auto = depth is None
    if depth is None:
        depth = auto_depth([r.rows for r in reports])
    series = [fold(r.rows, depth) if depth else r.rows for r in reports]
    # a net with no blocks to fold (10,000 plain rows) would draw a figure
    # 4,500 inches wide: runs of consecutive rows share a bar instead
    series = [_runs(rows, ROW_LIMIT if auto else MAX_BARS) for rows in series]
    bars = [max(len(rows), 1) for rows in series]
    # one bar as wide in every column: the columns' widths follow their bar counts
    fig, axes = plt.subplots(2, len(reports), figsize=(max(10, 0.45 * sum(bars) + len(bars)), 8),
                             sharex="col", sharey="row", squeeze=False,
                             gridspec_kw={"width_ratios": bars})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for column, (report, rows) in enumerate(zip(reports, series)):
        top, bottom = axes[0][column], axes[1][column]
        _draw_net(top, bottom, rows, colors)
        if len(reports) > 1:
            name = _label(report.model.name)
            top.set_title(f"{name}: activations and params per layer (log)", fontsize=10)
            bottom.set_title(f"{name}: MACs per layer (log)", fontsize=10)
        else:
            top.set_title(TITLES[0])
            bottom.set_title(TITLES[1])
        if column == 0:
            top.legend(loc="upper right", fontsize="small")
            bottom.legend(loc="upper right", fontsize="small")
    summary = "; ".join(
        f"{_label(r.model.name)}: {sym.human(r.totals['params'])} params, {sym.human(r.totals['macs'])} "
        f"MACs, {sym.human(r.totals['activations'])} activations"
        + (f", {len(r.outputs)} outputs" if r.multi_output else "") for r in reports)
    fig.suptitle(summary, fontsize=10)
    fig.tight_layout()
    return fig, depth


def _runs(rows, limit: int) -> list:
    """At most ``limit`` bars: runs of consecutive rows summed into one bar
    each, named by their first and last rows; rows as they are when they fit."""
    if len(rows) <= limit:
        return rows
    from types import SimpleNamespace
    size = -(-len(rows) // limit)
    out = []
    for start in range(0, len(rows), size):
        run = rows[start:start + size]
        out.append(SimpleNamespace(
            name=f"{run[0].name} .. {run[-1].name}" if len(run) > 1 else run[0].name,
            activations=sum(r.activations for r in run if getattr(r, "allocates", True)),
            params=sum(r.params for r in run), macs=sum(r.macs for r in run)))
    return out


def _draw_net(top, bottom, rows, colors):
    """One net's column: activations and params side by side on the top panel,
    MACs on the bottom one, its own layer names under both."""
    xs = range(len(rows))
    top.bar([x - 0.2 for x in xs], [max(r.activations, 0) for r in rows], 0.4,
            color=colors[0], label="activations")
    top.bar([x + 0.2 for x in xs], [max(r.params, 0) for r in rows], 0.4, color=colors[1],
            label="params")
    bottom.bar(list(xs), [max(r.macs, 0) for r in rows], 0.8, color=colors[2], label="MACs")
    for ax in (top, bottom):
        ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    bottom.set_xticks(list(xs))
    bottom.set_xticklabels([_label(r.name) for r in rows], rotation=75, fontsize=7, ha="right")
    bottom.set_xlim(-0.6, max(len(rows), 1) - 0.4)


def plot(reports, path: str, depth: int | None = None) -> int | None:
    """Draw the bars into ``path`` (.png, .svg or .pdf by its suffix). Returns the
    depth the bars were folded to (--depth, or chosen past ROW_LIMIT rows)."""
    fig, depth = figure(reports, depth)
    import matplotlib.pyplot as plt   # figure() asked for matplotlib (a clear error without)
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
