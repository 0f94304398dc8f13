"""Constraints (--where, --fit) and objectives (--objectives) of a sweep.

A constraint is an expression of the spec's safe evaluator
(archcalc.spec.expr) over the totals of a point (``params``, ``macs``,
``train_memory``, ``predicted_ms``, ...) and the sweep's variables. A few
totals take options, written as keyword calls:

    train_memory(batch=64, dtype=bf16) <= 40e9
    predicted_ms(batch=8, mode=train) <= 20

Each such call is taken out before the evaluator sees the text (it becomes
a name, ``_call0``) and computed by the sweep, so the evaluator itself
stays the specs' one: no keyword calls, no code.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .. import limits
from ..analysis import DTYPES, OPTIMIZERS
from ..errors import SpecError
from ..spec.expr import evaluate_value

# what a point's totals are called in expressions, and in JSON/CSV (table's keys)
TOTALS = ("params", "trainable_params", "buffers", "macs", "flops", "backward_flops",
          "activations", "activation_bytes", "param_bytes", "saved_activation_bytes",
          "train_memory_bytes", "inference_peak_bytes", "weighted_layers", "receptive_field")
ALIASES = {"train_memory": "train_memory_bytes", "memory": "train_memory_bytes"}
# calls with options: the total they give, and the keywords each takes
CALLS = {
    "train_memory": ("train_memory_bytes", ("batch", "dtype", "optimizer")),
    "activation_bytes": ("activation_bytes", ("batch", "dtype")),
    "saved_activation_bytes": ("saved_activation_bytes", ("batch", "dtype")),
    "inference_peak_bytes": ("inference_peak_bytes", ("batch", "dtype")),
    "predicted_ms": ("predicted_ms", ("batch", "mode", "amp")),
}
WORDS = {"dtype": tuple(DTYPES), "optimizer": tuple(OPTIMIZERS), "mode": ("inference", "train"),
         "amp": ("bf16", "fp16")}


def _depth(node) -> int:
    """Nesting depth of an AST, without recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))
    return deepest


@dataclass(frozen=True)
class Call:
    placeholder: str
    function: str
    options: tuple        # ((keyword, value or expression text), ...)


@dataclass
class Constraint:
    text: str
    rewritten: str
    calls: list = field(default_factory=list)
    names: set = field(default_factory=set)

    def holds(self, env: dict) -> bool:
        try:
            value = evaluate_value(self.rewritten, env)
        except SpecError as e:
            raise SpecError(f"--where {self.text[:60]!r}: {e.message}") from None
        if not isinstance(value, bool):
            raise SpecError(f"--where {self.text[:60]!r}: gives {value!r}, not true or false; "
                            "a constraint is a comparison such as params <= 10e6")
        return value


def known_names(variables, profile: bool) -> list[str]:
    names = [*TOTALS, *ALIASES, *variables]
    return names + ["predicted_ms"] if profile else names


def parse_constraint(text: str, variables, profile: bool, option="--where") -> Constraint:
    """Parse, take out the keyword calls, and check every name, before any work."""
    where = f"{option} {text[:60]!r}"
    limits.MAX_EXPR_CHARS.check(len(text), where)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        raise SpecError(f"{where}: not a valid expression; write a comparison "
                        "such as \"params <= 10e6\" or \"train_memory(batch=64, dtype=bf16) "
                        "<= 40e9\"") from None
    except (RecursionError, MemoryError):
        raise limits.MAX_EXPR_DEPTH.exceeded(where) from None
    # the rewriting below recurses: the nesting is bounded first, as the evaluator does
    depth = _depth(tree.body)
    limits.MAX_EXPR_DEPTH.check(depth, f"{where} nests {depth} levels")
    calls: list[Call] = []

    class TakeCalls(ast.NodeTransformer):
        def visit_Call(self, node):
            if isinstance(node.func, ast.Name) and node.func.id in CALLS:
                call = _call(node, f"_call{len(calls)}", text, variables, profile, option)
                calls.append(call)
                return ast.copy_location(ast.Name(call.placeholder, ast.Load()), node)
            return self.generic_visit(node)

    tree = TakeCalls().visit(tree)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - \
        {c.placeholder for c in calls}
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Name)}
    known = known_names(variables, profile)
    for name in sorted(names - called):
        if name not in known:
            hint = "; predicted_ms needs --profile" if name == "predicted_ms" else ""
            raise SpecError(f"{option} {text[:60]!r}: unknown name {name!r} (names: "
                            f"{', '.join(known)}){hint}")
    return Constraint(text, ast.unparse(tree), calls, names - called)


def _call(node, placeholder, text, variables, profile, option) -> Call:
    name = node.func.id
    _, keywords = CALLS[name]
    where = f"{option} {text[:60]!r}: {name}()"
    if name == "predicted_ms" and not profile:
        raise SpecError(f"{where} needs a device profile: give --profile")
    if node.args:
        raise SpecError(f"{where} takes keyword options only ({', '.join(keywords)}), e.g. "
                        f"{name}(batch=64)")
    options = []
    for kw in node.keywords:
        if kw.arg not in keywords:
            raise SpecError(f"{where}: unknown option {kw.arg!r}; it takes "
                            f"{', '.join(keywords)}")
        if kw.arg in WORDS:
            word = kw.value.id if isinstance(kw.value, ast.Name) else \
                kw.value.value if isinstance(kw.value, ast.Constant) else None
            if word not in WORDS[kw.arg]:
                raise SpecError(f"{where}: {kw.arg} must be one of {', '.join(WORDS[kw.arg])}")
            options.append((kw.arg, word))
        else:   # batch: a number or an expression of the sweep's variables
            options.append((kw.arg, ast.unparse(kw.value)))
    return Call(placeholder, name, tuple(options))


@dataclass(frozen=True)
class Objective:
    name: str         # a total's key or a sweep variable
    maximize: bool

    @property
    def text(self) -> str:
        return ("+" if self.maximize else "-") + self.name


def parse_objectives(text: str, variables, profile: bool) -> list[Objective]:
    """``params,-macs,+width``: minimise by default (or with -), maximise with +."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        maximize = item.startswith("+")
        name = item.lstrip("+-").strip()
        name = ALIASES.get(name, name)
        known = known_names(variables, profile)
        if name not in known:
            hint = "; predicted_ms needs --profile" if name == "predicted_ms" else ""
            raise SpecError(f"--objectives: unknown objective {name!r} (names: "
                            f"{', '.join(known)}){hint}")
        if any(o.name == name for o in out):
            raise SpecError(f"--objectives: {name} is given twice")
        out.append(Objective(name, maximize))
    if not out:
        raise SpecError("--objectives takes names such as params,macs (+name to maximise)")
    return out
