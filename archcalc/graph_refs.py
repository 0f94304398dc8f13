"""Names of a general graph: ``from = "NAME"``, merge entries and
``[model] outputs``, resolved lexically while graph.py builds the nodes.

A layer list is a frame: the entries built so far, by name. ``from`` reads an
earlier entry of its own list or of an enclosing one, up to the body of the
block instance it sits in (a block stays a function of its input); a dotted
path ("layer3.conv2") goes down named levels from there; ``"input"`` names the
list's own input. Since a name must be written before it is read, the graph
is a DAG by construction. When a list ends, every entry's output must be read
by someone: the next entry, a ``from``, or the model's outputs.
"""
from __future__ import annotations

import re
from collections import deque
from contextlib import contextmanager

from .errors import SpecError, path_text
from .structures import Join, Node, Ref, Sequence

# A layer's name is a PyTorch module name and a path component everywhere
# (table, JSON, export, `check`): letters, digits, underscores and hyphens
# (torchvision's RegNet names its blocks block1-0), no dots or slashes, which
# would read as path separators (an entry's dotted name is a path: check_name).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Attributes of torch.nn.Module and of the compiled model's classes: torch
# refuses a submodule of that name, so the spec refuses it first (this module
# never imports torch, hence the list).
RESERVED = frozenset("""
T_destination add_module append apply bfloat16 buffers call_super_init children compile
cpu cuda double dump_patches eval extend extra_repr float forward get_buffer
get_extra_state get_parameter get_submodule half insert ipu load_state_dict modules mtia
named_buffers named_children named_modules named_parameters parameters pop
register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
register_full_backward_hook register_full_backward_pre_hook
register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module
register_parameter register_state_dict_post_hook register_state_dict_pre_hook
requires_grad_ set_extra_state set_submodule share_memory state_dict to to_empty train
training type xpu zero_grad rows spec_name
""".split())


def check_name(name, dotted: bool = False) -> str:
    """A layer's name. ``dotted``: an entry's name may be a path of such names
    ("convs.0"): its module sits in a container named convs (as in a
    ModuleList) that the level never calls; the parts of a module called in
    several places of its parent's forward, other layers between (Res2Net's
    convs.i and bns.i), keep their state_dict keys so."""
    parts = name.split(".") if dotted and isinstance(name, str) else [name]
    if not all(isinstance(p, str) and NAME.fullmatch(p) for p in parts):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else \
            repr(name[:37] + "...")
        raise SpecError(f"name {shown} is not a valid layer name: use 1 to 64 letters, "
                        "digits, underscores and hyphens, starting with a letter or digit "
                        "(a name is a PyTorch module name and a path component"
                        + ("; a row's or a level's name may join such names with dots)"
                           if dotted else ")"))
    reserved = [p for p in parts if p in RESERVED]
    if reserved:
        raise SpecError(f"name {reserved[0]!r} is reserved: PyTorch modules have an attribute "
                        "of that name; choose another")
    return name


def dotted_clash(names) -> tuple | None:
    """Two names of one level where one is a container of the other's path
    ("convs" and "convs.0"): (container, member), or None."""
    names = set(names)
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts)):
            if ".".join(parts[:k]) in names:
                return ".".join(parts[:k]), name
    return None


INPUT = "input"
JOIN_OPS = {"add": "add", "concat": "concat", "multiply": "mul",   # spec word -> merge op
            "subtract": "sub"}
JOIN_KEYS = {"merge", "from", "name", "activation", "when"}


class _Frame:
    """One layer list being built: its Sequence (whose input "input" names),
    the block instances around it, and its entries so far."""

    def __init__(self, owner: Sequence, blocks: tuple, written: set):
        self.owner = owner
        self.blocks = blocks          # block instances around the list (scope.blocks)
        self.written = written        # every name the list's tables write, later ones too
        self.names: dict[str, Node] = {}
        self.nodes: list = []         # (node, reads the previous node's output)


class Resolver:
    """The frames of the lists being built and every Ref made so far.
    ``level_names``: graph._LevelNames, the names one node puts on its level."""

    def __init__(self, level_names):
        self.level_names = level_names
        self.frames: list[_Frame] = []
        self.done: list[_Frame] = []    # every list built, checked when the model is
        self.refs: list[Ref] = []

    def level(self, node: Node):
        """(name, node) one level below an entry (a dotted path's next step); a
        layer or a merge entry holds nothing."""
        names = self.level_names([])
        for child in node.children():
            yield from names.visit(child)

    @contextmanager
    def frame(self, owner: Sequence, blocks: tuple, tables):
        written = {t.get("name") for t in tables if hasattr(t, "get")
                   and isinstance(t.get("name"), str)} if isinstance(tables, (list, tuple)) \
            else set()
        frame = _Frame(owner, blocks, written)
        self.frames.append(frame)
        try:
            yield frame
        finally:
            self.done.append(self.frames.pop())

    # -- entries ------------------------------------------------------------
    def source(self, value) -> Ref:
        """The Ref of an entry's ``from``, not yet counted."""
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, list):
            raise SpecError(f"from = {_names(value)} names several outputs; only a merge "
                            "combines them: {merge = \"add\", from = [...]} (or \"concat\", "
                            "\"multiply\"), then read the merge by its name")
        return self.resolve(value)

    def add(self, nodes: list, ref: Ref | None, reads_previous: bool = True) -> None:
        """An entry's nodes, in order, on the current frame; its Ref counted
        (a switched-off entry, no nodes, reads nothing)."""
        frame = self.frames[-1]
        if nodes and ref is not None:
            nodes[0].source = ref
            self.count(ref)
        for i, node in enumerate(nodes):
            frame.nodes.append((node, reads_previous and not (i == 0 and ref is not None)))
            name = entry_name(node)
            if name:
                frame.names[name] = node

    def count(self, ref: Ref) -> None:
        self.refs.append(ref)

    def join(self, table: dict, name: str, auto: bool, post: tuple) -> Join:
        """A merge entry ``{merge = "add", from = ["a", "b"]}``."""
        extra = set(table) - JOIN_KEYS
        if extra:
            raise SpecError(f"a merge entry takes {', '.join(sorted(JOIN_KEYS))}; unknown "
                            f"key(s): {', '.join(sorted(map(str, extra)))}")
        op = table["merge"]
        if not isinstance(op, str) or op not in JOIN_OPS:
            raise SpecError(f"merge takes {', '.join(map(repr, JOIN_OPS))}. "
                            f"Received: merge={op!r}")
        names = table.get("from")
        if not isinstance(names, list) or len(names) < 2:
            raise SpecError(f"a merge reads at least two named outputs: from = [\"a\", \"b\"]. "
                            f"Received: from={names!r}")
        if op == "subtract" and len(names) != 2:
            raise SpecError(f"merge \"subtract\" reads two named outputs, the second taken "
                            f"from the first: from = [\"a\", \"b\"]. Received: from={names!r}")
        refs, seen = [], set()
        for name in names:   # a set: a hostile list of many names costs linear time
            ref = self.resolve(name)
            if ref.key in seen:
                raise SpecError(f"merge reads {ref.text!r} twice; name each output once")
            seen.add(ref.key)
            refs.append(ref)
        for ref in refs:
            self.count(ref)
        return Join(name, tuple(refs), JOIN_OPS[op], post, auto=auto)

    # -- names --------------------------------------------------------------
    def resolve(self, text, where: str = "from") -> Ref:
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"{where} takes the name of an earlier entry (or \"input\"). "
                            f"Received: {where}={text!r}")
        parts = text.split(".")
        visible = self.visible()
        if text == INPUT:
            return Ref(text, visible[0].owner, input=True)
        # an entry's own name may be dotted ("convs.0"): each head the path starts with
        found = [(f.names[head], head, parts[k:]) for f in visible
                 for k in range(len(parts), 0, -1)
                 if (head := ".".join(parts[:k])) in f.names]
        if not found:
            raise SpecError(self.unknown(text, parts[0], visible, where))
        # a dotted path reads from the innermost list where the whole path exists
        # (an inner "0" of a ModuleList does not hide the "0.fuse_act" outside it)
        first = None
        for node, head, rest in found:
            try:
                return Ref(text, self.down(node, head, rest, text, where))
            except SpecError as e:
                first = first or e
        raise first

    def down(self, node: Node, head: str, rest: list, text: str, where: str) -> Node:
        """The node ``rest`` names inside ``node`` (named ``head``); a step may
        be an inner entry's dotted name."""
        done = [head]
        while rest:
            inner = dict(self.level(node))
            k = next((k for k in range(len(rest), 0, -1) if ".".join(rest[:k]) in inner), 0)
            if not k or not isinstance(inner[".".join(rest[:k])], Node):
                known = ", ".join(inner) or "nothing named"
                raise SpecError(f"{where} = {text!r}: {'.'.join(done)!r} holds no entry "
                                f"{rest[0]!r} (it holds: {known})")
            node = inner[".".join(rest[:k])]
            done.append(".".join(rest[:k]))
            rest = rest[k:]
        return node

    def visible(self) -> list:
        """The frames a name may come from, innermost first: up to the body of
        the block instance the current list is in."""
        blocks = self.frames[-1].blocks
        return [f for f in reversed(self.frames) if f.blocks == blocks]

    def unknown(self, text: str, head: str, visible: list, where: str) -> str:
        frame = visible[0]
        if head in frame.written:
            return (f"{where} = {text!r} names this entry or a later one; {where} reads an "
                    "earlier entry (the graph is written in order)")
        outside = [f for f in self.frames if f not in visible and head in f.names]
        if outside:
            return (f"{where} = {text!r} names an entry outside this block; a block's body "
                    "sees only its own entries and \"input\" (a block is a function of its "
                    "input)")
        inside = self.find_inside(head, visible)
        if inside:
            return (f"{where} = {text!r}: {head!r} is inside {path_text(inside[:-1])!r}; "
                    f"write its path, {where} = \"{path_text(inside)}\"")
        names = [n for f in visible for n in f.names]
        return (f"{where} = {text!r} names no earlier entry of this list or an enclosing one "
                f"(earlier: {', '.join(names[-12:]) or 'none'}; \"input\" is the list's input)")

    def find_inside(self, name: str, visible: list) -> tuple | None:
        """The path of ``name`` inside a named level of the visible entries."""
        stack = deque(((n,), node) for f in visible for n, node in f.names.items())
        while stack:
            path, node = stack.popleft()   # breadth first: the shallowest path
            for inner, child in self.level(node):
                if inner == name:
                    return (*path, inner)
                if isinstance(child, Node):
                    stack.append(((*path, inner), child))
        return None

    # -- the end of the model ------------------------------------------------
    def check_used(self, top: _Frame) -> None:
        """Every entry's output is read: by the next entry, a Ref (to it, or to
        the last entry inside it: the same value), or, the last entry of a list
        (its output), by whoever reads the list. ``top``: the model's list."""
        read = {id(ref.node) for ref in self.refs if not ref.input}
        entries = [node for node, _ in top.nodes]
        for frame in (*self.done, top):
            nodes = frame.nodes
            for (node, _), (_, next_reads) in zip(nodes, nodes[1:]):
                if next_reads or node.ends_in_heads() or \
                        any(id(end) in read for end in _ends(node)):
                    continue
                name = entry_name(node) or "this entry"
                layer = next(node.layers(), None)
                raise SpecError(
                    f"the output of {name!r} is never used: no later entry reads it (the "
                    f"next one reads {nodes_source(nodes, node)!r})",
                    file=getattr(layer, "file", None),
                    line=getattr(node, "line", None) or getattr(layer, "line", None),
                    path=self.path_of(node, entries) or (name,))

    def path_of(self, target: Node, top: list) -> tuple:
        """The path of a node, found from the model's entries down named levels."""
        stack = [((entry_name(n),), n) for n in top]
        while stack:
            path, node = stack.pop()
            if node is target:
                return path
            stack.extend(((*path, name), child) for name, child in self.level(node)
                         if isinstance(child, Node))
        return ()


def _ends(node: Node):
    """A node and the nodes whose output is its output (a list's last entry)."""
    while node is not None:
        yield node
        items = node.items if isinstance(node, Sequence) else ()
        node = items[-1] if items else None


def entry_name(node: Node) -> str:
    """The name an entry is read by: a layer's, a block's or structure's level,
    a flat structure's merge row."""
    name = getattr(node, "name", "")
    if not name and isinstance(node, Sequence) and len(node.items) == 1:
        return getattr(node.items[0], "name", "")
    return name


def nodes_source(nodes: list, node: Node) -> str:
    """What the entry after ``node`` reads instead of it."""
    after = nodes[next(i for i, (n, _) in enumerate(nodes) if n is node) + 1][0]
    if isinstance(after, Join):
        return ", ".join(r.text for r in after.sources)
    return after.source.text if after.source is not None else ""


def _names(value) -> str:
    return "[" + ", ".join(repr(v) for v in value[:6]) + (", ..." if len(value) > 6 else "") + "]"


def model_outputs(names: Resolver, frame: _Frame, written: tuple, file: str) -> tuple:
    """The Refs of ``[model] outputs`` (top-level names or dotted paths), each
    counted as a reader at the end; then every entry's output must be used."""
    refs = []
    try:
        for text in written:
            ref = names.resolve(text, "outputs")
            if ref.input:
                raise SpecError("outputs names the model's input; name entries")
            if ref.node.ends_in_heads():
                raise SpecError(f"outputs names {text!r}, which ends in heads: a spec with "
                                "heads returns them by their names; name another entry")
            names.count(ref)
            refs.append(ref)
    except SpecError as e:
        raise SpecError(f"[model] {e.message}", file=file) from None
    names.check_used(frame)
    if refs and frame.nodes and not {id(end) for end in _ends(frame.nodes[-1][0])} & \
            {id(ref.node) for ref in refs}:
        last = frame.nodes[-1][0]
        raise SpecError(f"the output of {entry_name(last)!r} (the last entry) is never used: "
                        "[model] outputs does not name it", file=file,
                        path=(entry_name(last),))
    return tuple(refs)
