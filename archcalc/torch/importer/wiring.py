"""Wiring: the `from` of every entry that does not read the previous entry's
output, and the model's `outputs`, written as names relative to the list that
reads them (the spec's general-graph syntax).

The emitter notes on each entry the node it gives (`_out`) and, where it reads
named nodes, those (`_in`); this pass walks the entries as the engine will
read them (a list's input, then each entry reading the previous one's output)
and names each read node: "input" (the list's own input), an earlier entry of
the list or of an enclosing list, or a dotted path into an earlier named
level. A level read into by name stays a level (no fusion: `_pinned`) and is
kept out of blocks, as is a level that reads names outside itself
(`_no_block`: a block body sees only its own entries)."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import SpecError

BODY_KEYS = ("layers", "residual", "scale", "dense")


@dataclass
class _Frame:
    entries: list       # the list
    upto: int           # the entry being wired: only earlier ones are visible
    input: int | None   # the list's input node (None: a split's slice)
    holder: dict | None  # the entry that holds the list


def wire(entries: list, outputs: list | None = None) -> list | None:
    """Write `from` on ``entries`` (in place) and strip the notes; the names of
    ``outputs`` (node indices) at the top level, if given."""
    wiring = _Wiring()
    wiring.walk(entries, 0, [])
    names = None
    if outputs:
        end = _Frame(entries, len(entries), 0, None)
        names = [wiring.name(node, [end], "the model's outputs") for node in outputs]
    _strip(entries)
    return names


class _Wiring:
    def walk(self, entries: list, input_node, chain: list, holder=None):
        """Wire one list whose input is ``input_node`` (``chain``: the frames of
        the enclosing lists); returns its output node."""
        prev = input_node
        for i, e in enumerate(entries):
            prev = self.entry(e, prev, [*chain, _Frame(entries, i, input_node, holder)])
        return prev

    def entry(self, e, prev, chain: list):
        if isinstance(e, list):            # a branch written as a bare list
            return self.walk(e, prev, chain)
        if not isinstance(e, dict):
            return prev
        if "_rows" in e:                   # one call, several rows
            for row in e["_rows"]:
                prev = self.entry(row, prev, chain)
            return prev
        reads = e.get("_in")
        if reads is None:
            reads = self.free_input(e, prev, chain)
        merge = "merge" in e
        source = prev
        if reads is not None:
            what = e.get("name", "a layer")
            if merge:
                e["from"] = [self.name(r, chain, what) for r in reads]
            else:
                if tuple(reads) != (prev,):
                    e["from"] = self.name(reads[0], chain, what)
                source = reads[0]
        out = e.get("_out")
        for key in BODY_KEYS:
            if isinstance(e.get(key), list):
                inner = self.walk(e[key], source, chain, e)
                if key == "layers" and out is None:
                    out = inner
        if isinstance(e.get("shortcut"), list):
            self.walk(e["shortcut"], source, chain, e)
        for key in ("concat", "split"):
            for b in e.get(key) or []:
                layers = b.get("layers") if isinstance(b, dict) else b
                if isinstance(layers, list):
                    self.walk(layers, source if key == "concat" else None, chain, e)
        e["_out"] = out
        return out

    def free_input(self, e: dict, prev, chain: list):
        """A level that opens with a merge reads its input only through names:
        its input may be any node, so it is one the merge cannot name from
        inside (DLA's root reads a tree's output that an inner level of the same
        name hides); None where all can be named."""
        layers = e.get("layers")
        if not (isinstance(layers, list) and layers and isinstance(layers[0], dict)
                and "merge" in layers[0] and layers[0].get("_in")):
            return None
        inner = [*chain, _Frame(layers, 0, prev, e)]
        for node in layers[0]["_in"]:
            try:
                self.name(node, inner, "")
            except SpecError:
                e["_in"] = (node,)
                return e["_in"]
        return None

    def name(self, node: int, chain: list, what: str) -> str:
        """The name ``node`` has, seen from the innermost list of ``chain``."""
        innermost = chain[-1]
        if node == innermost.input:
            return "input"
        for depth in range(len(chain) - 1, -1, -1):
            frame = chain[depth]
            found = self.direct(frame, node) or self.dotted(frame, node)
            if found is None:
                continue
            if depth == len(chain) - 1:
                return found
            # a name hidden by a nearer entry of the same name may still be read
            # by a longer path to the same tensor: the level's last entry (DLA's
            # root reads the tree1 of two levels above as "tree1.tree2.root")
            for path, levels in _ends_of(frame, found, node):
                if not any(_hides(nearer, path) for nearer in chain[depth + 1:]):
                    for e in levels:   # read into by a dotted path: stays a level
                        e["_pinned"] = e["_no_block"] = True
                    for nearer in chain[depth + 1:]:
                        if nearer.holder is not None:
                            nearer.holder["_no_block"] = True
                    return path
            raise SpecError(f"{what}: the layer it reads, {found!r}, is hidden by a layer "
                            "of the same name in its own level")
        raise SpecError(f"{what}: reads a tensor no earlier entry of its level or of an "
                        "enclosing one gives (a spec names only those)")

    @staticmethod
    def direct(frame: _Frame, node: int):
        for e in reversed(frame.entries[:frame.upto]):
            for row in reversed(e.get("_rows", [e])) if isinstance(e, dict) else ():
                if row.get("_out") == node and isinstance(row.get("name"), str):
                    return _bag_member(row) or row["name"]
        return None

    def dotted(self, frame: _Frame, node: int):
        for e in reversed(frame.entries[:frame.upto]):
            path = self.within(e, node)
            if path is not None:
                return path
        return None

    def within(self, e, node: int):
        """A dotted path to ``node`` inside the named level ``e``."""
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and not e.get("flat")
                and isinstance(e.get("layers"), list)):
            return None
        for sub in reversed(e["layers"]):
            rows = sub.get("_rows", [sub]) if isinstance(sub, dict) else []
            for row in rows:
                if isinstance(row, dict) and row.get("_out") == node and \
                        isinstance(row.get("name"), str):
                    e["_pinned"] = e["_no_block"] = True
                    return f"{e['name']}.{_bag_member(row) or row['name']}"
            deeper = self.within(sub, node)
            if deeper is not None:
                e["_pinned"] = e["_no_block"] = True
                return f"{e['name']}.{deeper}"
        return None


def _hides(nearer: _Frame, path: str) -> bool:
    """Whether an earlier entry of ``nearer`` hides ``path``: the engine reads a
    dotted path from the innermost list that holds all of it."""
    first, *rest = path.split(".")
    return any(isinstance(x, dict) and x.get("name") == first and _holds(x, rest)
               for x in nearer.entries[:nearer.upto])


def _ends_of(frame: _Frame, found: str, node: int):
    """``found``, then the longer paths to the same tensor: while the entry it
    names is a named level whose last entry gives that tensor, its path; each
    with the levels it reads into."""
    yield found, []
    first, *rest = found.split(".")
    e = next((x for x in reversed(frame.entries[:frame.upto]) if isinstance(x, dict)
              and x.get("name") == first), None)
    for part in rest:
        e = _member(e, part)
    path, levels = found, []
    while _member(e, None) is not None and e["layers"][-1].get("_out") == node:
        levels.append(e)
        e = e["layers"][-1]
        path = f"{path}.{e['name']}"
        yield path, list(levels)


def _member(e, name):
    """The entry named ``name`` in the plain level ``e`` (None: its last, if named)."""
    if not (isinstance(e, dict) and isinstance(e.get("layers"), list) and e["layers"]
            and not e.get("flat")):
        return None
    if name is None:
        last = e["layers"][-1]
        return last if isinstance(last, dict) and isinstance(last.get("name"), str) else None
    return next((x for x in e["layers"] if isinstance(x, dict) and x.get("name") == name), None)


def _holds(e: dict, parts: list) -> bool:
    """Whether the path ``parts`` exists inside the entry ``e`` (a structure
    other than a plain level is taken to hold its path where it holds its
    first name anywhere inside: hidden, to be safe)."""
    if not parts:
        return True
    if not isinstance(e.get("layers"), list) or e.get("flat"):
        return _mentions(e, parts[0])
    inner = next((x for x in e["layers"] if isinstance(x, dict) and x.get("name") == parts[0]),
                 None)
    return inner is not None and _holds(inner, parts[1:])


def _mentions(e, name: str) -> bool:
    """Whether any entry inside ``e`` (or a generated row's default name,
    kept to be safe) is named ``name``."""
    stack = [v for v in e.values() if isinstance(v, (list, dict))]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            if name in (x.get("name"), x.get("shortcut_name")):
                return True
            stack.extend(v for v in x.values() if isinstance(v, (list, dict)))
    # the names graph.py gives a structure's parts (a merge row, a branch b1, b2, ...)
    return name in ("add", "concat", "scale", "shortcut", "mul", "sub") or \
        (name[:1] == "b" and name[1:].isdigit())


def _bag_member(e: dict):
    """A level whose last entry reads by name (FPN's layer_blocks: 3, 2, 1, 0,
    each from its own input) is a bag, not a chain: its last entry is named
    by its path (layer_blocks.0), not as the level's output. A level that
    ends in a merge (a block's sum) is named as itself."""
    layers = e.get("layers")
    if e.get("flat") or not isinstance(layers, list) or not layers:
        return None
    last = layers[-1]
    if not (isinstance(last, dict) and "from" in last and "merge" not in last
            and isinstance(last.get("name"), str)):
        return None
    e["_pinned"] = e["_no_block"] = True
    return f"{e['name']}.{last['name']}"


def _strip(entries):
    """The emitter's notes out (the writer compares entries whole)."""
    for e in entries:
        if isinstance(e, list):
            _strip(e)
            continue
        if not isinstance(e, dict):
            continue
        e.pop("_in", None)
        e.pop("_out", None)
        for key in (*BODY_KEYS, "shortcut", "_rows"):
            if isinstance(e.get(key), list):
                _strip(e[key])
        for key in ("concat", "split"):
            for b in e.get(key) or []:
                _strip(b.get("layers", []) if isinstance(b, dict) else b
                       if isinstance(b, list) else [])
