"""The nodes of a built graph and the one contract every walk of them follows.

Every node class names its method on a visitor (``visit_name``); a walk is a
``Visitor`` subclass with one method per node class, and ``visitor.visit(node,
...)`` calls the node's method (as torch.fx's Interpreter calls ``call_module``
or ``call_function`` by a node's op). No walk tests a node's class: a new
structure declares its ``visit_name`` (a class without one fails at its
definition), and every visitor that lacks the method fails loudly the first
time it meets the new node.

Nodes (graph.py builds them from a spec):
- ``Layer``: one table row (the only leaf);
- ``Sequence``: nodes in order; a named one adds a level to the path;
- ``Concat`` / ``Split``: branches concatenated along channels;
- ``Heads``: named outputs beside the main line;
- ``Transform``: a spatial transformer (its localisation net, then its sampler);
- ``Merge``: a body and a shortcut combined (add, mul or concat);
- ``Join``: a merge entry of a general graph: named outputs combined (add,
  concat or mul), its own row.

A general graph (``from = "NAME"``) hangs on the same nodes: any node may
read a named ``source`` (a ``Ref``: an earlier node's output, or a list's
input) instead of the output of the node before it.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from . import sym
from .errors import SpecError
from .layers import lookup
from .layers.base import Kind, fmt_shape


class Node:
    """A node of the graph. ``visit_name``: the visitor method that handles it."""
    visit_name = ""
    leaf = False            # a Layer: one table row of its own
    generated_row = False   # a row of its own that no spec table wrote (a merge, a sampler)
    source = None           # a Ref: the node reads it instead of the previous node's output

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("visit_name", "").startswith("visit_"):
            raise TypeError(f"graph node class {cls.__name__} must name its visitor method "
                            "(visit_name = \"visit_...\")")

    def accept(self, visitor: "Visitor", *args, **kwargs):
        method = getattr(visitor, self.visit_name, None)
        if method is None:
            raise TypeError(f"{type(visitor).__name__} has no {self.visit_name}: it cannot walk "
                            f"a {type(self).__name__} node")
        return method(self, *args, **kwargs)

    def children(self) -> tuple:
        """The nodes right under this one, in the engine's order."""
        return ()

    def layers(self):
        """Every Layer under this node, in order (shortcut layers after the body)."""
        for child in self.children():
            yield from child.layers()

    def ends_in_heads(self) -> bool:
        """Whether the node's last part is a Heads node (no main line after it)."""
        return False


class Visitor:
    """A walk of the graph: one ``visit_<node>`` method per node class it handles."""

    def visit(self, node: Node, *args, **kwargs):
        return node.accept(self, *args, **kwargs)


@dataclass(frozen=True, eq=False)
class Ref:
    """What ``from = "NAME"`` names: the output of an earlier node, or, with
    ``input``, the input of a list (its Sequence node). ``text`` is the name as
    written; ``key`` identifies the value a walk keeps for the reader."""
    text: str
    node: Node
    input: bool = False

    @property
    def key(self) -> tuple:
        return (id(self.node), self.input)


@dataclass(frozen=True)
class Op:
    kind: Kind
    args: SimpleNamespace


@dataclass
class Layer(Node):
    """One row of the table: its main op, then fused ops (batch norm, activation)."""
    name: str
    ops: tuple[Op, ...]
    file: str | None = None
    line: int | None = None
    label: str = ""        # how errors name it: its name, or "#2 (conv1)" when unnamed
    auto: bool = False     # the name was made up (relu2), not written in the spec
    flat: bool = False     # its parameter sits on the enclosing block, named as the row
    grows: bool = False    # `grows = true`: a map that grows is meant (no warning)
    visit_name = "visit_layer"
    leaf = True

    @property
    def type(self) -> str:
        return "+".join(op.kind.name for op in self.ops)

    def layers(self):
        yield self


@dataclass
class Sequence(Node):
    items: list
    name: str = ""          # "" adds no level to the path
    auto: bool = False      # the name was made up (residual1, basic2)
    visit_name = "visit_sequence"

    def children(self) -> tuple:
        return tuple(self.items)

    def ends_in_heads(self) -> bool:
        return bool(self.items) and self.items[-1].ends_in_heads()


@dataclass
class Concat(Node):
    branches: list          # of Sequence, named b1, b2, ...
    name: str = "concat"
    visit_name = "visit_concat"
    generated_row = True

    def children(self) -> tuple:
        return tuple(self.branches)


@dataclass
class Split(Node):
    branches: list          # of Sequence, named b1, b2, ...; an empty one is the identity
    sizes: tuple | None     # channels per branch; None: equal slices
    name: str = "concat"    # the row where the branches are concatenated again
    visit_name = "visit_split"
    generated_row = True

    def children(self) -> tuple:
        return tuple(self.branches)


@dataclass
class Heads(Node):
    """Named outputs: each head (a named Sequence) reads the input; the node
    passes its input on unchanged. A head is an output (a leaf) unless its
    layer list ends in heads of its own (the RPN's 3x3 conv, then its scores
    and offsets)."""
    heads: list             # of Sequence, named by the spec
    name: str = "heads"
    visit_name = "visit_heads"

    @property
    def branches(self):
        return self.heads

    def children(self) -> tuple:
        return tuple(self.heads)

    def ends_in_heads(self) -> bool:
        return True


@dataclass
class Transform(Node):
    """A spatial transformer: ``loc`` (a Sequence named "loc") regresses theta
    from the input; ``sampler`` (an affine_sampler op) warps the input with it."""
    loc: Sequence
    sampler: Op
    name: str = "sampler"
    visit_name = "visit_transform"
    generated_row = True

    def children(self) -> tuple:
        return (self.loc,)


@dataclass
class Merge(Node):
    body: Sequence
    shortcut: object        # "identity" | "auto" | "projection" | "pad" | Sequence
    op: str                 # add | mul | concat
    post: tuple = ()        # fused ops after the merge
    name: str = "add"
    shortcut_name: str = "shortcut"   # the shortcut's level (torchvision: "downsample")
    visit_name = "visit_merge"
    generated_row = True

    @property
    def shortcut_layers(self) -> Sequence | None:
        """The shortcut written as a list of layers, or None (a mode the
        shapes resolve: graph.shortcut_ops)."""
        return self.shortcut if isinstance(self.shortcut, Sequence) else None

    def children(self) -> tuple:
        short = self.shortcut_layers
        return (self.body,) if short is None else (self.body, short)

    @property
    def adds_in_place(self) -> bool:
        """torchvision's `out += identity`: safe when the body ends in a layer
        whose output is fresh (no view) and kept by no backward."""
        if self.op != "add" or not self.body.items or not self.body.items[-1].leaf:
            return False
        op = self.body.items[-1].ops[-1]
        dummy = (1, 1, 1)
        return not in_place(op, shared=False) and not op.kind.saved(op.args, dummy, dummy).output


@dataclass
class Join(Node):
    """A merge entry, ``{merge = "add", from = ["a", "b"]}``: the named outputs
    combined (add, mul: elementwise, a C x 1 x 1 gate broadcast; concat: along
    channels), then its fused ops; one row of its own, written by the spec."""
    name: str
    sources: tuple          # of Ref, in the order written
    op: str                 # add | mul | concat
    post: tuple = ()        # fused ops after the merge (activation)
    file: str | None = None
    line: int | None = None
    auto: bool = False
    visit_name = "visit_join"

    @property
    def type(self) -> str:
        return "+".join([self.op, *(op.kind.name for op in self.post)])


NODE_CLASSES = (Layer, Sequence, Concat, Split, Heads, Transform, Merge, Join)


def in_place(op: Op, shared: bool, input_saved: bool = False) -> bool:
    """Whether an op writes into its input: an in-place kind (ReLU), unless its
    input is shared: the first op of a branch, a residual body or the model,
    whose input other paths still read; or unless an earlier op keeps that
    input for its backward (a sigmoid's output: overwriting it would break
    the backward pass)."""
    return op.kind.shares_storage(op.args) and (op.kind.view or not (shared or input_saved))


def walk(node: Node):
    """Every Layer under a node, in order (shortcut layers after the body)."""
    return node.layers()


def ends_in_heads(node: Node) -> bool:
    return node.ends_in_heads()


def is_leaf(head: Sequence) -> bool:
    """A head is an output unless it ends in heads of its own."""
    return not head.ends_in_heads()


# --------------------------------------------------------------------------
# shortcuts: resolved from shapes, by the engine and the torch builder alike


def shortcut_ops(merge: Merge, x: tuple, y: tuple) -> tuple | None:
    """The ops of an 'auto' or 'projection' shortcut from input x to body output y.

    None means identity. A projection is a 1x1 conv without bias plus batch
    norm (torchvision's downsample), strided to match y's size.
    """
    mode = merge.shortcut
    if mode == "identity" or (mode in ("auto", "pad") and same_shape(x, y)):
        return None
    if len(x) != 3 or len(y) != 3:
        raise SpecError(f"a projection shortcut needs C x H x W shapes; "
                        f"received {fmt_shape(x)} and {fmt_shape(y)}")
    stride = []
    for n, m in zip(x[1:], y[1:]):
        if not (isinstance(n, int) and isinstance(m, int)):
            if sym.norm(n - m) == 0:
                stride.append(1)
                continue
            raise SpecError(f"cannot infer the projection's stride from {sym.fmt_int(n)} "
                            f"to {sym.fmt_int(m)}; write the shortcut as a list of layers")
        s = max(1, -(-n // m))
        if (n - 1) // s + 1 != m:
            raise SpecError(f"no stride maps {n} to {m} with a 1x1 projection")
        stride.append(s)
    if mode == "pad":
        if sym.known_positive(y[0] - x[0] + 1) is False:
            raise SpecError(f"a 'pad' shortcut only adds channels; "
                            f"{sym.fmt_int(x[0])} -> {sym.fmt_int(y[0])}")
        pad = lookup("pad_shortcut")
        return (Op(pad, pad.read_args({"out": y[0], "stride": list(stride)}, {})),)
    conv, bn = lookup("conv"), lookup("batch_norm")
    return (Op(conv, conv.read_args({"out": y[0], "kernel": 1, "stride": list(stride),
                                     "bias": False}, {})),
            Op(bn, bn.read_args({}, {})))


def split_sizes(node: Split, x: tuple) -> tuple:
    """The channels of each slice of a split of input x (checked against C)."""
    if len(x) != 3:
        raise SpecError(f"split needs a C x H x W input; received {fmt_shape(x)}")
    c, n = x[0], len(node.branches)
    if node.sizes is None:
        if isinstance(c, int) and c % n:
            raise SpecError(f"{c} channels do not split into {n} equal slices; "
                            "give sizes = [...]")
        return (sym.exact_div(c, n),) * n
    total = sym.total(node.sizes)
    if sym.norm(total - c) != 0 and not (sym.is_symbolic(total) or sym.is_symbolic(c)):
        raise SpecError(f"sizes {[sym.fmt_int(s) for s in node.sizes]} add up to "
                        f"{sym.fmt_int(total)}, but the input has {sym.fmt_int(c)} channels")
    return node.sizes


def same_shape(a, b) -> bool:
    return len(a) == len(b) and all(sym.norm(p - q) == 0 for p, q in zip(a, b))
