"""A Report's rows hung on the graph they came from: blocks with their rows,
branches of a concat side by side, a residual's body and shortcut, each merge
with its own row. The report's graph view and `archcalc lint` read it.

The walk follows the engine's order (analysis._Walker): a layer is one row;
a concat's branches come before its concat row; a merge's body, then its
shortcut (a row named "shortcut" where one was added), then its merge row.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Concat, Heads, Layer, Merge, Sequence, Transform


class Misaligned(Exception):
    """The rows do not follow the graph (a report folded with --depth)."""


@dataclass
class Node:
    kind: str                 # "block", "layer", "concat", "merge" or "heads"
    name: str
    path: tuple
    row: object = None        # layer: its row; concat and merge: the merge row
    children: list = field(default_factory=list)   # block: items; concat: branches
    body: list = field(default_factory=list)       # merge: the body's nodes
    shortcut: list = field(default_factory=list)   # merge: [] for identity
    op: str = ""              # merge: add, mul or concat (dense)

    def rows(self):
        """Every row under this node, in table order."""
        if self.kind == "layer":
            yield self.row
            return
        for child in self.children + self.body + self.shortcut:
            yield from child.rows()
        if self.row is not None:
            yield self.row


def structure(report) -> Node:
    """The root block (the model's body); rows[0], the input, stays apart."""
    rows = report.rows
    at = [1]

    def take(path):
        if at[0] >= len(rows) or tuple(rows[at[0]].path) != tuple(path):
            found = rows[at[0]].path if at[0] < len(rows) else "the end"
            raise Misaligned(f"expected row {'/'.join(path)}, found {found}")
        at[0] += 1
        return rows[at[0] - 1]

    def items(seq: Sequence, path) -> list:
        out = []
        for item in seq.items:
            node = walk(item, path)
            if node.kind == "block" and not node.name:   # an unnamed sequence: inline
                out.extend(node.children)
            else:
                out.append(node)
        return out

    def walk(node, path) -> Node:
        if isinstance(node, Layer):
            full = (*path, node.name)
            return Node("layer", node.name, full, take(full))
        if isinstance(node, Sequence):
            inner = (*path, node.name) if node.name else tuple(path)
            return Node("block", node.name, inner, children=items(node, inner))
        if isinstance(node, Concat):
            branches = [walk(b, path) for b in node.branches]
            return Node("concat", node.name, (*path, node.name),
                        take((*path, node.name)), children=branches)
        if isinstance(node, Transform):   # the loc net as the body, the sampler row its merge
            body = walk(node.loc, path)
            return Node("merge", node.name, (*path, node.name), take((*path, node.name)),
                        body=[body], shortcut=[], op="transform")
        if isinstance(node, Heads):  # side outputs: no row of their own
            return Node("heads", "", tuple(path), children=[walk(h, path) for h in node.heads])
        if isinstance(node, Merge):
            body = walk(node.body, path)
            body = body.children if not body.name else [body]
            if isinstance(node.shortcut, Sequence):
                short = walk(node.shortcut, path)
                short = short.children if not short.name else [short]
            elif at[0] < len(rows) and tuple(rows[at[0]].path) == (*path, node.shortcut_name):
                full = (*path, node.shortcut_name)
                short = [Node("layer", node.shortcut_name, full, take(full))]
            else:
                short = []
            return Node("merge", node.name, (*path, node.name), take((*path, node.name)),
                        body=body, shortcut=short, op=node.op)
        raise Misaligned(f"unknown graph node {type(node).__name__}")

    root = Node("block", "", (), children=items(report.model.body, ()))
    if at[0] != len(rows):
        raise Misaligned(f"{len(rows) - at[0]} rows left over")
    return root


def carriers(node: Node) -> list:
    """The rows that carry the whole representation: every row of the main
    path, a concat or a merge by its merged row (not the branches or the
    residual body, whose input other paths still carry)."""
    if node.kind == "layer":
        return [node.row]
    if node.kind in ("concat", "merge"):
        return [node.row]
    if node.kind == "heads":   # outputs beside the main line, which goes on unchanged
        return []
    out = []
    for child in node.children:
        out.extend(carriers(child))
    return out
