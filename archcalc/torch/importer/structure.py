"""Structure recovery: the dataflow folded into sequences, merges (residual add,
gate mul), concats (dense: DenseNet's running concatenation) and splits; a
region that does not fold (DLA's trees, DPN's dual paths, an FPN) becomes
items that name what they read (`Wired`: the spec's `from` and `merge`), its
single-entry single-exit parts still folded."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import SpecError
from .dataflow import FlowNode


# --------------------------------------------------------------------------
# structure: the dataflow folded into sequences, merges, concats and splits


def _normalize_cats(nodes: list, output: FlowNode) -> None:
    """cat is associative: a cat whose inputs begin with the inputs of an
    earlier cat takes that cat instead (DenseNet's running concatenation:
    cat(x0, f1, f2) = cat(cat(x0, f1), f2))."""
    atoms: dict[int, tuple] = {}
    for n in nodes:
        if n.op != "cat":
            continue
        flat = tuple(a for i in n.inputs for a in atoms.get(i, (i,)))
        atoms[n.index] = flat
        best = None
        for other, seq in atoms.items():
            if other != n.index and 1 < len(seq) < len(flat) and flat[:len(seq)] == seq \
                    and other < n.index and (best is None or len(seq) > len(atoms[best])):
                best = other
        if best is not None:
            n.inputs = [best, *flat[len(atoms[best]):]]


@dataclass
class MergeItem:
    op: str                  # add | mul
    branches: list           # two item lists ([] for the identity)
    node: FlowNode
    post: str | None = None  # the activation after the add
    source: int = -1         # the node both branches start from
    post_node: int | None = None   # the activation's node, once attached


@dataclass
class CatItem:
    branches: list
    node: FlowNode
    source: int = -1


@dataclass
class SplitItem:
    branches: list
    sizes: tuple
    node: FlowNode
    source: int = -1


@dataclass
class Wired:
    """An item that reads named nodes, not the previous item's output: a row or
    a folded part of a region that does not fold (its input), or a merge of
    computed tensors (its inputs). Its branches are itself, so the walks over
    items (paths, levels) see through it."""
    item: object
    reads: tuple

    @property
    def branches(self) -> list:
        return [[self.item]]



MERGE_OPS = ("add", "mul", "cat", "sub")   # FlowNode ops that combine computed tensors


def out_index(item) -> int:
    """The node whose value an item gives (a residual's post activation's)."""
    if isinstance(item, FlowNode):
        return item.index
    if isinstance(item, Wired):
        return out_index(item.item)
    if isinstance(item, MergeItem) and item.post_node is not None:
        return item.post_node
    return item.node.index


def unwired(item):
    """(the item, the nodes it reads or None for the previous item's output)."""
    if isinstance(item, Wired):
        return item.item, item.reads
    return item, None


class _Recover:
    """Fold the dataflow from the input to the output. ``outputs``: the nodes a
    model of several outputs returns (a sink node reads them all)."""

    def __init__(self, nodes: list, output: FlowNode, outputs: list | None = None):
        self.nodes = list(nodes)
        self.output = output
        self.sink = None
        if outputs and len({n.index for n in outputs}) > 1:
            self.sink = len(self.nodes)
            ins = list(dict.fromkeys(n.index for n in outputs))
            self.output = FlowNode(self.sink, "outputs", ins, (), ())
            self.nodes.append(self.output)
        self._index()
        if self._slices_apart():
            self._index()
        self.seen: set = set()

    def _index(self):
        """Each node's ancestors (a bit mask) and readers."""
        self.anc = []
        for n in self.nodes:
            mask = 1 << n.index
            for i in n.inputs:
                mask |= self.anc[i]
            self.anc.append(mask)
        self.users: dict[int, list] = {n.index: [] for n in self.nodes}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                self.users[i].append(n.index)

    def _slices_apart(self) -> bool:
        """A split whose slices do not fold into a `split` entry (Res2Net adds
        slice i to the previous branch's output; a slice left unused) gives
        one channel_slice row per used slice, reading the split's input: the
        split's node is left unread. True where any was rewritten."""
        changed = False
        for s in [n.index for n in self.nodes if n.op == "split"]:
            self.seen = set()
            try:
                item, _ = self.split(s, self.output.index)
                if not _shares_a_module(item.branches, len(self.nodes[s].path)):
                    continue
            except SpecError:
                pass
            self._slice_apart(s)
            changed = True
        return changed

    def _slice_apart(self, s: int):
        """Split ``s``'s slices as channel_slice rows of its input (re-indexed
        by the caller)."""
        split = self.nodes[s]
        starts = [sum(split.sizes[:k]) for k in range(len(split.sizes) + 1)]
        for u in self.users[s]:
            node = self.nodes[u]
            node.op, node.inputs, node.scoped = "row", [split.inputs[0]], True
            node.rows = [("channel_slice",
                          {"channels": [starts[node.slot], starts[node.slot + 1]]})]

    def inside(self, n: int, cur: int, stop: int) -> bool:
        return bool((self.anc[n] >> cur) & 1) and bool((self.anc[stop] >> n) & 1)

    def run(self) -> list:
        return self.seq(0, self.output.index, fallback=True)

    def shared(self) -> set:
        """Nodes read more than once (a post activation cannot fuse into them)."""
        return {i for i, us in self.users.items() if len(us) > 1}

    def fail(self, n: int, what: str):
        node = self.nodes[n]
        where = ".".join(node.path) or "the model's forward"
        raise SpecError(f"cannot fold the dataflow at {where} into spec structures: {what}")

    def seq(self, cur: int, stop: int, fallback: bool = False) -> list:
        """Items from ``cur`` (excluded) to ``stop``. fallback: a step that does
        not fold (rolled back) becomes a graph region up to its join."""
        items = []
        while cur != stop:
            if not fallback:
                item, cur = self.step(cur, stop)
                items.append(item)
                continue
            seen = set(self.seen)
            try:
                item, nxt = self.step(cur, stop)
                items.append(item)
            except SpecError:
                self.seen = seen
                try:
                    nxt = self.join(cur, stop)
                except SpecError:
                    nxt = stop
                items.extend(self.graph(cur, nxt))
            cur = nxt
        return items

    def step(self, cur: int, stop: int):
        """One item after ``cur`` and the node it ends at."""
        consumers = [u for u in self.users[cur] if self.inside(u, cur, stop)]
        if not consumers:
            self.fail(cur, "a path ends before the output")
        if len(consumers) == 1 and self.nodes[consumers[0]].op == "row":
            u = consumers[0]
            self.visit(u)
            return self.nodes[u], u
        if len(consumers) == 1 and self.nodes[consumers[0]].op == "split":
            return self.split(consumers[0], stop)
        join = self.join(cur, stop)
        return self.structure(cur, join), join

    def visit(self, n: int):
        if n in self.seen:
            self.fail(n, "two paths share a layer")
        self.seen.add(n)

    def join(self, cur: int, stop: int) -> int:
        """The first node every path from ``cur`` goes through."""
        pending = {cur: sum(1 for u in self.users[cur] if self.inside(u, cur, stop))}
        live = {cur}
        for u in range(cur + 1, stop + 1):
            if not self.inside(u, cur, stop):
                continue
            for i in dict.fromkeys(self.nodes[u].inputs):
                if i not in live:
                    if not self.inside(i, cur, stop):
                        self.fail(u, "a layer reads a tensor from before the fork")
                    continue
                pending[i] -= 1
                if pending[i] == 0:
                    live.discard(i)
            pending[u] = sum(1 for w in self.users[u] if self.inside(w, cur, stop))
            live.add(u)
            if live == {u} and u != cur:
                return u
        self.fail(cur, "its paths never meet")

    def structure(self, cur: int, join: int):
        node = self.nodes[join]
        self.visit(join)
        if node.op in ("add", "mul"):
            a, b = node.inputs
            if a == b:
                self.fail(join, f"{node.op} of a tensor with itself")
            return MergeItem(node.op, [[] if i == cur else self.seq(cur, i) for i in (a, b)],
                             node, source=cur)
        if node.op == "sub":     # no structure says it: a merge entry names both inputs
            self.fail(join, "a subtraction (a merge entry that names its inputs)")
        if node.op == "cat":
            if len(set(node.inputs)) != len(node.inputs):
                self.fail(join, "a concat of one tensor twice")
            return CatItem([[] if i == cur else self.seq(cur, i) for i in node.inputs], node,
                           source=cur)
        self.fail(join, f"the paths meet at a {node.rows[0][0] if node.rows else node.op} "
                        "that takes one input")

    def split(self, s: int, stop: int):
        node = self.nodes[s]
        self.visit(s)
        slices = {self.nodes[u].slot: u for u in self.users[s] if self.inside(u, s, stop)}
        if sorted(slices) != list(range(len(node.sizes))):
            self.fail(s, "a split whose slices are not all used")
        join = self.join(s, stop)
        cat = self.nodes[join]
        if cat.op != "cat" or len(cat.inputs) != len(slices):
            self.fail(s, "a split whose slices are not concatenated again")
        self.visit(join)
        branches = []
        for slot, i in enumerate(cat.inputs):
            start = slices[slot]
            if not self.inside(i, start, join) and i != start:
                self.fail(s, "a split whose slices are concatenated in another order")
            self.visit(start)
            branches.append([] if i == start else self.seq(start, i))
        return SplitItem(branches, node.sizes, cat, source=node.inputs[0]), join

    # -- regions that do not fold -------------------------------------------------
    def graph(self, cur: int, join: int) -> list:
        """The region from ``cur`` to ``join`` as items, each naming what it reads
        where that is not the previous item: merges of computed tensors by their
        inputs, and the largest single-entry single-exit parts (a chain, a
        residual block) folded as usual; ordered so that a module's items stay
        together (a spec level is one place)."""
        todo = [u for u in range(cur + 1, join + 1)
                if u != self.sink and self.inside(u, cur, join)]
        parts = []      # (item, the nodes it reads, its output node)
        while todo:
            u = todo[0]
            node = self.nodes[u]
            if node.op in MERGE_OPS:
                self.visit(u)
                parts.append((node, tuple(node.inputs), u))
                todo.pop(0)
                continue
            if node.op == "slice":      # its split before this region: a row of its input
                self._slice_apart(node.inputs[0])
                self._index()
            if node.op not in ("row", "split"):
                self.fail(u, f"a {node.op} that no spec entry gives alone")
            a, end = node.inputs[0], self.chunk_end(u, join)
            if node.op == "split" and end == u:
                # folds alone, not in this region (DLA's tree around a Res2Net block)
                self._slice_apart(u)
                self._index()
                todo.pop(0)
                continue
            prev = a
            for item in self.seq(a, end, fallback=True):
                item, reads = unwired(item)
                parts.append((item, reads or (prev,), out_index(item)))
                prev = out_index(item)
            span = self.span(u, end)
            todo = [v for v in todo if not (span >> v) & 1]
        items, prev = [], cur
        for item, reads, out in _by_module(parts):
            merge = isinstance(item, FlowNode) and item.op in MERGE_OPS
            items.append(item if reads == (prev,) and not merge else Wired(item, reads))
            prev = out
        return items

    def span(self, u: int, b: int) -> int:
        """The nodes on the paths from u to b (a bit mask)."""
        mask = 0
        for v in range(u, b + 1):
            if (self.anc[b] >> v) & 1 and (self.anc[v] >> u) & 1:
                mask |= 1 << v
        return mask

    def closed(self, u: int, b: int) -> bool:
        """Only u reads from outside the span u..b, only b is read outside it."""
        span = self.span(u, b)
        for v in range(u, b + 1):
            if not (span >> v) & 1:
                continue
            if v != u and any(not (span >> i) & 1 for i in self.nodes[v].inputs):
                return False
            if v != b and any(not (span >> w) & 1 for w in self.users[v]):
                return False
        return True

    def chunk_end(self, u: int, join: int) -> int:
        """The last node b such that u..b is single-entry single-exit (a chain,
        or a fork and the node its paths meet at), grown from u."""
        end = u
        while end != join:
            users = self.users[end]
            if len(users) == 1 and self.nodes[users[0]].inputs == [end] and \
                    users[0] != self.sink:
                end = users[0]
                continue
            if len(users) < 2 or any(not self.inside(w, end, join) for w in users):
                break
            try:
                nxt = self.join(end, join)
            except SpecError:
                break
            if nxt == self.sink or not self.closed(u, nxt):
                break
            end = nxt
        return end


def _modules_in(items, depth: int) -> set:
    """The child modules at ``depth`` of the stateful rows in items."""
    out = set()
    for item in items:
        if isinstance(item, FlowNode):
            if item.stateful and len(item.path) > depth:
                out.add(item.path[depth])
        else:
            for branch in item.branches:
                out |= _modules_in(branch, depth)
    return out


def _shares_a_module(branches, depth: int) -> bool:
    """Two branches hold rows of one child module (Res2Net's first block:
    convs.i in branch i): as a split's branches that level would be written
    in several places, as rows it is one."""
    seen: set = set()
    for branch in branches:
        mods = _modules_in(branch, depth)
        if mods & seen:
            return True
        seen |= mods
    return False


def _locus(item) -> tuple:
    """The module path an item lives in: its own, or what its rows share."""
    if isinstance(item, FlowNode):
        return item.path
    paths = [p for branch in item.branches for part in branch for p in [_locus(part)]]
    if not paths:
        return ()
    common = paths[0]
    for p in paths[1:]:
        k = 0
        while k < min(len(common), len(p)) and common[k] == p[k]:
            k += 1
        common = common[:k]
    return common


def _by_module(parts: list, depth: int = 0) -> list:
    """The parts in an order the dataflow allows that keeps each module's parts
    together (a spec level is one place): grouped by their module at
    ``depth``, the groups in the order their reads allow (a transition before
    the stage that reads it), each group ordered so one level deeper. Where
    modules read each other both ways (HRNet's downsampling calls between
    adds), the first module's parts that can go go first, the rest later."""
    keys = []
    for k, (item, _, _) in enumerate(parts):
        locus = _locus(item)
        keys.append(locus[depth] if len(locus) > depth else ("", k))
    groups: dict = {}
    for k, key in enumerate(keys):
        groups.setdefault(key, []).append(k)
    if len(groups) == 1 and isinstance(keys[0], str):
        return _by_module(parts, depth + 1)
    made = {out for _, _, out in parts}
    done: set = set()
    out = []

    def outside_ready(k, key):
        return all(r not in made or r in done or keys[owner[r]] == key for r in parts[k][1])

    owner = {o: k for k, (_, _, o) in enumerate(parts)}
    while groups:
        ready = [key for key, members in groups.items()
                 if all(outside_ready(k, key) for k in members)]
        if ready:
            key = min(ready, key=lambda g: groups[g][0])
            take, groups[key] = groups[key], []
        else:      # the earliest module: the parts that can go now
            key = min(groups, key=lambda g: groups[g][0])
            members = groups[key]
            n = next((i for i, k in enumerate(members) if not outside_ready(k, key)),
                     len(members))
            take, groups[key] = members[:n], members[n:]
        if not groups[key]:
            del groups[key]
        chosen = [parts[k] for k in take]
        out.extend(chosen if len(chosen) == 1 else _by_module(chosen, depth + 1))
        done.update(o for _, _, o in chosen)
    return out
