"""Fusion: conv/linear rows followed by batch norm and an activation folded into
one row, the arguments most rows share moved to [defaults.KIND]."""
from __future__ import annotations

from collections import Counter

from ...layers import lookup
from ...layers.activation import ACTIVATIONS
from ...layers.base import REQUIRED


def _entry(kind: str, args: dict) -> dict:
    """A row table: {kind = primary, other non-default arguments}."""
    k = lookup(kind)
    out = {}
    for key, value in args.items():
        if value is None or key not in k.args:
            continue
        default = k.args[key].default
        if default is not REQUIRED and default is not None and _same(value, default):
            continue
        if kind in ("maxpool", "avgpool", "lp_pool", "max_unpool") and key == "stride" and \
                _same(value, args.get("kernel")):
            continue
        out[key] = value
    primary = k.primary
    if primary and primary in out:
        return {kind: out.pop(primary), **out}
    return {kind: True, **out}


def _same(a, b) -> bool:
    norm = (lambda v: [v, v] if isinstance(v, int) and not isinstance(v, bool) else v)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return norm(a) == norm(b)


def _flatten_rows(entries: list) -> list:
    out = []
    for e in entries:
        out.extend(e["_rows"] if "_rows" in e else [e])
    return out


def _fuse_posts(entries: list, shared=frozenset()) -> list:
    """A residual (or a graph's merge) followed by an activation of the same
    level: the activation after the add (torchvision's `out = relu(out +
    identity)`), unless the sum is read elsewhere too or the activation reads
    another entry."""
    entries = _flatten_rows(entries)
    out = []
    for e in entries:
        prev = out[-1] if out else None
        kind = _row_kind(e)
        if prev is not None and any(k in prev for k in ("residual", "dense", "merge")) and \
                "activation" not in prev and kind in ACTIVATIONS and _plain(e, kind) and \
                not e.get("flat") and "_in" not in e and prev.get("_out") not in shared:
            prev["activation"] = kind
            if "_out" in e:
                prev["_out"] = e["_out"]
            continue
        out.append(e)
    return out


def _row_kind(e: dict):
    for key in e:
        if key not in ("name", "flat", "_rows") and key in _KIND_NAMES():
            return key
    return None


_KINDS_CACHE: list = []


def _KIND_NAMES():
    if not _KINDS_CACHE:
        from ...layers import REGISTRY
        _KINDS_CACHE.append(set(REGISTRY))
    return _KINDS_CACHE[0]


def _plain(e: dict, kind: str) -> bool:
    """An activation row with its kind's default arguments (in place aside)."""
    return all(k in ("name", kind, "inplace") or k.startswith("_") for k in e) and \
        e[kind] is True


def _fuse_levels(entries: list, fused: dict) -> list:
    """_fuse_level on every named level, innermost first (names resolved).
    ``fused``: [defaults.KIND] of the fusable kinds (_fused_defaults)."""
    out = []
    for e in entries:
        if isinstance(e, list):
            out.append(_fuse_levels(e, fused))
            continue
        if not isinstance(e, dict):
            out.append(e)
            continue
        for k in ("layers", "residual", "scale", "dense", "shortcut"):
            if isinstance(e.get(k), list):
                e[k] = _fuse_levels(e[k], fused)
        for k in ("concat", "split"):
            if isinstance(e.get(k), list):
                e[k] = [dict(b, layers=_fuse_levels(b["layers"], fused))
                        if isinstance(b, dict) else _fuse_levels(b, fused)
                        for b in e[k]]
        if "layers" in e and isinstance(e.get("name"), str) and not e.get("flat"):
            e = _fuse_level(e, fused)
        out.append(e)
    return out


def _fuse_level(entry: dict, defaults: dict) -> dict:
    """torchvision's Conv2dNormActivation (conv, norm, activation as modules
    0, 1, 2 of one level) as one row with batch_norm and activation: it builds
    the same nn.Sequential. The norm and the activation fuse when their
    arguments are the [defaults.KIND] fused rows read."""
    layers = entry["layers"]
    if not 2 <= len(layers) <= 3 or [e.get("name") for e in layers] != \
            [str(i) for i in range(len(layers))]:
        return entry
    if entry.get("_pinned") or any("from" in e or "merge" in e for e in layers):
        return entry     # a row of it is read by name: it stays a level
    first, rest = layers[0], layers[1:]
    kind = _row_kind(first)
    if len(layers) == 2 and kind == "flatten" and _row_kind(rest[0]) in ("fc", "dropconnect") \
            and set(first) == {"name", "flatten"}:
        # fc (dropconnect) on a C x H x W map builds nn.Sequential(Flatten, Linear): the
        # same modules
        return {"name": entry["name"], **_wiring(entry),
                **{k: v for k, v in rest[0].items() if k != "name"}}
    if kind is None or not lookup(kind).weighted or first.get("flat"):
        return entry     # only weighted rows (conv, fc, conv_table, ...) fuse
    fused = {k: v for k, v in first.items() if k != "name"}
    if rest and _row_kind(rest[0]) == "batch_norm":
        bn = {k: v for k, v in rest[0].items() if k not in ("name", "batch_norm")}
        if bn != defaults.get("batch_norm", {}):
            return entry
        fused["batch_norm"] = True
        rest = rest[1:]
    if rest:
        act = _row_kind(rest[0])
        # an nn.ReLU() that is not in place stays a row: fused, it would work in place
        if act not in ACTIVATIONS or len(rest) > 1 or "inplace" in rest[0] or \
                _activation_args(rest[0], act) != defaults.get(act, {}):
            return entry
        fused["activation"] = act
    if len(fused) == len(first) - 1:
        return entry
    return {"name": entry["name"], **_wiring(entry), **fused}


def _wiring(entry: dict) -> dict:
    """What a fused level keeps of its own: the `from` it reads."""
    return {"from": entry["from"]} if "from" in entry else {}


def _activation_args(e: dict, kind: str) -> dict:
    """An activation row's arguments beyond its kind (in place aside)."""
    args = {k: v for k, v in e.items() if k not in ("name", kind, "inplace")}
    if e[kind] is not True:    # a primary argument's value
        args[kind] = e[kind]
    return args


def _fused_defaults(nodes) -> dict:
    """Per fusable kind (batch norm, the activations), the arguments most of
    its rows share: a row's fused batch norm and activation read them from
    [defaults.KIND] (a channel-wise PReLU after every conv: per_channel)."""
    seen: dict = {}
    for n in nodes:
        for kind, args in n.rows:
            if kind == "batch_norm" or kind in ACTIVATIONS:
                entry = _entry(kind, args)
                entry.pop("inplace", None)
                seen.setdefault(kind, Counter())[tuple(sorted(entry.items()))] += 1
    out = {}
    for kind, counts in seen.items():
        common = dict(counts.most_common(1)[0][0])
        common.pop(kind, None)
        if common or kind == "batch_norm":
            out[kind] = common
    return out
