"""`archcalc sweep`: a design space evaluated from the spec, its constraints
and its Pareto front, pure Python like `table`.

    from archcalc.sweep import sweep
    result = sweep("specs/resnet50.toml", ["batch=1:4096"], dtype="bf16",
                   fit="train_memory <= 16e9", maximize="batch")

Importing this package is cheap (the command, archcalc/cli/sweep_cmd.py,
imports it when it runs); the engine loads on the first sweep.
"""
from __future__ import annotations


def sweep(spec, grids, *, links=(), where=(), objectives="params,macs", input=None,
          sets=None, batch=1, dtype="fp32", optimizer="adam", profile=None,
          mode="inference", amp=None, fit=None, maximize=None, minimize=None, progress=None):
    """The Python API of `archcalc sweep` (a SweepResult): ``spec`` a Spec or a
    path, ``grids`` texts such as "C=32,48,64", ``links`` "NAME=EXPR" texts,
    ``where`` constraint texts; with ``fit`` (a constraint) and ``maximize`` or
    ``minimize`` (a grid variable), the best value of that variable under it;
    ``progress(done, total)`` is called about once a second."""
    from ..errors import SpecError
    from .constraints import parse_constraint, parse_objectives
    from .engine import Evaluator
    from .run import run_fit, run_sweep
    from .space import Space, parse_grid, parse_input, parse_link
    if isinstance(spec, str):
        from ..spec.loader import load
        spec = load(spec)
    space = Space([parse_grid(g) for g in grids], [parse_link(k) for k in links],
                  parse_input(input))
    space.check()
    evaluator = Evaluator(spec, space, sets=sets, batch=batch, dtype=dtype,
                          optimizer=optimizer, profile=profile, mode=mode, amp=amp)
    variables = space.names
    has_profile = profile is not None
    constraints = [parse_constraint(w, variables, has_profile) for w in where]
    goals = parse_objectives(objectives, variables, has_profile) if objectives else []
    if fit is not None or maximize or minimize:
        if fit is None or bool(maximize) == bool(minimize):
            raise SpecError("--fit CONSTRAINT goes with one of --maximize VAR or --minimize VAR")
        constraints.append(parse_constraint(fit, variables, has_profile, "--fit"))
        return run_fit(evaluator, constraints, goals, maximize or minimize, bool(maximize))
    return run_sweep(evaluator, constraints, goals, progress)


__all__ = ["sweep"]
