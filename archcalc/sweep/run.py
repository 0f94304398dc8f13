"""A whole sweep: every point, the constraints, the front; and --fit."""
from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

from .. import limits
from ..errors import SpecError
from . import pareto
from .constraints import ALIASES
from .engine import Evaluator, Point, objective_key


@dataclass
class SweepResult:
    spec_file: str
    model: str
    points: list
    objectives: list
    constraints: list
    options: dict
    infeasible: Counter = field(default_factory=Counter)   # constraint text -> points cut
    errors: Counter = field(default_factory=Counter)       # error message -> points
    fit: dict | None = None
    spec_vars: tuple = ()
    evaluator: object = None      # the bound spec, for the page's per-layer tables

    @property
    def front(self) -> list[Point]:
        return [p for p in self.points if p.front]

    @property
    def feasible(self) -> list[Point]:
        return [p for p in self.points if p.feasible]


def run_sweep(evaluator: Evaluator, constraints, objectives, progress=None) -> SweepResult:
    """``progress(done, total)``: called about once a second (the CLI's counter
    on a terminal)."""
    # points that bind the spec's variables alike are evaluated one after the
    # other, so that they share a built graph whatever the order of the grids
    # (the graphs kept are few); the points keep their grid order and index
    todo = list(enumerate(evaluator.space.points()))
    graph_vars = [n for n in evaluator.space.names if n in evaluator.spec.vars]
    todo.sort(key=lambda item: tuple(item[1][n] for n in graph_vars))
    points, last, shown = [], time.monotonic(), False
    with limits.pinned():
        for i, values in todo:
            points.append(evaluator.point(i, values, constraints))
            if progress is not None and time.monotonic() - last >= 1:
                progress(len(points), len(todo))
                last, shown = time.monotonic(), True
    if shown:
        progress(len(todo), len(todo))
    points.sort(key=lambda p: p.index)
    return finish(evaluator, points, constraints, objectives)


def finish(evaluator, points, constraints, objectives, fit=None) -> SweepResult:
    """Count what was cut, refuse a sweep where no point could be built, mark the front."""
    spec = evaluator.spec
    if points and all(p.error for p in points):
        raise SpecError(f"no point of the sweep can be analysed; the first: {points[0].error}")
    result = SweepResult(spec.file, spec.name, points, objectives, constraints,
                         _options(evaluator), fit=fit, spec_vars=tuple(spec.vars),
                         evaluator=evaluator)
    for p in points:
        if p.error:
            result.errors[p.error] += 1
        elif not p.feasible:
            result.infeasible[p.cut_by] += 1
    feasible = result.feasible
    if feasible and objectives:
        key = objective_key(objectives)
        for i in pareto.front([key(p) for p in feasible]):
            feasible[i].front = True
    return result


def _options(ev: Evaluator) -> dict:
    out = {"batch": ev.batch, "dtype": ev.dtype, "optimizer": ev.optimizer,
           "grids": [g.text for g in ev.space.grids],
           "links": [f"{link.name}={link.text}" for link in ev.space.links],
           "input": ",".join(ev.space.input) if ev.space.input else None,
           "set": ev.sets}
    if ev.profile is not None:
        out.update(profile=ev.profile.summary if hasattr(ev.profile, "summary") else None,
                   mode=ev.mode, amp=ev.amp)
    return out


# -- --fit: the largest (or smallest) value of one variable under a budget ---------------

SAMPLES = 9   # evenly spaced grid values looked at to decide whether bisection is safe


def run_fit(evaluator: Evaluator, constraints, objectives, variable: str,
            maximize: bool) -> SweepResult:
    """For every combination of the other grids: the best value of ``variable``
    whose point meets the constraints. Bisection over the variable's sorted
    grid values when, over SAMPLES of them, every total the constraints read
    moves one way and feasibility changes at most once; else every value."""
    space = evaluator.space
    grid = next((g for g in space.grids if g.name == variable), None)
    if grid is None:
        raise SpecError(f"--maximize/--minimize {variable}: not a --grid variable "
                        f"(grids: {', '.join(g.name for g in space.grids)})")
    values = sorted(grid.values)
    others = [g for g in space.grids if g.name != variable]
    done: dict = {}
    answers = []

    def at(base: dict, i: int) -> Point:
        key = (tuple(base.items()), i)
        if key not in done:
            point = space.complete({**base, variable: values[i]})
            done[key] = evaluator.point(len(done), point, constraints)
        return done[key]

    with limits.pinned():
        for combo in itertools.product(*(g.values for g in others)):
            base = dict(zip((g.name for g in others), combo))
            answers.append(_fit_one(lambda i, b=base: at(b, i), len(values), constraints,
                                    maximize, variable, base))
    points = sorted(done.values(), key=lambda p: p.index)
    # no front: the points a fit looks at are a bisection's, not a design space
    return finish(evaluator, points, constraints, [], fit={
        "variable": variable, "goal": "maximize" if maximize else "minimize",
        "constraints": [c.text for c in constraints], "values": len(values),
        "answers": answers})


def _fit_one(at, n: int, constraints, maximize: bool, variable: str, base: dict) -> dict:
    samples = sorted({round(k * (n - 1) / (SAMPLES - 1)) for k in range(SAMPLES)}) \
        if n > SAMPLES else list(range(n))
    seen = [at(i) for i in samples]
    why = _not_monotone(seen, constraints, variable)
    if why is None and n > len(samples):
        method = f"bisection (over {len(samples)} sampled values the totals the " \
                 f"constraints read are monotone in {variable})"
        best = _bisect(at, n, samples, seen, maximize)
    else:
        method = f"grid (every value: {why})" if why else "grid (every value)"
        order = range(n - 1, -1, -1) if maximize else range(n)
        best = next((i for i in order if at(i).feasible), None)
    point = None if best is None else at(best)
    return {"fixed": base, "method": method,
            "value": None if point is None else point.variables[variable],
            "point": None if point is None else point.index}


def _not_monotone(points, constraints, variable) -> str | None:
    """Why bisection is unsafe here, or None."""
    if any(p.error for p in points):
        return "some values cannot be analysed"
    flips = sum(1 for a, b in zip(points, points[1:]) if a.feasible != b.feasible)
    if flips > 1:
        return f"feasibility changes {flips} times along {variable}"
    read = {ALIASES.get(n, n) for c in constraints for n in c.names}
    for name in sorted(read):
        values = [p.metrics.get(name) for p in points]
        if any(v is None for v in values):
            continue
        up = all(a <= b for a, b in zip(values, values[1:]))
        down = all(a >= b for a, b in zip(values, values[1:]))
        if not (up or down):
            return f"{name} is not monotone in {variable}"
    return None


def _bisect(at, n, samples, seen, maximize) -> int | None:
    """Feasibility changes at most once along the sorted values: find the edge
    between the two sampled values where it does, then halve that interval."""
    feasible = [p.feasible for p in seen]
    if maximize and feasible[-1]:
        return n - 1
    if not maximize and feasible[0]:
        return 0
    if not any(feasible):
        return None
    # the change lies between two neighbouring samples
    k = next(j for j in range(len(samples) - 1) if feasible[j] != feasible[j + 1])
    lo, hi = samples[k], samples[k + 1]       # at(lo).feasible != at(hi).feasible
    good_low = feasible[k]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid).feasible == good_low:
            lo = mid
        else:
            hi = mid
    return lo if good_low else hi
