"""A sweep's scatter plot (matplotlib, loaded only here): two objectives, every
feasible point, the Pareto front drawn as a line through its points."""
from __future__ import annotations

import os

from ..errors import SpecError, require
from .safe import clean


def axes_of(result) -> tuple[str, str]:
    """The plotted pair: the first two objectives (one objective: against itself
    is no plot, so the second axis is the first variable)."""
    names = [o.name for o in result.objectives]
    if len(names) >= 2:
        return names[0], names[1]
    variables = list(result.points[0].variables) if result.points else []
    if names and variables:
        return variables[0], names[0]
    raise SpecError("a plot needs two objectives (--objectives a,b)")


def plot(result, path: str) -> None:
    matplotlib = require("matplotlib", "plot", "archcalc sweep -o FILE.png")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x_name, y_name = axes_of(result)
    feasible = result.feasible
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter([p.value(x_name) for p in feasible], [p.value(y_name) for p in feasible],
               s=14, color="#9bb3d6", label=f"feasible ({len(feasible):,})")
    cut = [p for p in result.points if not p.feasible and not p.error]
    if cut:
        ax.scatter([p.value(x_name) for p in cut], [p.value(y_name) for p in cut], s=14,
                   marker="x", color="#aaaaaa", label=f"cut by a constraint ({len(cut):,})")
    front = sorted(result.front, key=lambda p: (p.value(x_name), p.value(y_name)))
    if front:
        ax.plot([p.value(x_name) for p in front], [p.value(y_name) for p in front], "o-",
                color="#e07b39", markersize=5, label=f"Pareto front ({len(front):,})")
    ax.set_xlabel(clean(x_name).replace("$", r"\$"))
    ax.set_ylabel(clean(y_name).replace("$", r"\$"))
    ax.set_title(clean(f"{result.model}: {len(result.points):,} points, {len(cut):,} infeasible")
                 .replace("$", r"\$"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    from ..output import write_atomic
    suffix = os.path.splitext(str(path))[1].lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format=suffix, dpi=120))
    finally:
        plt.close(fig)
