"""A Report's rows hung on the graph they came from: blocks with their rows,
branches of a concat side by side, a residual's body and shortcut, each merge
with its own row. The report's graph view and `archcalc lint` read it.

The engine (analysis._Walker) builds it as it walks, one tree node per graph
node it visits, so the tree's rows are the table's rows in the same order by
construction: a layer or a merge entry (join) is one row; a concat's
branches come before its concat row; a merge's body, then its shortcut (a row
named "shortcut" where one was added), then its merge row.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("block", "layer", "concat", "merge", "heads", "join")


@dataclass
class TreeNode:
    role: str                 # one of ROLES
    name: str
    path: tuple
    row: object = None        # layer: its row; concat and merge: the merge row
    children: list = field(default_factory=list)   # block: items; concat, heads: branches
    body: list = field(default_factory=list)       # merge: the body's nodes
    shortcut: list = field(default_factory=list)   # merge: [] for identity
    op: str = ""              # merge, join: add, mul, concat (dense) or transform
    inputs: list = field(default_factory=list)     # rows read when not the previous one (from)

    def rows(self):
        """Every row under this node, in table order."""
        if self.role in ("layer", "join"):   # a join's inputs are rows of other nodes
            yield self.row
            return
        for child in self.children + self.body + self.shortcut:
            yield from child.rows()
        if self.row is not None:
            yield self.row


def carriers(node: TreeNode) -> list:
    """The rows that carry the whole representation: every row of the main
    path, a concat or a merge by its merged row (not the branches or the
    residual body, whose input other paths still carry)."""
    if node.role in ("layer", "concat", "merge", "join"):
        return [node.row]
    if node.role == "heads":   # outputs beside the main line, which goes on unchanged
        return []
    out = []
    for child in node.children:
        out.extend(carriers(child))
    return out
