"""Structure recovery: the dataflow folded into sequences, merges (residual add,
gate mul), concats (dense: DenseNet's running concatenation) and splits."""
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


@dataclass
class CatItem:
    branches: list
    node: FlowNode


@dataclass
class SplitItem:
    branches: list
    sizes: tuple
    node: FlowNode


class _Recover:
    def __init__(self, nodes: list, output: FlowNode):
        self.nodes = nodes
        self.output = output
        self.anc = []
        for n in nodes:
            mask = 1 << n.index
            for i in n.inputs:
                mask |= self.anc[i]
            self.anc.append(mask)
        self.users: dict[int, list] = {n.index: [] for n in nodes}
        for n in nodes:
            for i in dict.fromkeys(n.inputs):
                self.users[i].append(n.index)
        self.seen: set = set()

    def inside(self, n: int, cur: int, stop: int) -> bool:
        return bool((self.anc[n] >> cur) & 1) and bool((self.anc[stop] >> n) & 1)

    def run(self) -> list:
        return self.seq(0, self.output.index)

    def fail(self, n: int, what: str):
        node = self.nodes[n]
        where = ".".join(node.path) or "the model's forward"
        raise SpecError(f"cannot fold the dataflow at {where} into spec structures: {what}")

    def seq(self, cur: int, stop: int) -> list:
        items = []
        while cur != stop:
            consumers = [u for u in self.users[cur] if self.inside(u, cur, stop)]
            if not consumers:
                self.fail(cur, "a path ends before the output")
            if len(consumers) == 1 and self.nodes[consumers[0]].op == "row":
                u = consumers[0]
                self.visit(u)
                items.append(self.nodes[u])
                cur = u
                continue
            if len(consumers) == 1 and self.nodes[consumers[0]].op == "split":
                item, cur = self.split(consumers[0], stop)
                items.append(item)
                continue
            join = self.join(cur, stop)
            items.append(self.structure(cur, join))
            cur = join
        return items

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
                             node)
        if node.op == "cat":
            if len(set(node.inputs)) != len(node.inputs):
                self.fail(join, "a concat of one tensor twice")
            return CatItem([[] if i == cur else self.seq(cur, i) for i in node.inputs], node)
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
        return SplitItem(branches, node.sizes, cat), join
