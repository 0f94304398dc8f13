"""Spec -> TOML: the text of a spec, written as a person would write it.

``to_toml(spec)`` writes any loaded Spec back ([model] with its layers,
[vars], [defaults.KIND], [blocks.NAME]); ``write`` is what `archcalc import`
uses on the layer entries it recovered: it first folds them (``fold``):
levels of the same structure become one ``[blocks.NAME]`` whose ``args`` are
what differs between them (channels, strides; a value that is a multiple of
another becomes ``"4*C"``), runs of identical block calls become one entry
with ``repeat`` (named ``"{i + 1}"``, as nn.Sequential numbers them), and
arguments most rows of a kind share move to ``[defaults.KIND]``.

TOML allows no line break inside an inline table except within an array, so
a structure's layer list opens on its table's line and each nested row sits
on a line of its own; keys that hold lists come last.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter

from ..layers import REGISTRY
from ..layers.base import REQUIRED

STRUCTURE_KEYS = ("layers", "concat", "split", "residual", "scale", "dense", "shortcut")
PRIVATE = "_"   # keys starting with it are the importer's annotations


# --------------------------------------------------------------------------
# values


def value(v) -> str:
    """One TOML value: strings JSON-escaped (valid TOML basic strings), floats
    always with a point or an exponent."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"a spec holds finite numbers; received {v}")
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return inline(v)
    raise TypeError(f"no TOML form for {type(v).__name__}")


def key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _is_table_list(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, (dict, list)) for x in v)


def inline(table: dict, indent: int = 0) -> str:
    """An inline table; lists of tables (a structure's layers) open a nested
    block of lines."""
    plain = [(k, v) for k, v in table.items() if not k.startswith(PRIVATE)
             and not _is_table_list(v)]
    nested = [(k, v) for k, v in table.items() if not k.startswith(PRIVATE)
              and _is_table_list(v)]
    parts = [f"{key(k)} = {value(v)}" for k, v in plain]
    if not nested:
        return "{" + ", ".join(parts) + "}"
    text = "{" + ", ".join(parts)
    for i, (k, v) in enumerate(nested):
        sep = ", " if (parts or i) else ""
        text += f"{sep}{key(k)} = " + array(v, indent)
    return text + "}"


def array(items: list, indent: int) -> str:
    """A list of tables (or of branches: lists of tables), one per line."""
    pad = "  " * (indent + 1)
    lines = []
    for item in items:
        if isinstance(item, dict):
            lines.append(pad + inline(item, indent + 1) + ",")
        elif not item:
            lines.append(pad + "[],")
        else:
            lines.append(pad + array(item, indent + 1) + ",")
    return "[\n" + "\n".join(lines) + "\n" + "  " * indent + "]"


# --------------------------------------------------------------------------
# documents


def document(model: dict, layers: list, vars_: dict | None = None,
             defaults: dict | None = None, blocks: dict | None = None,
             comment: str = "") -> str:
    """The spec's text: [model] with its layers first (an inline layers list
    belongs under [model]), then [vars], [defaults.KIND], [blocks.NAME]."""
    out = []
    if comment:
        out += [f"# {line}".rstrip() for line in comment.splitlines()]
    out.append("[model]")
    for k, v in model.items():
        out.append(f"{key(k)} = {value(v)}")
    out.append("layers = " + array(layers, 0))
    if vars_:
        out += ["", "[vars]"] + [f"{key(k)} = {value(v)}" for k, v in vars_.items()]
    for kind, args in (defaults or {}).items():
        if args:
            out += ["", f"[defaults.{key(kind)}]"] + [f"{key(k)} = {value(v)}"
                                                      for k, v in args.items()]
    for name, table in (blocks or {}).items():
        out += ["", f"[blocks.{key(name)}]"]
        for k, v in table.items():
            if k.startswith(PRIVATE):
                continue
            if _is_table_list(v):
                out.append(f"{key(k)} = " + array(v, 0))
            else:
                out.append(f"{key(k)} = {value(v)}")
    return "\n".join(out) + "\n"


def to_toml(spec) -> str:
    """A loaded Spec as TOML text (includes already merged in; comments are
    not kept: tomllib does not read them)."""
    model = {"name": spec.name, "input": list(spec.input)}
    if spec.source:
        model["source"] = spec.source
    for k in ("init", "notes"):
        if k in spec.extra:
            v = spec.extra[k]
            model[k] = list(v) if isinstance(v, (list, tuple)) else v
    layers = [_plain(raw.table) for raw in spec.layers]
    blocks = {name: _plain(table) for name, table in spec.blocks.items()}
    defaults = {kind: dict(args) for kind, args in spec.defaults.items()}
    return document(model, layers, dict(spec.vars), defaults, blocks)


def _plain(v):
    if hasattr(v, "items"):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


# --------------------------------------------------------------------------
# defaults: arguments most rows of a kind share


def kind_of(entry: dict):
    for k in entry:
        if k in REGISTRY and k not in ("batch_norm",) or (k == "batch_norm" and
                                                          entry.get(k) is True and
                                                          not _other_kind(entry)):
            return k
    return None


def _other_kind(entry: dict) -> bool:
    return any(k in REGISTRY and k != "batch_norm" for k in entry)


def rows_of(entries):
    """Every row table (with its kind) in entries, blocks' structures included."""
    for e in entries:
        if isinstance(e, list):
            yield from rows_of(e)
            continue
        if not isinstance(e, dict):
            continue
        kind = kind_of(e)
        if kind is not None and not any(k in e for k in STRUCTURE_KEYS if k != "shortcut"):
            yield kind, e
        for k in STRUCTURE_KEYS:
            v = e.get(k)
            if isinstance(v, list):
                yield from rows_of(v)


def full_args(kind: str, entry: dict) -> dict:
    """A row's arguments with the kind's defaults filled in (the primary by name)."""
    k = REGISTRY[kind]
    out = {}
    for name, arg in k.args.items():
        if name in entry:
            out[name] = entry[name]
        elif name == k.primary and entry.get(kind) is not True:
            out[name] = entry.get(kind)
        elif arg.default is not REQUIRED:
            out[name] = arg.default
    return out


def choose_defaults(entries: list, blocks: dict, fused_bn: dict | None = None) -> dict:
    """[defaults.KIND]: per kind, each argument whose most common value differs
    from the kind's own default and is held by more than half of its rows.
    ``fused_bn``: the batch norm arguments fused rows need (they read
    [defaults.batch_norm])."""
    counts: dict = {}
    all_rows = list(rows_of(entries)) + list(rows_of(list(blocks.values())))
    for kind, e in all_rows:
        counts.setdefault(kind, []).append(e)
    defaults: dict = {}
    for kind, rows in counts.items():
        k = REGISTRY[kind]
        for name, arg in k.args.items():
            if name == k.primary or arg.default is REQUIRED or arg.default is None:
                continue   # None: a default that depends on another argument (a stride)
            seen = Counter(_hashable(e.get(name, arg.default)) for e in rows)
            common, n = seen.most_common(1)[0]
            if n * 2 > len(rows) and common != _hashable(arg.default) and n > 1:
                defaults.setdefault(kind, {})[name] = _unhash(common)
    if fused_bn:
        defaults["batch_norm"] = {**defaults.get("batch_norm", {}), **fused_bn}
    return defaults


def apply_defaults(entries, defaults: dict):
    """Rewrite rows relative to [defaults.KIND]: drop what equals the default,
    write the kind's own value where a default would change it."""
    for kind, e in rows_of(entries):
        table = defaults.get(kind)
        if not table:
            continue
        k = REGISTRY[kind]
        for name, v in table.items():
            own = k.args[name].default
            if name in e:
                if _hashable(e[name]) == _hashable(v):
                    del e[name]
            elif _hashable(own) != _hashable(v):
                e[name] = own


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1] and isinstance(v[0], int):
        return v[0]
    return v


def _unhash(v):
    return list(v) if isinstance(v, tuple) else v


# --------------------------------------------------------------------------
# the importer's document


def write(header: dict, entries: list, vars_: dict | None = None,
          fused_bn: dict | None = None) -> str:
    """A spec from recovered layer entries: blocks folded, defaults chosen."""
    blocks: dict = {}
    entries = fold(entries, blocks)
    defaults = choose_defaults(entries, blocks, fused_bn)
    apply_defaults(entries, defaults)
    apply_defaults(list(blocks.values()), defaults)
    return document(header, entries, vars_, defaults, blocks)


def fold(entries: list, blocks: dict) -> list:
    """Repeated structure into [blocks.NAME] and repeat (see the module's doc)."""
    return entries
