"""Compile a spec's graph into a torch.nn.Module.

Module names follow the spec's paths (``inception_3a.b2.3x3_reduce``,
``layer1.basic1.conv1``), so every table row has a module to hook. A named
block whose body is one concat or merge becomes that module itself; a row with
fused ops (conv + batch norm + relu) becomes an ``nn.Sequential``.

Memory choices follow torchvision: ReLU runs in place, except where its input
is shared (the first op of a branch or residual body, or the model input).
"""
from __future__ import annotations

import torch
from torch import nn

from ..analysis import analyze
from ..errors import SpecError, path_text, split_path
from ..graph import (Concat, Heads, Join, Layer, Merge, Model, Sequence, Split, Transform,
                     Visitor, build_graph, in_place, is_leaf, shortcut_ops, split_sizes, walk)
from ..graph_refs import entry_name
from ..spec.loader import Spec

INITS = ("default", "he", "xavier")


def run_steps(owner: nn.Module, steps, x):
    """Run a level's steps on ``owner``, the module that holds the level's parts:
    ("module", name) calls a child; ("structure", name) calls a structure whose
    parts sit on ``owner`` (a flat merge, concat or split); ("param", name,
    template, key) calls ``template`` (a one-parameter module, not registered)
    with ``owner``'s parameter ``name`` in place of its own ``key``: torchvision's
    bare parameters (class_token, pos_embedding, layer_scale). A general graph
    adds ("keep", tape, key): the tensor is kept for a later ``from``;
    ("read", tape, key, last): the kept tensor is read (let go by its last
    reader); ("join", name, tape, [(key, last), ...]): a merge entry."""
    for step in steps:
        kind, name = step[0], step[1]
        if kind == "module":
            x = child(owner, name)(x)
        elif kind == "structure":
            x = child(owner, name)(x, owner)
        elif kind == "keep":
            name[step[2]] = x
        elif kind == "read":
            x = name.pop(step[2]) if step[3] else name[step[2]]
        elif kind == "join":
            x = child(owner, name)(*(step[2].pop(k) if last else step[2][k]
                                     for k, last in step[3]))
        else:
            # the owner's parameter put into the template (functional_call
            # would refuse fvcore's jit trace: "stateless API ... Jitted modules")
            template, key = step[2], step[3]
            template._parameters[key] = owner._parameters[name]
            x = template(x)
    return x


def child(owner: nn.Module, name: str) -> nn.Module:
    """A level's part by its entry's name; a dotted name ("convs.0") is a path
    through containers (Members)."""
    if "." not in name:
        return owner._modules[name]
    for part in name.split("."):
        owner = owner._modules[part]
    return owner


class Members(nn.Module):
    """The container a dotted name ("convs.0") puts its module in: a module
    called in several places of its parent's forward (a ModuleList), whose
    members the parent's steps call each in its own place."""
    export_as = "members"   # never called: the exporter only places its members

    def forward(self, *args):
        raise RuntimeError("a Members container is not called: its members are, one by one")


class SpecSequential(nn.Module):
    """Children run in order (named by the spec, which nn.Sequential allows too,
    but a named class reads better in a printed model). ``steps`` (see
    run_steps) replaces the plain order where the level holds flat structures
    or parameters."""
    export_as = "sequence"   # the exporter's method for it (export.py)

    def __init__(self):
        super().__init__()
        self._steps = None

    def forward(self, x):
        if self._steps is None:
            for module in self.children():
                x = module(x)
            return x
        return run_steps(self, self._steps, x)


class ConcatBranches(nn.Module):
    """Branches fed the same input, concatenated along channels: each child is a
    branch, or ``branches`` lists each branch's steps on the owner (a flat
    concat, or flat branches)."""
    export_as = "concat"   # the exporter's method for it (export.py)

    def __init__(self, branches=None):
        super().__init__()
        self._branches = branches

    def forward(self, x, owner=None):
        if self._branches is None:
            return torch.cat([branch(x) for branch in self.children()], 1)
        owner = self if owner is None else owner
        return torch.cat([run_steps(owner, steps, x) for steps in self._branches], 1)


class SplitBranches(nn.Module):
    """Branch i runs on the i-th slice of the input's channels (a view, as
    ShuffleNetV2's x.chunk(2, dim=1)); the outputs are concatenated. A branch
    with no layers passes its slice on."""
    export_as = "split"   # the exporter's method for it (export.py)

    def __init__(self, sizes, branches=None):
        super().__init__()
        self.sizes = list(sizes)
        self._branches = branches

    def forward(self, x, owner=None):
        split = torch.split(x, self.sizes, 1)
        parts = [split[i] for i in range(len(self.sizes))]   # indexed: torch.fx traces it
        if self._branches is None:
            return torch.cat([branch(part) for branch, part in zip(self.children(), parts)], 1)
        owner = self if owner is None else owner
        return torch.cat([run_steps(owner, steps, part)
                          for steps, part in zip(self._branches, parts)], 1)

    def extra_repr(self):
        return f"sizes={self.sizes}"


class Residual(nn.Module):
    """body(x) merged with shortcut(x): add (in place, as torchvision), multiply
    (a gate), or concat (DenseNet); then the fused ops (the post-add ReLU).
    The body's parts and the shortcut are children of the module itself, or,
    for a flat merge, of the block that calls it (``owner``)."""
    export_as = "residual"   # the exporter's method for it (export.py)

    def __init__(self, body_steps, shortcut_steps, post, op: str, add_in_place: bool = False):
        super().__init__()
        self.add_in_place = add_in_place
        self._body = body_steps
        self._shortcut = shortcut_steps    # None: the identity
        self.post = post
        self.op = op

    def forward(self, x, owner=None):
        owner = self if owner is None else owner
        y = run_steps(owner, self._body, x)
        s = x if self._shortcut is None else run_steps(owner, self._shortcut, x)
        if self.op == "add":
            # in place where the body's last output is fresh and kept by nobody
            # (torchvision's `out += identity`); a plain add otherwise
            y = y.add_(s) if self.add_in_place and y is not x and y is not s else y + s
        elif self.op == "mul":
            y = s * y
        else:
            y = torch.cat([s, y], 1)
        return y if self.post is None else self.post(y)


class JoinInputs(nn.Module):
    """A merge entry: the named outputs added, multiplied (a C x 1 x 1 gate
    broadcasts), concatenated along channels (or tokens) or the second taken
    from the first, then the fused ops."""
    export_as = "join"   # the exporter's method for it (export.py)

    def __init__(self, op: str, post=None):
        super().__init__()
        self.op, self.post = op, post

    def forward(self, *xs):
        if self.op == "concat":
            y = torch.cat(xs, 1)
        elif self.op == "add":   # one new tensor: the first sum, then added into
            y = xs[0] + xs[1]
            for x in xs[2:]:
                y = y.add_(x)
        elif self.op == "sub":
            y = xs[0] - xs[1]
        else:                    # each partial product is kept for the next's backward
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y = y * x
        return y if self.post is None else self.post(y)

    def extra_repr(self):
        return f"op={self.op!r}"


class ValueTape(dict):
    """The named outputs of a general graph during one forward pass, by key:
    each kept until its last reader pops it."""


class OutputTape:
    """The outputs of the heads of one forward pass, by name."""

    def __init__(self):
        self.outputs = {}


class Head(SpecSequential):
    """One named head: runs its layers on the input, keeps the result on the
    tape when it is an output (a leaf), and passes its input on unchanged: the
    main line (or the next head) reads the same tensor."""
    export_as = "head"   # the exporter's method for it (export.py)

    def __init__(self, tape: OutputTape, key: str, leaf: bool):
        super().__init__()
        self.tape, self.key, self.leaf = tape, key, leaf

    def forward(self, x):
        y = super().forward(x)
        if self.leaf:
            self.tape.outputs[self.key] = y
        return x

    def extra_repr(self):
        return f"output={self.key!r}" if self.leaf else "heads inside"


class SpatialTransformer(nn.Module):
    """Jaderberg et al.'s module: ``loc`` regresses theta from x (its last layer
    starts at the identity), ``sampler`` warps x with it."""
    export_as = "transformer"   # the exporter's method for it (export.py)

    def __init__(self, loc: nn.Module, sampler: nn.Module):
        super().__init__()
        self.loc, self.sampler = loc, sampler

    def forward(self, x):
        return self.sampler(x, self.loc(x))


IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def identity_init(loc: nn.Module) -> None:
    """The localisation net's last weighted layer: weights 0, bias the identity
    transform, so training starts from the untransformed input."""
    last = [m for m in loc.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not last or last[-1].bias is None or last[-1].bias.numel() != 6:
        raise SpecError("a spatial transformer's localisation net must end in a layer with "
                        "6 outputs and a bias (initialised to the identity transform)")
    with torch.no_grad():
        last[-1].weight.zero_()
        last[-1].bias.copy_(torch.tensor(IDENTITY_THETA))


class IndexTape:
    """Max-pool indices kept for the max unpools that name the pool."""

    def __init__(self):
        self.indices = {}


class PoolWithIndices(nn.Module):
    export_as = "pool_with_indices"   # the exporter's method for it (export.py)
    def __init__(self, pool: nn.MaxPool2d, tape: IndexTape, key: str):
        super().__init__()
        pool.return_indices = True
        self.pool, self.tape, self.key = pool, tape, key

    def forward(self, x):
        y, idx = self.pool(x)
        self.tape.indices[self.key] = idx
        return y


class UnpoolFromTape(nn.Module):
    export_as = "unpool_from_tape"   # the exporter's method for it (export.py)
    def __init__(self, unpool: nn.MaxUnpool2d, tape: IndexTape, key: str, size):
        super().__init__()
        self.unpool, self.tape, self.key, self.size = unpool, tape, key, size

    def forward(self, x):
        return self.unpool(x, self.tape.indices[self.key],
                           output_size=(x.shape[0], *self.size))


class SpecModel(nn.Module):
    """The compiled model: ``rows`` maps each table row (its path) to the name
    of the module whose output is that row's output."""

    def __init__(self, body: nn.Module, rows: dict, name: str, outputs: tuple = (),
                 tape: OutputTape | None = None, values: ValueTape | None = None,
                 value_outputs: tuple = ()):
        super().__init__()
        for child_name, child in body.named_children():
            self.add_module(child_name, child)
        for param_name, param in body.named_parameters(recurse=False):
            self.register_parameter(param_name, param)   # flat parameters (class_token)
        self._steps = body._steps
        self.rows = rows
        self.spec_name = name
        # a spec with heads returns {output name: tensor}, in the spec's order
        # ("output": the main line's end, where it goes on after the heads)
        self.output_names = tuple(outputs)
        self.tape = tape
        # [model] outputs: (name, key on the value tape) of each, in the spec's order
        self.values, self.value_outputs = values, tuple(value_outputs)

    def forward(self, x):
        if self.values is not None:
            self.values.clear()   # nothing left over from a failed pass
        if self._steps is None:
            for module in self.children():
                x = module(x)
        else:
            x = run_steps(self, self._steps, x)
        if self.value_outputs:
            return {name: self.values.pop(key) for name, key in self.value_outputs}
        if not self.output_names:
            return x
        got, self.tape.outputs = self.tape.outputs, {}
        return {name: (x if name == "output" and name not in got else got[name])
                for name in self.output_names}


def build_model(spec: Spec | Model, *, init: str | None = None, variables=None,
                input=None) -> SpecModel:
    """A torch module for a spec; every figure of ``analyze`` can be measured on it."""
    model = spec if isinstance(spec, Model) else build_graph(spec, variables=variables,
                                                            input=input)
    report = analyze(model)  # validates shapes first: bad specs fail here, with context
    if report.symbolic:
        raise SpecError(f"cannot build a model with unbound variables "
                        f"({', '.join(report.free_symbols)}); "
                        "bind them with --set NAME=VALUE", file=model.file)
    init = init or model.extra.get("init", "default")
    if init not in INITS:
        raise SpecError(f"init takes one of {', '.join(INITS)}. Received: init={init!r}",
                        file=model.file)
    builder = _Builder(model, init, report)
    body, _ = builder.sequence(model.body, model.input, shared=True)
    outputs = tuple(name for name, _ in report.outputs) if report.multi_output else ()
    value_outputs = tuple((ref.text, builder.read_key(ref)[0]) for ref in model.outputs)
    return SpecModel(body, builder.rows, model.name, outputs, builder.outputs,
                     builder.values if model.refs else None, value_outputs)


class _Builder(Visitor):
    """Builds each node of a level onto the level's module (``owner``): its
    visit methods return (steps, output shape); _StructureModule makes the
    module of a concat, split, merge or transformer."""

    def __init__(self, model: Model, init: str, report):
        self.model = model
        # whether an earlier op keeps the current tensor for backward (then no
        # op may overwrite it in place); the engine decides alike
        self.input_saved = False
        self.init = init
        self.rows: dict[str, str] = {}        # row path "a.b.add" -> its module "a.b"
        self.tape = IndexTape()
        self.outputs = OutputTape()
        self.unpooled = {path_text(split_path(getattr(op.args, op.kind.indices_from)))
                         for layer in walk(model.body) for op in layer.ops
                         if op.kind.indices_from}
        self.pool_inputs: dict[str, tuple] = {}
        self.structures = _StructureModule(self)
        # a general graph: values kept for their readers (Ref keys, as the engine's)
        self.values = ValueTape()
        self.readers: dict[tuple, int] = {}
        for ref in model.refs:
            self.readers[ref.key] = self.readers.get(ref.key, 0) + 1
        self.kept: dict[tuple, tuple] = {}    # Ref key -> (tape key, shape, input_saved, alias)
        # the kept values the current tensor shares its storage with (itself, or a
        # view of it): no op may write into it while one has a reader to come
        self.alias = frozenset()
        self.tape_keys: set = set()

    def keep(self, ref_key, name: str, x) -> list:
        """The steps that keep the current tensor for a later reader (none if
        nobody reads it)."""
        if not self.readers.get(ref_key):
            return []
        key = name
        while key in self.tape_keys:   # unique on the tape
            key += "'"
        self.tape_keys.add(key)
        self.kept[ref_key] = (key, x, self.input_saved, self.alias)
        self.alias = self.alias | {ref_key}
        return [("keep", self.values, key)]

    def read_key(self, ref) -> tuple:
        """(tape key, whether this is the last reader, shape) of a Ref's value."""
        key, x, saved, alias = self.kept[ref.key]
        self.readers[ref.key] -= 1
        self.input_saved, self.alias = saved, alias | {ref.key}
        return key, not self.readers[ref.key], x

    def shares_kept(self) -> bool:
        """Whether the current tensor's storage is a kept value's that a later
        reader still needs (the engine: its storage is pinned)."""
        return any(self.readers.get(k, 0) > 0 for k in self.alias)

    # each returns (module, output shape)
    def sequence(self, seq: Sequence, x, shared: bool, path=()) -> tuple:
        module = SpecSequential()
        steps, x = self.items(seq, x, shared, path, module)
        if any(step[0] != "module" or "." in step[1] for step in steps):
            module._steps = steps
        return module, x

    def items(self, seq: Sequence, x, shared, path, owner) -> tuple:
        """Build the nodes of one list onto ``owner``: (steps, output shape).
        A node that reads ``from`` a kept value reads it first; a value a later
        node reads is kept (the list's input, a node's output)."""
        steps = self.keep((id(seq), True), path_text((*path, "input")), x)
        shared = shared or self.shares_kept()
        for item in seq.items:
            if item.source is not None:
                key, last, x = self.read_key(item.source)
                steps.append(("read", self.values, key, last))
                shared = True
            more, x = self.visit(item, x, shared, path, owner)
            steps.extend(more)
            steps += self.keep((id(item), False), path_text((*path, entry_name(item))), x)
            # heads or a later `from` read this tensor: no in-place op on it next
            shared = item.ends_in_heads() or self.shares_kept()
        return steps, x

    def visit_join(self, node: Join, x, shared, path, owner) -> tuple:
        """A merge entry: one module on the owner, called with the kept values."""
        reads = [self.read_key(ref) for ref in node.sources]
        shapes = [r[2] for r in reads]
        if node.op == "concat":
            y = (sum(s[0] for s in shapes), *shapes[0][1:])
        else:   # the full shape, not a C x 1 x 1 gate's
            y = next((s for s in shapes if len(s) != 3 or s[1:] != (1, 1)), shapes[0])
        module = JoinInputs(node.op)
        if node.post:
            module.post = nn.Sequential(*(op.kind.build(op.args, y) for op in node.post))
        _add(owner, node.name, module)
        self.rows[path_text((*path, node.name))] = path_text((*path, node.name))
        self.input_saved = bool(node.post) and node.post[-1].kind.saved(
            node.post[-1].args, y, y).output
        self.alias = frozenset()   # a fresh tensor
        return [("join", node.name, self.values, [(key, last) for key, last, _ in reads])], y

    def visit_heads(self, node: Heads, x, shared, path, owner) -> tuple:
        steps = []
        for head in self.heads(node, x, path):
            name = head.key.rsplit(".", 1)[-1]
            _add(owner, name, head)
            steps.append(("module", name))
        return steps, x

    def heads(self, node: Heads, x, path) -> list:
        """One Head module per head, each built on the same input."""
        entry, alias = self.input_saved, self.alias
        out = []
        for head in node.heads:
            self.input_saved, self.alias = entry, alias
            hpath = (*path, head.name)
            module = Head(self.outputs, path_text(hpath), is_leaf(head))
            steps, _ = self.items(head, x, True, hpath, module)
            if any(step[0] != "module" or "." in step[1] for step in steps):
                module._steps = steps
            self.rows.setdefault(path_text(hpath), path_text(hpath))
            out.append(module)
        self.input_saved, self.alias = entry, alias   # the main line goes on with x
        return out

    def visit_layer(self, node: Layer, x, shared, path, owner) -> tuple:
        if node.flat:
            return self.flat_param(node, x, path, owner)
        module, y = self.layer(node.name, node.ops, x, shared, (*path, node.name))
        _add(owner, node.name, module)
        return [("module", node.name)], y

    def visit_sequence(self, node: Sequence, x, shared, path, owner) -> tuple:
        if not node.name:   # adds no level: its items sit on the owner
            return self.items(node, x, shared, path, owner)
        inner = (*path, node.name)
        if len(node.items) == 1 and node.items[0].generated_row:
            # a named level holding one structure is that structure's module
            module, y = self.structures.visit(node.items[0], x, inner, None)
        else:
            module, y = self.sequence(node, x, shared, inner)
        self.rows.setdefault(path_text(inner), path_text(inner))
        _add(owner, node.name, module)
        return [("module", node.name)], y

    def flat_structure(self, node, x, shared, path, owner) -> tuple:
        """A flat concat, split or merge: its parts sit on the owner."""
        module, y = self.structures.visit(node, x, path, owner)
        _add(owner, node.name, module)
        self.rows[path_text((*path, node.name))] = path_text((*path, node.name))
        return [("structure", node.name)], y

    visit_concat = visit_split = visit_merge = flat_structure

    def visit_transform(self, node: Transform, x, shared, path, owner) -> tuple:
        raise SpecError(f"{path_text((*path, node.name))}: a flat transform cannot be built "
                        "(its sampler and localisation net need a level of their own); "
                        "drop flat = true", file=self.model.file)

    def flat_param(self, node: Layer, x, path, owner) -> tuple:
        """A row whose one parameter sits on the block (torchvision's bare
        nn.Parameter attributes): the module computes, the block holds."""
        op = node.ops[0]
        module = op.kind.build(op.args, x)
        self.initialize(module)
        params = list(module.named_parameters())
        if len(params) != 1 or list(module.buffers()) or list(module.children()):
            raise SpecError(f"{node.name}: flat = true needs a module with one parameter; "
                            f"{op.kind.name} builds {type(module).__name__}")
        key, param = params[0]
        if "." in node.name:
            raise SpecError(f"{node.name}: a flat row's parameter sits on its block under "
                            "its own name, which takes no dots")
        if node.name in owner._modules or hasattr(owner, node.name) and \
                node.name not in owner._parameters:
            raise SpecError(f"{node.name}: the block already has an attribute of that name")
        owner.register_parameter(node.name, param)
        self.alias = frozenset()   # a fresh tensor
        self.rows[path_text((*path, node.name))] = path_text((*path, node.name))
        return [("param", node.name, module, key)], op.kind.output_shape(op.args, x)

    def branch(self, branch: Sequence, x, path, owner) -> list:
        """A concat or split branch on ``owner``: its steps (a named branch is one
        child; a flat one's rows sit on the owner)."""
        if branch.name:
            child, y = self.sequence(branch, x, shared=True, path=(*path, branch.name))
            _add(owner, branch.name, child)
            return [("module", branch.name)], y
        return self.items(branch, x, True, path, owner)

    def transform(self, node: Transform, x, path):
        """A spatial transformer: the localisation net, then the sampler."""
        entry, alias = self.input_saved, self.alias
        loc, _ = self.sequence(node.loc, x, shared=True, path=(*path, "loc"))
        identity_init(loc)
        self.rows.setdefault(path_text((*path, "loc")), path_text((*path, "loc")))
        self.input_saved = entry
        op = node.sampler
        module = SpatialTransformer(loc, op.kind.build(op.args, x))
        self.rows[path_text((*path, node.name))] = path_text((*path, "sampler"))
        self.input_saved, self.alias = False, frozenset()
        return module, op.kind.output_shape(op.args, x)

    def branches(self, node, x, path, owner, sizes=None):
        """A concat, or a split into channel slices of ``sizes``. ``owner`` None:
        the module holds its branches (the module of a named level); else they
        sit on ``owner`` (a flat structure) and the module computes with them."""
        module = ConcatBranches() if sizes is None else SplitBranches(sizes)
        holder = module if owner is None else owner
        steps, outs = [], []
        entry, alias = self.input_saved, self.alias
        for i, branch in enumerate(node.branches):
            self.input_saved, self.alias = entry, alias
            xi = x if sizes is None else (sizes[i], *x[1:])
            more, y = self.branch(branch, xi, path, holder)
            steps.append(more)
            outs.append(y)
        if owner is not None or any(not b.name for b in node.branches):
            module._branches = steps
        y = (sum(o[0] for o in outs), *outs[0][1:])
        self.rows[path_text((*path, node.name))] = path_text(path)
        self.input_saved, self.alias = False, frozenset()
        return module, y

    def merge(self, node: Merge, x, path, owner):
        """A merge: its body, its shortcut, then the merge and its fused ops.
        ``owner``: as for branches."""
        out_module = Residual([], None, None, node.op, node.adds_in_place)
        holder = out_module if owner is None else owner
        entry, alias = self.input_saved, self.alias
        body_steps, y = self.items(node.body, x, True, path, holder)
        if self.shares_kept():   # no add into a tensor a later `from` still reads
            out_module.add_in_place = False
        self.input_saved, self.alias = entry, alias
        shortcut_steps = None
        if node.shortcut_layers is not None:
            shortcut, _ = self.sequence(node.shortcut, x, shared=True,
                                        path=(*path, node.shortcut_name))
            _add(holder, node.shortcut_name, shortcut)
            shortcut_steps = [("module", node.shortcut_name)]
        else:
            ops = shortcut_ops(node, x, y)
            if ops is not None:
                shortcut = self.layer(node.shortcut_name, ops, x, True,
                                      (*path, node.shortcut_name))[0]
                _add(holder, node.shortcut_name, shortcut)
                shortcut_steps = [("module", node.shortcut_name)]
        out = (x[0] + y[0], *y[1:]) if node.op == "concat" else (x if node.op == "mul" else y)
        if node.post:
            out_module.post = nn.Sequential(*(op.kind.build(op.args, out) for op in node.post))
        out_module._body, out_module._shortcut = body_steps, shortcut_steps
        self.rows[path_text((*path, node.name))] = path_text(path)
        self.input_saved = bool(node.post) and node.post[-1].kind.saved(
            node.post[-1].args, out, out).output
        self.alias = frozenset()
        return out_module, out

    def layer(self, name, ops, x, shared, path):
        modules = []
        for i, op in enumerate(ops):
            module = op.kind.build(op.args, x)
            ran_in_place = in_place(op, shared and i == 0, self.input_saved)
            if not ran_in_place:
                self.alias = frozenset()   # a fresh tensor
            if hasattr(module, "inplace") and not ran_in_place:
                module.inplace = False  # its input is read elsewhere, or kept for backward
            y = op.kind.output_shape(op.args, x)
            kept = op.kind.saved(op.args, x, y).output
            self.input_saved = kept or (self.input_saved and ran_in_place)
            module = self.wire_indices(op, module, x, path)
            self.initialize(module)
            modules.append(module)
            x = op.kind.output_shape(op.args, x)
        self.rows[path_text(path)] = path_text(path)
        return (modules[0] if len(modules) == 1 else nn.Sequential(*modules)), x

    def wire_indices(self, op, module, x, path):
        """A max pool that an unpool names (by its name or path) keeps its
        indices on the tape; the unpool reads them back."""
        if op.kind.gives_indices:
            key = next((k for k in (path[-1], path_text(path)) if k in self.unpooled), None)
            if key is not None:
                self.pool_inputs[key] = x
                return PoolWithIndices(module, self.tape, key)
        if op.kind.indices_from:
            ref = path_text(split_path(getattr(op.args, op.kind.indices_from)))
            return UnpoolFromTape(module, self.tape, ref, self.pool_inputs[ref])
        return module

    def initialize(self, module):
        if self.init == "default":
            return
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                if self.init == "he":   # He et al. 2015: N(0, 2 / fan_in)
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                else:                   # Glorot & Bengio 2010: U(+-sqrt(6 / (fan_in + fan_out)))
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class _StructureModule(Visitor):
    """The module of a structure (module, output shape), built by ``builder``."""

    def __init__(self, builder: _Builder):
        self.builder = builder

    def visit_concat(self, node: Concat, x, path, owner):
        return self.builder.branches(node, x, path, owner)

    def visit_split(self, node: Split, x, path, owner):
        return self.builder.branches(node, x, path, owner, split_sizes(node, x))

    def visit_merge(self, node: Merge, x, path, owner):
        return self.builder.merge(node, x, path, owner)

    def visit_transform(self, node: Transform, x, path, owner):
        return self.builder.transform(node, x, path)


def output_tensors(out) -> list:
    """The tensors a model returns: one, or the values of its dict of outputs."""
    return list(out.values()) if isinstance(out, dict) else [out]


def scalar_of(out):
    """A scalar to differentiate in a benchmark step: the mean square of every output."""
    return sum(t.float().square().mean() for t in output_tensors(out))


def _add(parent: nn.Module, name: str, module: nn.Module):
    """``module`` as ``parent``'s child ``name``; a dotted name ("convs.0") puts
    it in Members containers (made on the first member, as a ModuleList's)."""
    *outer, last = name.split(".")
    if not last or not all(outer):
        raise SpecError(f"layer name {name!r} cannot name a torch module (not empty)")
    for part in outer:
        holder = parent._modules.get(part)
        if holder is None:
            if hasattr(parent, part):
                raise SpecError(f"layer name {name!r}: {part!r} is taken by torch's "
                                "nn.Module (an attribute or method of every module)")
            holder = Members()
            parent.add_module(part, holder)
        elif not isinstance(holder, Members):
            raise SpecError(f"layer name {name!r}: {part!r} is a layer of this level, not "
                            "a container of its members; rename one")
        parent = holder
    if last in parent._modules:  # add_module would silently replace the first one
        raise SpecError(f"two layers at the same level are named {name!r}; rename one")
    if hasattr(parent, last):
        raise SpecError(f"layer name {name!r} is taken by torch's nn.Module (an attribute or "
                        "method of every module); rename the layer")
    parent.add_module(last, module)
