"""Emission: the recovered structure as the spec's entries (rows, residuals,
concats, splits, shortcuts), named by level; the writer (archcalc.spec.writer)
turns them into TOML."""
from __future__ import annotations

from ...errors import SpecError
from ...graph import NAME
from ...layers import lookup
from ...layers.activation import ACTIVATIONS
from .dataflow import FlowNode
from .fusion import _entry, _flatten_rows, _fuse_posts, _plain
from .mappers import rows
from .naming import (_Level, _Name, _check_module_name, _home, _is_shortcut_name, _levels,
    _stateful_paths)
from .structure import MERGE_OPS, CatItem, MergeItem, Wired, out_index, unwired

# a merge node's `merge` in the spec
MERGE_NAMES = {"add": "add", "mul": "multiply", "cat": "concat", "sub": "subtract"}


class _Ref:
    """A max unpool's `of`: the path of its max pool's row, once names are chosen."""

    def __init__(self, rows: dict, pool: int):
        self.rows, self.pool = rows, pool

    @property
    def value(self) -> str:
        prefix, name = self.rows[self.pool]
        return ".".join((*prefix, name.value if isinstance(name, _Name) else name))


class _Emitter:
    def __init__(self, bn_default: dict, shared=frozenset()):
        self.bn_default = bn_default
        self.shared = shared      # nodes read more than once: no activation fuses after them
        self.rows: dict = {}      # node index -> (level path, its row's name or _Name)
        self.posts: dict = {}     # node index -> an activation a merge took as its post
        self.part_levels: dict = {}   # a module written in parts: its path -> its one _Level
        self.pending: list = []   # those _Levels, resolved with the level() that made them

    def named(self, node: FlowNode, prefix: tuple, name, entry: dict) -> dict:
        """Note where a row sits; a max unpool's `of` names its pool's row."""
        self.rows[node.index] = (prefix, name)
        if node.of is not None:
            if node.of not in self.rows:
                raise SpecError(f"{'.'.join(node.path) or 'the model'}: a max unpool before "
                                "the max pool whose indices it reads")
            entry["of"] = _Ref(self.rows, node.of)
        return entry

    def level(self, items, prefix: tuple, avoid=frozenset()) -> list:
        level = _Level(prefix, avoid)
        mark = len(self.pending)
        entries = self.items(items, prefix, level)
        level.resolve()
        for sub in self.pending[mark:]:
            sub.resolve()
        del self.pending[mark:]
        return _fuse_posts(entries, self.shared)

    def items(self, items, prefix, level: _Level, parts=frozenset()) -> list:
        """``parts``: child modules to write in parts (called in several places
        of the module above, other layers between)."""
        items = _attach_posts(self.unfold(items, prefix), prefix, self.shared, self.posts)
        homes = [_home(item, prefix) for item in items]
        # a stateless item joins the level of a firm neighbour it belongs to
        resolved = []
        for i, (home, firm) in enumerate(homes):
            if home is not None and not firm:
                before = next((h for h, f in reversed(homes[:i]) if f), None)
                after = next((h for h, f in homes[i + 1:] if f), None)
                if home not in (before, after):
                    home = None
            resolved.append(home)
        groups = []
        for item, home in zip(items, resolved):
            if home is not None and groups and groups[-1][0] == home:
                groups[-1][1].append(item)
            else:
                groups.append((home, [item]))
        # one level per name: stateless items between two groups of a level join it
        merged = []
        pulled = set()     # levels that took stateless items from between their calls
        parted = set(parts)   # levels called in several places: one entry per place
        for home, group in groups:
            if home is not None:
                back = next((k for k in range(len(merged) - 1, -1, -1)
                             if merged[k][0] == home), None)
                if back is not None:
                    between = merged[back + 1:]
                    if any(_stateful_paths(g) for _, g in between):
                        parted.add(home)     # Res2Net's convs.i between bns.i
                        merged.append((home, list(group)))
                        continue
                    for _, g in between:
                        merged[back][1].extend(g)
                        pulled.add(home)
                    merged[back][1].extend(group)
                    del merged[back + 1:]
                    continue
            merged.append((home, list(group)))
        entries = []
        for home, group in merged:
            if home is None:
                for item in group:
                    entries.append(self.item(item, prefix, level))
                continue
            if home in parted:
                entries += self.part(home, group, prefix, level,
                                     [g for h, g in merged if h == home])
                continue
            inner = (*prefix, home)
            only, reads = unwired(group[0])
            if len(group) == 1 and isinstance(only, FlowNode) and not only.stateful \
                    and len(only.rows) == 1 and NAME.fullmatch(home):
                # a stateless module computed in its own forward (a Permute): one row
                # named after it
                level.fix(home, "row")
                entries.append(_wire(self.named(only, prefix, home, {
                    "name": home, **_entry(*only.rows[0]), "_out": only.index}), reads))
                continue
            name = level.fix(_check_module_name(home, (*prefix, home)), "level")
            if len(group) == 1 and not isinstance(only, FlowNode) and \
                    inner not in _stateful_paths(group) and _home(only, inner)[0] is None \
                    and not self.unfolds(only, inner) and not _clashes(only, group, inner):
                sub = _Level(inner)
                sub.fix(_structure_row(only), "merge")   # the structure's own row
                entry = self.structure(only, inner, sub, name=name, flat=False)
                sub.resolve()
                entry = _fuse_posts([entry], self.shared)[0]
            else:
                # rows pulled in from this level keep clear of its names: they may
                # read one (Res2Net's slices of the block's relu inside convs)
                avoid = level.names() if home in pulled else frozenset()
                entry = {"name": name, "layers": self.level(group, inner, avoid)}
                if isinstance(only, FlowNode) and only.op in MERGE_OPS:
                    reads = None     # a merge opens it: the wiring picks its input
            entries.append(_wire(entry, reads))
        return _flatten_rows(entries)   # one call, several rows: each an entry

    def part(self, home: str, group: list, prefix: tuple, level: _Level, groups: list) -> list:
        """One place of a module called in several, other layers between (Res2Net's
        convs and bns, Twins' blocks around its position block): its entries
        named by their dotted path from this level ("convs.0"), so the built
        model keeps its state_dict keys. Its members called in several of its
        places are written in parts too (Twins' blocks.0.0, then blocks.0.1)."""
        inner = (*prefix, home)
        if level.fixed.get(home) != "parts":
            level.fix(_check_module_name(home, inner), "parts")
        sub = self.part_levels.get(inner)
        if sub is None:
            sub = self.part_levels[inner] = _Level(inner)
            self.pending.append(sub)
        seen, again = set(), set()
        for other in groups:
            homes = {_home(item, inner)[0] for item in other} - {None}
            again |= homes & seen
            seen |= homes
        entries = _fuse_posts(self.items(group, inner, sub, parts=again), self.shared)
        return [_dotted(e, home) for e in entries]

    def item(self, item, prefix, level: _Level) -> dict:
        item, reads = unwired(item)
        if isinstance(item, FlowNode) and item.op in MERGE_OPS:
            # a merge of computed tensors: its inputs by name
            entry = {"name": level.defer(item.name or item.op), "merge": MERGE_NAMES[item.op],
                     "_out": item.index}
        elif isinstance(item, FlowNode):
            entry = self.row(item, prefix, level)
        else:
            entry = self.structure(item, prefix, level, name=None, flat=True)
        return _wire(entry, reads)

    # -- merges that are not a residual nor a gate: a graph's merge entries ------
    def unfolds(self, item, prefix) -> bool:
        """A merge of two computed tensors neither of which is a shortcut level
        (EfficientFormer's token mixer beside its MLP, a product of two paths)."""
        if not isinstance(item, MergeItem) or not all(item.branches):
            return False
        if item.op == "mul":
            return True
        return all(self._shortcut_level(branch, prefix) is None for branch in item.branches)

    def unfold(self, items, prefix) -> list:
        """Items with each merge that ``unfolds`` (or whose paths hold a module
        that other items of this level hold too: LR-ASPP's head beside the rest
        of its backbone) written as its paths and a merge entry that names them."""
        out, todo = [], list(reversed(items))
        while todo:
            item = todo.pop()
            inner, reads = unwired(item)
            if not (self.unfolds(inner, prefix) or _clashes(item, items, prefix)):
                out.append(item)
                continue
            graph = _as_graph(inner, reads)
            if isinstance(inner, MergeItem) and inner.post is not None:
                # the level above took the activation after it as its post (RepVGG's
                # act after a sum of three paths): as graph items it is a row again
                graph.append(self.posts[inner.post_node])
            todo.extend(reversed(graph))
        return out

    def row(self, node: FlowNode, prefix, level: _Level) -> dict:
        if node.stateful:
            name = level.fix(_check_module_name(node.path[-1], node.path), "row")
        else:
            rel = node.path[len(prefix):] if node.path[:len(prefix)] == prefix else ()
            preferred = rel[0] if len(rel) == 1 and node.op == "row" and \
                node.name == rel[0] else (node.name or node.rows[0][0])
            name = level.defer(preferred)
        entries = [_entry(kind, args) for kind, args in node.rows]
        if len(entries) > 1:   # one call, several rows (a mean: pool, then flatten)
            # the module's name on its row of weights (FastViT's attention on a map:
            # tokens, attention, to_map), else on the first
            owner = next((k for k, (kind, _) in enumerate(node.rows)
                          if not lookup(kind).view), 0) if node.stateful else 0
            named = [{"name": name if k == owner else
                      level.defer(f"{node.rows[owner][0]}_{kind}"), **e}
                     for k, (e, (kind, _)) in enumerate(zip(entries, node.rows))]
            named[-1]["_out"] = node.index
            return {"_rows": named}
        entry = self.named(node, prefix, name, {"name": name, **entries[0],
                                                "_out": node.index})
        if node.flat:
            entry["flat"] = True
        return entry

    def structure(self, item, prefix, level: _Level, name, flat: bool) -> dict:
        """A merge, concat or split. flat: its parts sit in ``level`` (the
        enclosing one) and ``name`` is its merge row's; else ``level`` is its
        own, named ``name``."""
        if isinstance(item, MergeItem):
            entry = self.merge(item, prefix, level, flat)
            if item.post:
                entry = {"activation": item.post, **entry}
        elif isinstance(item, CatItem):
            entry = self.concat(item, prefix, level)
        else:
            entry = self.concat(item, prefix, level, sizes=item.sizes)
        if flat:
            entry = {"name": level.defer(_structure_name(item)), "flat": True, **entry}
        else:
            entry = {"name": name, **entry}
        entry["_out"] = out_index(item)
        return entry

    def merge(self, item: MergeItem, prefix, level: _Level, flat: bool) -> dict:
        a, b = item.branches
        if item.op == "mul":
            if a and b:
                raise SpecError(f"{'.'.join(item.node.path) or 'the model'}: a product of two "
                                "computed tensors; archcalc's gate is x * body(x)")
            return {"scale": self.items(a or b, prefix, level)}
        if not a or not b:
            body = a or b
            named = self._shortcut_level(body, prefix)
            if _is_shortcut_name(named):
                # y + skip(y): the module says it is the shortcut; the body is y itself
                level.fix(_check_module_name(named, (*prefix, named)), "shortcut")
                entry = {"residual": [], "shortcut": self.level(body, (*prefix, named))}
                if named != "shortcut":
                    entry["shortcut_name"] = named
                return entry
            entry = {"residual": self.items(body, prefix, level)}
            if flat:
                entry["shortcut"] = "identity"
            return entry
        options = [(body, short) for body, short in ((a, b), (b, a))
                   if self._shortcut_level(short, prefix) is not None]
        if not options:
            raise SpecError(f"{'.'.join(item.node.path) or 'the model'}: both paths of an add "
                            "have layers directly in this module; a spec's shortcut is a "
                            "module of its own (e.g. downsample)")
        # the path whose module is named as a shortcut (skip, downsample) is the
        # shortcut; else the shorter one
        named = [o for o in options if _is_shortcut_name(self._shortcut_level(o[1], prefix))]
        body, short = min(named or options, key=lambda o: _count(o[1]))
        name = self._shortcut_level(short, prefix)
        level.fix(_check_module_name(name, (*prefix, name)), "shortcut")
        entry = {"residual": self.items(body, prefix, level)}
        if _is_projection(short, (*prefix, name)):
            entry["shortcut"] = "auto"
        elif len(short) == 1 and isinstance(short[0], FlowNode) and len(short[0].rows) == 1 and \
                short[0].rows[0][0] == "pad_shortcut":
            entry["shortcut"] = "pad"      # option A: what 'pad' builds, from the shapes
        else:
            entry["shortcut"] = self.level(short, (*prefix, name))
        if name != "shortcut":
            entry["shortcut_name"] = name
        if entry["shortcut"] == "auto" and not flat:
            del entry["shortcut"]
        return entry

    @staticmethod
    def _shortcut_level(items, prefix):
        """The child level of ``prefix`` that holds all of items' layers (stateless
        ones by the level they were called in, or the module they are)."""
        paths = _stateful_paths(items)
        n = len(prefix)
        if paths:
            firsts = {p[n] for p in paths if p[:n] == prefix and len(p) > n + 1}
            if len(firsts) == 1 and all(len(p) > n + 1 for p in paths):
                return firsts.pop()
            return None
        if len(items) == 1 and isinstance(items[0], FlowNode) and not items[0].scoped and \
                len(items[0].path) == n + 1 and items[0].path[:n] == prefix:
            return items[0].path[n]        # a stateless module of its own (PadShortcut)
        levels = _levels(items)
        firsts = {p[n] for p in levels if p[:n] == prefix and len(p) > n}
        if items and len(firsts) == 1 and all(p[:n] == prefix and len(p) > n for p in levels):
            return firsts.pop()
        return None

    def concat(self, item, prefix, level: _Level, sizes=None) -> dict:
        if sizes is None and len(item.branches) == 2 and not item.branches[0] \
                and item.branches[1]:
            return {"dense": self.items(item.branches[1], prefix, level)}
        branches = []
        names = [self._shortcut_level(branch, prefix) for branch in item.branches]
        # branches in one module each (CSPNeXt's poolings.0, .1, .2): no level
        # may take its name twice
        twice = {n for n in names if n is not None and names.count(n) > 1}
        for i, (branch, name) in enumerate(zip(item.branches, names), 1):
            if not _stateful_paths(branch) and f"b{i}" in level.fixed:
                # a second concat on this level (XCiT's class-attention block): its
                # stateless branches named apart from the first one's b1, b2
                branches.append({"name": level.defer(f"b{i}"),
                                 "layers": self.level(branch, (*prefix, f"b{i}"))})
            elif not branch:
                level.fix(f"b{i}", "branch")
                branches.append([])
            elif name is not None and name not in twice and not any(p[:len(prefix) + 1] == (*prefix, name) and
                                               len(p) == len(prefix) + 1
                                               for p in _stateful_paths(branch)):
                level.fix(_check_module_name(name, (*prefix, name)), "branch")
                branches.append({"name": name, "layers": self.level(branch, (*prefix, name))})
            elif not _stateful_paths(branch):
                level.fix(f"b{i}", "branch")
                branches.append(self.level(branch, (*prefix, f"b{i}")))
            else:
                branches.append({"flat": True, "layers": self.items(branch, prefix, level)})
        key = "concat" if sizes is None else "split"
        entry = {key: branches}
        if sizes is not None and len(set(sizes)) != 1:
            entry["sizes"] = list(sizes)
        return entry


class _Dotted(_Name):
    """The name of a part's entry from the level above: "convs" + "0"."""

    def __init__(self, home: str, name):
        self.home, self.inner, self.preferred = home, name, None

    @property
    def value(self) -> str:
        inner = self.inner.value if isinstance(self.inner, _Name) else self.inner
        return f"{self.home}.{inner}"


def _dotted(entry: dict, home: str) -> dict:
    """A part's entry (rows, levels, merge entries) named from the level above."""
    if "_rows" in entry:
        return {**entry, "_rows": [_dotted(row, home) for row in entry["_rows"]]}
    if entry.get("flat") or "name" not in entry:
        where = ".".join(str(p) for p in (home, entry.get("name", "")))
        raise SpecError(f"{where}: a structure whose parts sit in a module called in several "
                        "places; a spec names such a module's members by their paths only")
    return {**entry, "name": _Dotted(home, entry["name"])}


def _as_graph(item, reads) -> list:
    """A merge or concat as graph items: each path in the order the model runs
    them, the first reading what the structure read, then the merge entry."""
    order = sorted((b for b in item.branches if b), key=lambda b: _first_index(b))
    out = []
    for k, branch in enumerate(order):
        first = branch[0] if k == 0 and reads is None else \
            Wired(branch[0], reads if k == 0 else (item.source,))
        out += [first, *branch[1:]]
    return [*out, Wired(item.node, tuple(item.node.inputs))]


def _first_index(items) -> int:
    first = unwired(items[0])[0]
    return first.index if isinstance(first, FlowNode) else _first_index(first.branches[0] or
                                                                          first.branches[1])


def _clashes(item, items, prefix) -> bool:
    """A merge or concat of this level whose paths hold a module another item of
    this level, or another of its paths, holds too: as one structure, that
    module would be two levels."""
    inner = unwired(item)[0]
    if not isinstance(inner, (MergeItem, CatItem)) or _home(item, prefix)[0] is not None:
        return False
    n = len(prefix)
    seen: set = set()
    for branch in inner.branches:     # Res2Net's first block: convs.i in branch i
        held = {p[n] for p in _stateful_paths(branch) if p[:n] == prefix and len(p) > n + 1}
        if held & seen:
            return True
        seen |= held
    theirs = {p[n] for other in items if other is not item
              for p in _stateful_paths([other]) if p[:n] == prefix and len(p) > n}
    return bool(seen & theirs)


def _wire(entry: dict, reads) -> dict:
    """Note the nodes an entry reads (the wiring pass writes its `from`)."""
    if reads is not None:
        (entry["_rows"][0] if "_rows" in entry else entry)["_in"] = tuple(reads)
    return entry


def _attach_posts(items, prefix, shared=frozenset(), posts=None) -> list:
    """A residual and the activation after it (of the same module) as one
    item: the activation becomes the merge's `activation` (not where the sum
    is read elsewhere too)."""
    out = []
    for item in items:
        prev = out[-1] if out else None
        if isinstance(prev, MergeItem) and prev.op == "add" and prev.post is None and \
                prev.node.index not in shared and \
                isinstance(item, FlowNode) and not item.stateful and len(item.rows) == 1 and \
                item.rows[0][0] in ACTIVATIONS and _plain(_entry(*item.rows[0]),
                                                          item.rows[0][0]) and \
                _home(item, prefix)[0] == _home(prev, prefix)[0]:
            prev.post, prev.post_node = item.rows[0][0], item.index
            if posts is not None:
                posts[item.index] = item
            continue
        out.append(item)
    return out


def _structure_row(item) -> str:
    """The name graph.py gives the merge row of a structure with a level of its own."""
    if isinstance(item, MergeItem):
        return "scale" if item.op == "mul" else "add"
    return "concat"     # a concat's, a dense merge's too


def _structure_name(item) -> str:
    if isinstance(item, MergeItem):
        return item.op
    return "concat"


def _count(items) -> int:
    total = 0
    for item in items:
        total += 1 if isinstance(item, FlowNode) else sum(_count(b) for b in item.branches)
    return total


def _is_projection(items, prefix) -> bool:
    """The shortcut 'auto' builds: 1x1 conv without bias (strided), batch norm
    with PyTorch's defaults, as modules 0 and 1 of the shortcut's level."""
    if len(items) != 2 or not all(isinstance(i, FlowNode) and i.op == "row" and len(i.rows) == 1
                                  for i in items):
        return False
    (k1, a1), (k2, a2) = items[0].rows[0], items[1].rows[0]
    if items[0].path != (*prefix, "0") or items[1].path != (*prefix, "1"):
        return False
    if k1 != "conv" or k2 != "batch_norm":
        return False
    conv_ok = a1.get("kernel") == 1 and not a1.get("bias", True) and \
        a1.get("padding", 0) in (0, "valid") and a1.get("dilation", 1) == 1 and \
        a1.get("groups", 1) == 1 and not a1.get("depthwise") and \
        a1.get("padding_mode", "zeros") == "zeros" and isinstance(a1.get("stride", 1), int)
    bn_ok = a2.get("affine", True) and a2.get("eps", 1e-5) == 1e-5 and \
        a2.get("momentum", 0.1) == 0.1
    return conv_ok and bn_ok


def _resolve_names(v):
    if isinstance(v, (_Name, _Ref)):
        return v.value
    if isinstance(v, dict):
        return {k: _resolve_names(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_resolve_names(x) for x in v]
    return v


def _annotate_classes(entries, prefix, classes):
    """Each named level's module class (the writer names blocks after it)."""
    for e in entries:
        if not isinstance(e, dict):
            if isinstance(e, list):
                _annotate_classes(e, prefix, classes)
            continue
        name = e.get("name")
        flat = e.get("flat")
        inner = prefix if flat or not isinstance(name, str) else (*prefix, name)
        if not flat and isinstance(name, str) and inner in classes:
            e["_class"] = classes[inner]
        for k in ("layers", "residual", "scale", "dense"):
            if isinstance(e.get(k), list):
                _annotate_classes(e[k], inner, classes)
        for k in ("concat", "split"):
            for b in e.get(k, []) or []:
                if isinstance(b, dict):
                    bn = b.get("name")
                    sub = (*inner, bn) if bn else inner
                    if bn and sub in classes:
                        b["_class"] = classes[sub]
                    _annotate_classes(b.get("layers", []), sub, classes)
                elif isinstance(b, list):
                    _annotate_classes(b, inner, classes)
        short = e.get("shortcut")
        if isinstance(short, list):
            _annotate_classes(short, (*inner, e.get("shortcut_name", "shortcut")), classes)
