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
from ..render.safe import json_safe
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
    if isinstance(v, str):  # a TOML basic string; TOML has no lone surrogates
        return json.dumps(json_safe(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return inline(v)
    raise TypeError(f"no TOML form for {type(v).__name__}")


def key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(json_safe(k))


def _is_table_list(v) -> bool:
    """A list of layer tables, or of branches (lists of tables, or tables)."""
    return isinstance(v, list) and bool(v) and all(
        isinstance(x, dict) or (isinstance(x, list) and all(isinstance(y, dict) for y in x))
        for x in v)


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
    if spec.outputs:   # [model] outputs: without them a side output reads as unused
        model["outputs"] = list(spec.outputs)
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


def choose_defaults(entries: list, blocks: dict, fused: dict | None = None) -> dict:
    """[defaults.KIND]: per kind, each argument whose most common value differs
    from the kind's own default and is held by more than half of its rows.
    ``fused``: per kind, the arguments fused batch norms and activations need
    (they read [defaults.KIND])."""
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
    for kind, args in (fused or {}).items():
        if args:
            defaults[kind] = {**defaults.get(kind, {}), **args}
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
                if _hashable(e[name]) == _hashable(v) and \
                        (name != "padding" or _inherits_as_is(e, table, k)):
                    del e[name]
            elif _hashable(own) != _hashable(v):
                e[name] = own


def _inherits_as_is(e: dict, table: dict, kind) -> bool:
    """Whether a row would read the default padding unchanged: an inherited
    padding is fitted to the row's kernel (archcalc.spec.defaults), so a
    padding beyond the kernel's reach stays written on the row."""
    from .defaults import SLIDING_KINDS, fitted_padding
    if kind.name not in SLIDING_KINDS or "kernel" not in kind.args:
        return True
    kernel = e.get("kernel", table.get("kernel", kind.args["kernel"].default))
    dilation = e.get("dilation", table.get("dilation", 1))
    stride = e.get("stride", table.get("stride", 1))
    padding = e["padding"]
    return _hashable(fitted_padding(padding, kernel, dilation, stride)) == _hashable(padding)


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
          fused: dict | None = None) -> str:
    """A spec from recovered layer entries: blocks folded, defaults chosen."""
    blocks: dict = {}
    entries = fold(entries, blocks)
    defaults = choose_defaults(entries, blocks, fused)
    apply_defaults(entries, defaults)
    apply_defaults(list(blocks.values()), defaults)
    return document(header, entries, vars_, defaults, blocks)


def fold(entries: list, blocks: dict) -> list:
    """Repeated structure into [blocks.NAME] and repeat, innermost first: at
    each height, named levels of one module class with the same skeleton
    (everything but their numbers) become calls of one block; then runs of
    identical calls (or rows) in a list become one entry with repeat."""
    _walk_rows(entries, _fill_row)
    _share_shortcut_names(entries)
    while True:   # the innermost levels not yet looked at, until none is left
        found = []
        _instances(entries, found, None, None)
        for b in blocks.values():
            _instances([b], found, None, None)
        level = [f for f in found if f[3] == 0]
        if not level:
            break
        groups: dict = {}
        for holder, index, entry, _ in level:
            entry["_seen"] = True
            values: list = []
            skeleton = _skeleton(entry, values, top=True)
            groups.setdefault((entry.get("_class", ""), skeleton), []).append(
                (holder, index, entry, values))
        for (cls, _), members in groups.items():
            if len(members) >= 2:
                _make_block(cls, members, blocks)
        entries = _repeat_runs(entries)
        for name in blocks:
            blocks[name] = _repeat_runs([blocks[name]])[0]
    _trim_calls(entries, blocks)
    _walk_rows(entries, _trim_row)
    for b in blocks.values():
        _walk_rows([b], _trim_row)
    return entries


def _walk_rows(entries, fn):
    """Apply fn(kind, row) to every row table under entries (blocks' too)."""
    for kind, e in list(rows_of(entries)):
        fn(kind, e)


def _fill_row(kind: str, e: dict):
    """Every argument written out (the kind's defaults filled in), so that
    levels differing only in a value have the same skeleton."""
    k = REGISTRY[kind]
    primary = k.primary
    for name, arg in k.args.items():
        if name == primary or name in e:
            continue
        if arg.default is REQUIRED:
            continue
        if arg.default is None:
            if kind in POOLS and name == "stride":
                e[name] = e.get("kernel", e.get(kind))
            continue
        e[name] = _unhash(_hashable(arg.default)) if isinstance(arg.default, list) \
            else arg.default
    # one order for all: name, the kind, its arguments as the kind lists them, the rest
    order = ["name", kind, *k.args]
    items = sorted(e.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order
                   else len(order))
    e.clear()
    e.update(items)


POOLS = ("maxpool", "avgpool", "lp_pool")


def _trim_row(kind: str, e: dict):
    """The kind's defaults left out again (numbers that became expressions stay)."""
    k = REGISTRY[kind]
    for name, arg in k.args.items():
        if name not in e or name == k.primary:
            continue
        v = e[name]
        if kind in POOLS and name == "stride" and _hashable(v) == _hashable(
                e.get("kernel", e.get(kind))):
            del e[name]
        elif arg.default is not REQUIRED and arg.default is not None and \
                _hashable(v) == _hashable(arg.default) and \
                isinstance(v, bool) == isinstance(arg.default, bool):
            del e[name]


def _share_shortcut_names(entries):
    """A residual whose shortcut is the identity takes the shortcut name its
    module class uses elsewhere (ResNet's downsample), so that both fold into
    one block ("auto": the identity where the shapes agree)."""
    by_class: dict = {}
    levels: list = []
    _instances(entries, levels, None, None)
    for _, _, e, _ in levels:
        if "residual" in e and e.get("shortcut", "auto") == "auto":
            by_class.setdefault(e.get("_class"), set()).add(e.get("shortcut_name"))
    for _, _, e, _ in levels:
        names = by_class.get(e.get("_class"), set()) - {None}
        if "residual" in e and "shortcut" not in e and "shortcut_name" not in e and \
                len(names) == 1:
            e["shortcut_name"] = next(iter(names))


def _named_level(e) -> bool:
    # _no_block: the importer's level that reads names outside itself (a block's
    # body sees only its own entries) or that is read into by a dotted path
    return isinstance(e, dict) and isinstance(e.get("name"), str) and not e.get("flat") \
        and "block" not in e and any(k in e for k in STRUCTURE_KEYS if k != "shortcut") \
        and not e.get("_no_block")


def _instances(entries, found: list, holder, key) -> int:
    """Named levels under ``entries`` as (holder list, index, entry, height);
    returns the height of the deepest level found."""
    deepest = -1
    for i, e in enumerate(entries):
        if isinstance(e, list):
            deepest = max(deepest, _instances(e, found, e, None))
            continue
        if not isinstance(e, dict):
            continue
        inner = -1
        for k in ("layers", "residual", "scale", "dense", "shortcut"):
            if isinstance(e.get(k), list):
                inner = max(inner, _instances(e[k], found, e[k], k))
        for k in ("concat", "split"):
            for b in e.get(k, []) or []:
                layers = b.get("layers") if isinstance(b, dict) else b
                if isinstance(layers, list):
                    inner = max(inner, _instances(layers, found, layers, k))
        if _named_level(e) and not e.get("_seen"):
            found.append((entries, i, e, inner + 1))
            deepest = max(deepest, inner + 1)
        else:
            deepest = max(deepest, inner)
    return deepest


HOLE = "\0hole"


def _skeleton(e, values: list, top=False, key=None):
    """A hashable form of an entry with every number taken out (into
    ``values``, as (field, number)); the instance's own name left out."""
    if isinstance(e, dict):
        items = []
        for k, v in e.items():
            if (top and k in ("name", "from")) or k.startswith(PRIVATE):
                continue
            if k in ("name", "flat", "block", "shortcut_name") or isinstance(v, (str, bool)) \
                    or v is None or isinstance(v, float):
                items.append((k, v if not isinstance(v, list) else tuple(v)))
            else:
                items.append((k, _skeleton(v, values, key=k)))
        return ("{", tuple(items))
    if isinstance(e, list):
        return ("[", tuple(_skeleton(v, values, key=key) for v in e))
    if isinstance(e, int) and not isinstance(e, bool):
        values.append((key, e))
        return HOLE
    return e


def _make_block(cls: str, members: list, blocks: dict):
    vectors = list(zip(*[[v for _, v in m[3]] for m in members]))
    fields = [f for f, _ in members[0][3]]
    args: list = []          # (name, vector)
    exprs: list = []         # per hole: an int (constant) or an expression text
    for field, vec in zip(fields, vectors):
        if len(set(vec)) == 1:
            exprs.append(vec[0])
            continue
        exprs.append(_relate(field, vec, args))
    name = _block_name(cls, [m[2]["name"] for m in members], blocks)
    template = members[0][2]
    it = iter(exprs)
    body = _fill(template, it, top=True)
    counts = [Counter(vec).most_common(1)[0] for _, vec in args]
    params = []
    for (arg, vec), (common, n) in zip(args, counts):
        if n * 3 > len(vec) * 2 and n >= 2:
            params.append(f"{arg}={common}")
        else:
            params.append(arg)
    blocks[name] = {**({"args": params} if params else {}), **{k: v for k, v in body.items()
                                       if k not in ("name",) and not k.startswith(PRIVATE)}}
    defaults = {arg: common for (arg, _), (common, n) in zip(args, counts)
                if n * 3 > len(args[0][1]) * 2 and n >= 2}
    for j, (holder, index, entry, _) in enumerate(members):
        call = {"block": name, "name": entry["name"]}
        if "from" in entry:      # what the level reads is the call's, not the body's
            call["from"] = entry["from"]
        with_ = {arg: vec[j] for arg, vec in args}
        if with_:
            call["with"] = with_
        call["_defaults"] = defaults
        holder[index] = call


def _relate(field, vec, args: list) -> str:
    """An argument for a number that differs between instances: an existing one
    with the same values, a multiple of one ("4*C"), or a new one."""
    for arg, other in args:
        if vec == other:
            return arg
    for arg, other in args:
        if all(o and v % o == 0 for v, o in zip(vec, other)):
            ratios = {v // o for v, o in zip(vec, other)}
            if len(ratios) == 1 and ratios.pop() > 1:
                return f"{vec[0] // other[0]}*{arg}"
        if all(v and o % v == 0 for v, o in zip(vec, other)):
            ratios = {o // v for v, o in zip(vec, other)}
            if len(ratios) == 1 and ratios.pop() > 1:
                return f"{arg} // {other[0] // vec[0]}"
    base = _arg_base(field)
    taken = {a for a, _ in args}
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}{k}"
    args.append((name, vec))
    return name


def _arg_base(field) -> str:
    if field in REGISTRY:
        field = REGISTRY[field].primary or field
    return {"out": "C", "kernel": "k", "repeat": "n", "sizes": "size"}.get(field, field or "v")


def _block_name(cls: str, names: list, blocks: dict) -> str:
    base = ""
    if cls and cls not in ("Sequential", "ModuleList", "ModuleDict", "SpecSequential"):
        base = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", cls)
        base = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", base).lower().strip("_")
    if not base:
        common = re.match(r"[A-Za-z_]*", names[0]).group(0)
        base = common.rstrip("_") if common and all(n.startswith(common) for n in names) \
            else "block"
    base = re.sub(r"[^A-Za-z0-9_]", "_", base) or "block"
    name, k = base, 1
    while name in blocks:
        k += 1
        name = f"{base}_{k}"
    return name


def _fill(e, it, top=False):
    if isinstance(e, dict):
        out = {}
        for k, v in e.items():
            # an inner level that reads outside itself stays out of blocks in the body too
            if (top and k in ("name", "from")) or k.startswith(PRIVATE) and \
                    (top or k != "_no_block"):
                continue
            if k in ("name", "flat", "block", "shortcut_name") or isinstance(v, (str, bool)) \
                    or v is None or isinstance(v, float):
                out[k] = v
            else:
                out[k] = _fill(v, it)
        return out
    if isinstance(e, list):
        return [_fill(v, it) for v in e]
    if isinstance(e, int) and not isinstance(e, bool):
        return next(it)
    return e


def _repeat_runs(entries: list) -> list:
    """Consecutive entries equal but for a name that counts up (0, 1, 2 or
    layer1, layer2) as one entry: name = "{i + 1}", repeat = 3."""
    out: list = []
    i = 0
    while i < len(entries):
        e = entries[i]
        if isinstance(e, list):
            out.append(_repeat_runs(e))
            i += 1
            continue
        if not isinstance(e, dict):
            out.append(e)
            i += 1
            continue
        for k in ("layers", "residual", "scale", "dense", "shortcut"):
            if isinstance(e.get(k), list):
                e[k] = _repeat_runs(e[k])
        for k in ("concat", "split"):
            if isinstance(e.get(k), list):
                e[k] = [dict(b, layers=_repeat_runs(b["layers"])) if isinstance(b, dict)
                        else _repeat_runs(b) if isinstance(b, list) else b for b in e[k]]
        # an entry that reads by name (from, merge) is not a copy of the one before
        numbered = _numbered(e) if not _named_level(e) and "from" not in e and \
            "merge" not in e else None
        j = i + 1
        if numbered is not None and "repeat" not in e:
            prefix, start = numbered
            while j < len(entries) and isinstance(entries[j], dict) and \
                    _numbered(entries[j]) == (prefix, start + (j - i)) and \
                    "repeat" not in entries[j] and _same_but_name(e, entries[j]):
                j += 1
        if j - i >= 2:
            prefix, start = numbered
            index = "{i}" if start == 0 else f"{{i + {start}}}"
            run = {"name": f"{prefix}{index}", **e, "repeat": j - i}
            run["name"] = f"{prefix}{index}"
            if "block" in run:
                run = {"block": run.pop("block"), **run}
            out.append(run)
            i = j
        else:
            out.append(e)
            i += 1
    return out


def _numbered(e: dict):
    name = e.get("name")
    if not isinstance(name, str):
        return None
    m = re.fullmatch(r"(.*?)(\d+)", name)
    if not m or (len(m.group(2)) > 1 and m.group(2).startswith("0")):
        return None
    return m.group(1), int(m.group(2))


def _same_but_name(a: dict, b: dict) -> bool:
    strip = (lambda d: {k: v for k, v in d.items() if k != "name" and k != "_defaults"})
    return strip(a) == strip(b)


def _trim_calls(entries, blocks: dict):
    """Block calls leave out the arguments equal to the block's defaults."""
    def walk(items):
        for e in items:
            if isinstance(e, list):
                walk(e)
                continue
            if not isinstance(e, dict):
                continue
            defaults = e.pop("_defaults", None)
            if defaults and "with" in e:
                e["with"] = {k: v for k, v in e["with"].items()
                             if not (k in defaults and defaults[k] == v)}
                if not e["with"]:
                    del e["with"]
            for k in ("layers", "residual", "scale", "dense", "shortcut"):
                if isinstance(e.get(k), list):
                    walk(e[k])
            for k in ("concat", "split"):
                for b in e.get(k, []) or []:
                    walk(b["layers"] if isinstance(b, dict) else b if isinstance(b, list)
                         else [])
    walk(entries)
    walk(list(blocks.values()))
