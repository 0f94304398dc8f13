"""Evaluate the points of a sweep: bind, build, analyse, constrain.

The spec is read once. A point binds its variables into the spec's [vars]
(as --set does) and its input (as --input does); the analysis is
archcalc.analysis.analyze, the engine `archcalc table` runs, so every figure
of a sweep is the table's figure of the same bound spec.

Speed, without a second engine: the built graph depends on the variables
only, so points that differ only in their input, batch or dtype share one
graph (the input is swapped in); totals are memoised by (bound variables,
input, batch, dtype, optimizer), so a point that make_divisible or ceil maps
onto another's variables, or a constraint asking for the totals the sweep
computes anyway, costs a lookup.
"""
from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from dataclasses import dataclass, field

from ..analysis import analyze
from ..errors import SpecError
from ..graph import build_graph, resolve_env
from ..spec.expr import evaluate
from .constraints import ALIASES, TOTALS, Constraint, Objective


@dataclass
class Point:
    index: int
    variables: dict
    input: tuple = ()
    batch: int = 1
    metrics: dict = field(default_factory=dict)
    feasible: bool = False
    cut_by: str | None = None       # the first constraint the point fails
    error: str | None = None        # the spec cannot be built at this point
    front: bool = False

    def value(self, name: str):
        return self.metrics[name] if name in self.metrics else self.variables[name]

    def as_json(self) -> dict:
        return {"index": self.index, "variables": self.variables, "input": list(self.input),
                "batch": self.batch, "totals": self.metrics, "feasible": self.feasible,
                "cut_by": self.cut_by, "error": self.error, "front": self.front}


class Evaluator:
    """A spec bound to the sweep's options; ``point()`` evaluates one point."""

    GRAPHS = 64          # built graphs kept (a ResNet-50 graph is ~1 MB)

    def __init__(self, spec, space, *, sets=None, batch=1, dtype="fp32", optimizer="adam",
                 profile=None, mode="inference", amp=None):
        self.spec, self.space = spec, space
        self.sets = dict(sets or {})
        self.batch, self.dtype, self.optimizer = batch, dtype, optimizer
        self.profile, self.mode, self.amp = profile, mode, amp
        self.graphs: OrderedDict = OrderedDict()
        self.read: set | None = None     # names the layers mention (graph_key)
        self.built = 0                   # graphs built (the benchmark prints it)
        self.totals: dict = {}
        self.times: dict = {}
        self.batch_is_variable = "batch" in space.names and "batch" not in spec.vars
        self._check_names()

    def _check_names(self):
        for name in self.space.names:
            if name in self.spec.vars or (name == "batch" and self.batch_is_variable):
                continue
            used = any(name in _reads(link.text) for link in self.space.links) or \
                any(name in _reads(part) for part in self.space.input or ())
            if not used:
                known = ", ".join(self.spec.vars) or "none"
                raise SpecError(f"the sweep variable {name!r} is not a variable of the spec "
                                f"(its variables: {known}), nor batch, nor read by a --link or "
                                "--input", file=self.spec.file)
        for name in self.sets:
            if name in self.space.names:
                raise SpecError(f"--set {name} and a sweep variable {name}: give it once")

    # -- one point ---------------------------------------------------------------
    def bind(self, point: dict) -> tuple[dict, tuple | None, int]:
        """(the spec's variables, the input shape or None, the batch) of a point."""
        variables = {**self.sets, **{k: v for k, v in point.items() if k in self.spec.vars}}
        batch = self.batch
        if self.batch_is_variable:
            batch = point["batch"]
            if isinstance(batch, float) and batch == int(batch):
                batch = int(batch)
            if not isinstance(batch, int) or batch < 1:
                raise SpecError(f"batch = {batch!r}: a batch is a positive integer")
        return variables, self.space.input_shape(point), batch

    def graph(self, variables: dict, shape):
        key = self.graph_key(variables)
        model = self.graphs.get(key)
        if model is None:
            model = build_graph(self.spec, variables=variables)
            self.built += 1
            self.graphs[key] = model
            if len(self.graphs) > self.GRAPHS:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        if shape is not None and tuple(shape) != tuple(model.input):
            model = dataclasses.replace(model, input=tuple(shape))
        return model, key

    def graph_key(self, variables: dict) -> tuple:
        """What the built graph depends on: the resolved [vars] that the layers,
        blocks, defaults or input mention. width = 0.98 and 1.0 give the same
        graph when every layer reads make_divisible(64 * width, 8), not width."""
        if self.read is None:
            self.read = _mentioned(self.spec)
        try:
            env = resolve_env(self.spec, variables)
        except SpecError:
            return ("unresolved", tuple(sorted(variables.items())))
        return tuple((k, v) for k, v in env.items() if k in self.read)

    def report(self, variables, shape, batch, dtype=None, optimizer=None):
        """The full report of a bound point (the table's), for the page's tables."""
        model, _ = self.graph(variables, shape)
        return analyze(model, batch=batch, dtype=dtype or self.dtype,
                       optimizer=optimizer or self.optimizer)

    def totals_at(self, variables, shape, batch, dtype, optimizer) -> dict:
        model, key = self.graph(variables, shape)
        memo = (key, tuple(model.input), batch, dtype, optimizer)
        found = self.totals.get(memo)
        if found is None:
            report = analyze(model, batch=batch, dtype=dtype, optimizer=optimizer)
            if report.symbolic:
                raise SpecError(f"the spec leaves {', '.join(report.free_symbols)} unbound: "
                                "add it to --grid or bind it with --set", file=self.spec.file)
            found = {k: report.totals[k] for k in TOTALS if k in report.totals}
            found["input"] = tuple(model.input)
            self.totals[memo] = found
            if self.profile is not None and dtype == (self.amp or "fp32"):
                self._remember_time(memo, report)
        return found

    def predicted_ms(self, variables, shape, batch, mode=None, amp=None) -> float:
        from ..predict import Predictor
        mode, amp = mode or self.mode, amp or self.amp
        model, key = self.graph(variables, shape)
        memo = (key, tuple(model.input), batch, mode, amp)
        if memo not in self.times:
            report = analyze(model, batch=batch, dtype=amp or "fp32")
            self.times[memo] = Predictor(self.profile, mode, amp).predict(report).step_ms
        return self.times[memo]

    def _remember_time(self, memo, report):
        """The time at the sweep's own mode, from the report just made."""
        from ..predict import Predictor
        key, shape, batch, _, _ = memo
        tkey = (key, shape, batch, self.mode, self.amp)
        if tkey not in self.times:
            self.times[tkey] = Predictor(self.profile, self.mode, self.amp) \
                .predict(report).step_ms

    def point(self, index: int, point: dict, constraints: list[Constraint]) -> Point:
        out = Point(index, dict(point))
        try:
            variables, shape, batch = self.bind(point)
            out.batch = batch
            totals = self.totals_at(variables, shape, batch, self.dtype, self.optimizer)
            out.input = totals["input"]
            out.metrics = {k: v for k, v in totals.items() if k != "input"}
            if self.profile is not None:
                out.metrics["predicted_ms"] = round(
                    self.predicted_ms(variables, out.input, batch), 6)
            env = {**point, **out.metrics,
                   **{alias: out.metrics[key] for alias, key in ALIASES.items()
                      if key in out.metrics}}
            out.feasible = True
            for c in constraints:
                for call in c.calls:
                    env[call.placeholder] = self.call(call, variables, out.input, batch, point)
                if not c.holds(env):
                    out.feasible, out.cut_by = False, c.text
                    break
        except SpecError as e:
            out.feasible, out.error = False, str(e)
        return out

    def call(self, call, variables, shape, batch, point):
        options = dict(call.options)
        if "batch" in options:
            batch = evaluate(options["batch"], point)
            if not isinstance(batch, int) or batch < 1:
                raise SpecError(f"{call.function}(batch={options['batch']}): a batch is a "
                                "positive integer")
        if call.function == "predicted_ms":
            return self.predicted_ms(variables, shape, batch, options.get("mode"),
                                     options.get("amp"))
        key = {"train_memory": "train_memory_bytes"}.get(call.function, call.function)
        totals = self.totals_at(variables, shape, batch, options.get("dtype", self.dtype),
                                options.get("optimizer", self.optimizer))
        if key not in totals:
            raise SpecError(f"{call.function}() is not known for this spec")
        return totals[key]


_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def _mentioned(spec) -> set:
    """Every identifier in any string of the layers, blocks, defaults and input
    (a superset of the variables they read, name templates included)."""
    found: set = set()
    stack = [[r.table for r in spec.layers], dict(spec.blocks), dict(spec.defaults),
             list(spec.input)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.update(_IDENTIFIER.findall(item))
        elif isinstance(item, dict) or hasattr(item, "items"):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def _reads(text: str) -> set:
    from .space import names_in
    return names_in(text)


def objective_key(objectives: list[Objective]):
    """A point's objective vector, every component to be minimised."""
    def key(p: Point) -> tuple:
        return tuple(-p.value(o.name) if o.maximize else p.value(o.name) for o in objectives)
    return key
