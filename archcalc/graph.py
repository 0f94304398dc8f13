"""The graph the engine walks: a Spec with its expressions and kinds resolved.

Nodes: ``Layer`` (one table row: a kind with its arguments, maybe with a
fused batch norm and activation), ``Sequence`` (layers in order). The engine
walks nodes recursively, so branch and merge nodes slot in beside these.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

from . import sym
from .errors import SpecError
from .layers import REGISTRY, lookup
from .layers.activation import ACTIVATIONS
from .layers.base import Arg, Kind
from .spec.expr import UNBOUND, evaluate
from .spec.loader import RawLayer, Spec

ROW_KEYS = {"name", "repeat", "kind"}
FUSED_KEYS = {"batch_norm", "activation"}


@dataclass(frozen=True)
class Op:
    kind: Kind
    args: SimpleNamespace


@dataclass
class Layer:
    """One row of the table: its main op, then fused ops (batch norm, activation)."""
    name: str
    ops: tuple[Op, ...]
    file: str | None = None
    line: int | None = None
    label: str = ""        # how errors name it: its name, or "#2 (conv1)" when unnamed

    @property
    def kind(self) -> Kind:
        return self.ops[0].kind

    @property
    def type(self) -> str:
        return "+".join(op.kind.name for op in self.ops)


@dataclass
class Sequence:
    items: list
    name: str = ""


@dataclass
class Model:
    name: str
    source: str
    file: str
    input: tuple
    env: dict
    body: Sequence
    extra: dict = field(default_factory=dict)


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): the --input option."""
    parts = re.split(r"\s*[x,×]\s*", text.strip())
    if len(parts) not in (1, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SpecError(f"--input takes CxHxW with positive integers, e.g. 3x224x224. "
                        f"Received: {text!r}")
    return tuple(int(p) for p in parts)


def resolve_env(spec: Spec, overrides: dict | None) -> dict:
    """[vars] in order: ints, expressions of earlier ones, or "?" (a symbol)."""
    overrides = dict(overrides or {})
    env: dict = {}
    for name, value in spec.vars.items():
        if name in overrides:
            env[name] = overrides.pop(name)
        elif value == UNBOUND:
            env[name] = sym.symbol(name)
        else:
            try:
                env[name] = evaluate(value, env) if isinstance(value, str) else value
            except SpecError as e:
                raise SpecError(f"[vars] {name}: {e.message}", file=spec.file) from None
    for name, value in overrides.items():
        known = ", ".join(spec.vars) or "none"
        raise SpecError(f"--set {name}={value}: the spec has no variable {name!r} "
                        f"(its variables: {known})", file=spec.file)
    return env


def build_graph(spec: Spec, *, variables: dict | None = None,
                input: tuple | str | None = None) -> Model:
    env = resolve_env(spec, variables)
    if isinstance(input, str):
        input = parse_shape(input)
    shape = input if input is not None else tuple(
        Arg("int", min=1).read("model", "input", v, env) for v in spec.input)
    builder = _Builder(spec, env)
    body = Sequence([layer for raw in spec.layers for layer in builder.layers(raw)])
    return Model(spec.name, spec.source, spec.file, tuple(shape), env, body, dict(spec.extra))


class _Builder:
    def __init__(self, spec: Spec, env: dict):
        self.spec = spec
        self.env = env
        self.count = 0
        self.per_kind: dict[str, int] = {}
        self.defaults = {}
        for key, table in spec.defaults.items():
            try:
                self.defaults[lookup(key).name] = dict(table)
            except SpecError as e:
                raise e.at(file=spec.file) from None

    def layers(self, raw: RawLayer):
        self.count += 1
        label = raw.table.get("name") or f"#{self.count}"
        try:
            for layer in self._layers(raw.table):
                layer.file, layer.line = raw.file, raw.line
                layer.label = layer.name if "name" in raw.table else f"{label} ({layer.name})"
                yield layer
        except SpecError as e:
            raise e.at(file=raw.file, line=raw.line, layer=str(label)) from None

    def _layers(self, table):
        table = dict(table)
        kind, primary = self._kind(table)
        args = {**self.defaults.get(kind.name, {}), **_args(table)}
        if primary is not None:
            args[kind.primary] = primary
        fused = {k: args.pop(k) for k in FUSED_KEYS if k in args}
        if fused and not kind.fusable:
            raise SpecError(f"{kind.name} takes no {' or '.join(sorted(fused))}; "
                            "only conv and fc rows fuse a batch norm or an activation")
        ops = [Op(kind, kind.read_args(args, self.env))] + self._fused(fused)
        repeat = Arg("int", 1, min=1, numeric=True).read(kind.name, "repeat",
                                                         table.get("repeat", 1), self.env)
        name = table.get("name")
        if name is not None and not isinstance(name, str):
            raise SpecError(f"name must be a string. Received: name={name!r}")
        for i in range(repeat):
            if name is None:
                n = self.per_kind.get(kind.name, 0) + 1
                self.per_kind[kind.name] = n
                row_name = f"{kind.name}{n}"
            else:
                row_name = f"{name}_{i + 1}" if repeat > 1 else name
            yield Layer(row_name, tuple(ops), None, None)

    def _kind(self, table):
        if "kind" in table:
            kind = lookup(str(table["kind"]))
            return kind, None
        # batch_norm is a kind and a fused flag: a flag beside another kind
        keys = [k for k in table if k in REGISTRY and k not in FUSED_KEYS] or \
            [k for k in table if k in REGISTRY]
        if len(keys) > 1:
            raise SpecError(f"names two layer kinds ({', '.join(keys)}); one table is one layer")
        if not keys:
            others = [k for k in table if k not in ROW_KEYS | FUSED_KEYS
                      and not any(k in kd.args for kd in REGISTRY.values())]
            if others:
                lookup(others[0])  # raises: unknown kind, with close matches
            raise SpecError("has no layer kind: write e.g. {conv = 64, kernel = 3} or "
                            "kind = \"conv\"; `archcalc kinds` lists the kinds")
        key = keys[0]
        kind = REGISTRY[key]
        value = table.pop(key)
        if kind.primary is None:
            if value is not True:
                raise SpecError(f"{kind.name} takes no value of its own; write "
                                f"{{{key} = true}}. Received: {key}={value!r}")
            return kind, None
        if value is True:
            return kind, None  # the primary argument keeps its default
        return kind, value

    def _fused(self, fused):
        ops = []
        if fused.get("batch_norm", False):
            if fused["batch_norm"] is not True:
                raise SpecError(f"batch_norm takes true or false. "
                                f"Received: batch_norm={fused['batch_norm']!r}")
            bn = lookup("batch_norm")
            ops.append(Op(bn, bn.read_args(self.defaults.get("batch_norm", {}), self.env)))
        act = fused.get("activation")
        if act is not None and act is not False:
            if act not in ACTIVATIONS:
                raise SpecError(f"activation takes one of {', '.join(ACTIVATIONS)}. "
                                f"Received: activation={act!r}")
            kind = lookup(act)
            ops.append(Op(kind, kind.read_args(self.defaults.get(kind.name, {}), self.env)))
        return ops


def _args(table):
    return {k: v for k, v in table.items() if k not in ROW_KEYS}


def walk(node):
    """Every Layer under a node, in order."""
    if isinstance(node, Layer):
        yield node
    else:
        for item in node.items:
            yield from walk(item)
