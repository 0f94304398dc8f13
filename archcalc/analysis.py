"""The engine: walk a graph, compute every row's figures, and the totals.

Counting conventions (also in the README and the table's footer):
- shapes are per sample; the batch only multiplies bytes;
- params = weights + biases (+ norm affine); running stats are buffers;
- MACs = multiply-accumulates of conv and fc (what fvcore calls flops);
  FLOPs = 2 x MACs + each other kind's elementwise rule;
- activations = elements of each row's output per sample, the input included;
  views and in-place layers allocate nothing of their own; a row's fused ops
  count as the rows they would be written apart: a fused batch norm's output
  and the conv output it reads both (what PyTorch allocates either way), so a
  model gives one total whether its spec fuses conv + bn + relu in one row
  (specs/resnet50.toml) or lists them apart (torchvision's, imported);
- saved_activation_bytes = every tensor a training step keeps for backward,
  each storage once (max-pool indices int64, dropout masks bool);
- train memory = weights + gradients + optimizer state + saved activations.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from . import limits, sym
from .errors import SpecError, SpecWarning, path_text, split_path
from .graph import (Concat, Heads, Join, Layer, Merge, Model, Sequence, Split, Transform,
                    Visitor, build_graph, in_place, is_leaf, same_shape, shortcut_ops,
                    split_sizes)
from .layers.base import fmt_shape, sliding_arithmetic
from .spec.defaults import SLIDING_KINDS
from .tree import TreeNode

DTYPES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "fp64": 8}
OPTIMIZERS = {"sgd": 0, "momentum": 1, "adam": 2}  # state tensors per parameter


@dataclass
class Row:
    index: int
    name: str
    path: tuple
    type: str
    output_shape: tuple
    params: sym.Num = 0
    params_formula: str | None = None
    buffers: sym.Num = 0
    macs: sym.Num = 0
    flops: sym.Num = 0
    backward_flops: sym.Num = 0
    activations: sym.Num = 0
    fused_activations: sym.Num = 0  # outputs of its fused ops that a later fused op replaces
    allocates: bool = True
    weighted: bool = False
    ops: tuple = ()               # the ops of this row, for `archcalc explain`
    merge: str = ""               # a merge row: "concat" | "add" | "mul" (archcalc predict)
    post: tuple = ()              # a merge row's fused ops after the merge (the post-add relu)
    input_shape: tuple = ()
    rf_in: tuple = (1, 1)
    jump_in: tuple = (1, 1)
    receptive_field: tuple = (1, 1)
    jump: tuple = (1, 1)
    findings: list = field(default_factory=list)
    inputs: tuple = ()            # rows it reads when not (only) the previous row (from, merge)
    # a merge row: each value it combines, in order, as (the row that wrote it,
    # its shape, receptive field, jump): explain, lint and predict read them
    merged: tuple = ()

    @property
    def derived(self) -> bool:
        """False where its figures were measured on a PyTorch module (an imported
        opaque row), not derived from a formula."""
        return not any(op.kind.measured for op in self.ops)

    def as_json(self) -> dict:
        def j(x):  # ints (nearly every figure) skip sym's checks: 100,000 rows add up
            return x if type(x) is int else sym.to_json(x)
        return {
            "index": self.index, "name": self.name, "path": list(self.path),
            "type": self.type, "output_shape": [j(d) for d in self.output_shape],
            "params": j(self.params), "macs": j(self.macs), "flops": j(self.flops),
            "activations": j(self.activations),
            "receptive_field": j(sym.smax(*self.receptive_field)),
            "receptive_field_hw": [j(r) for r in self.receptive_field],
            "jump": j(sym.smax(*self.jump)),
            # only where the graph says so: every other row reads the row before it
            **({"inputs": list(self.inputs)} if self.inputs else {}),
            **({} if self.derived else {"derived": False}),
        }


@dataclass
class Report:
    model: Model
    batch: int
    dtype: str
    optimizer: str
    rows: list
    totals: dict
    findings: list
    outputs: list = field(default_factory=list)   # [(name, shape)] of what the model returns
    heads: list = field(default_factory=list)     # [{name, outputs, params, macs, flops}]
    tree: TreeNode | None = None   # the rows hung on the graph, built by the walk

    @property
    def row_tree(self) -> TreeNode | None:
        """The tree of this report's rows; None once they are folded (--depth),
        when the table's rows are no longer the tree's."""
        if self.tree is None:
            return None
        rows = iter(self.rows[1:])
        if all(row is next(rows, None) for row in self.tree.rows()) and \
                next(rows, None) is None:
            return self.tree
        return None

    @property
    def multi_output(self) -> bool:
        """Whether the model returns named outputs (a dict) rather than one tensor:
        heads, or [model] outputs."""
        return bool(self.heads) or bool(self.model.outputs)

    @property
    def free_symbols(self) -> list[str]:
        """Names of the unbound variables the figures depend on, sorted."""
        return sorted({str(s) for v in self.totals.values() if sym.is_symbolic(v)
                       for s in v.free_symbols})

    @property
    def symbolic(self) -> bool:
        return bool(self.free_symbols)

    def to_dict(self) -> dict:
        out = {
            "model": self.model.name,
            "input": [sym.to_json(d) for d in self.model.input],
            "batch": self.batch, "dtype": self.dtype, "optimizer": self.optimizer,
            "layers": [r.as_json() for r in self.rows],
            "totals": {k: sym.to_json(v) for k, v in self.totals.items()},
            "outputs": [{"name": n, "shape": [sym.to_json(d) for d in shape]}
                        for n, shape in self.outputs],
            "heads": [{**h, "params": sym.to_json(h["params"]), "macs": sym.to_json(h["macs"]),
                       "flops": sym.to_json(h["flops"])} for h in self.heads],
            "warnings": [str(w) for w in self.findings],
        }
        # opaque rows whose MACs are not known (a variable left "?"): the totals miss them
        incomplete = [r.name for r in self.rows if not r.derived and sym.is_symbolic(r.macs)]
        if incomplete:
            out["incomplete"] = incomplete
        return out

    def to_json(self, indent: int | None = 2) -> str:
        from .render.safe import json_document, json_text  # no lone surrogates, no NaN
        if indent is None:
            return json_text(self.to_dict())
        return json_document(self.to_dict(), rows="layers")

    def _repr_html_(self) -> str:
        """A notebook shows the report: graph, table, charts (archcalc.render.report)."""
        from .render.report import fragment
        return fragment([self])

    def to_frame(self):
        from .errors import require
        pd = require("pandas", "torch", "report.to_frame()")
        return pd.DataFrame([r.as_json() for r in self.rows]).set_index("index")


def analyze(spec_or_model, *, batch: int = 1, dtype: str = "fp32", optimizer: str = "adam",
            strict: bool = False, variables: dict | None = None, input=None,
            autocast: str | None = None) -> Report:
    """Compute every row and the totals. ``spec_or_model``: a Spec or a built Model.
    ``autocast``: the device (cpu, cuda) of a torch.autocast run in ``dtype``
    with fp32 weights and input: tensors an op computes in fp32 (LRN, and what
    follows it up to the next conv) are then counted at 4 bytes."""
    if dtype not in DTYPES:
        raise SpecError(f"dtype must be one of {', '.join(DTYPES)}. Received: {dtype!r}")
    if optimizer not in OPTIMIZERS:
        raise SpecError(f"optimizer must be one of {', '.join(OPTIMIZERS)}. "
                        f"Received: {optimizer!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise SpecError(f"batch must be a positive integer. Received: {batch!r}")
    model = spec_or_model if isinstance(spec_or_model, Model) else \
        build_graph(spec_or_model, variables=variables, input=input)
    walker = _Walker(model, DTYPES[dtype], batch, autocast if dtype != "fp32" else None)
    if any(sym.is_symbolic(v) and not isinstance(v, float) for v in model.env.values()):
        # formulas grow with every layer (nested floors of H): a time budget
        try:
            with sym.deadline(limits.SYMBOLIC_MS.value / 1000):
                walker.run()
                totals = walker.totals(OPTIMIZERS[optimizer])
        except sym.Timeout:
            raise limits.SYMBOLIC_MS.exceeded(
                "the formulas of this spec take longer to compute; bind some variables "
                "with --set NAME=VALUE").at(file=model.file) from None
    else:
        walker.run()
        totals = walker.totals(OPTIMIZERS[optimizer])
    if strict and walker.findings:
        first = walker.findings[0]
        raise SpecError(f"{first.message} (--strict)", file=model.file, line=first.line,
                        path=first.path)
    return Report(model, batch, dtype, optimizer, walker.rows, totals, walker.findings,
                  walker.outputs, head_totals(walker), walker.tree)


def head_totals(walker) -> list:
    """Params, MACs and FLOPs of every head (nested heads inside their parent's),
    and the outputs it gives."""
    out = []
    for path in walker.head_paths:
        n = len(path)
        rows = [r for r in walker.rows if tuple(r.path[:n]) == path]
        prefix = path_text(path)
        out.append({"name": prefix,
                    "outputs": [name for name, _ in walker.outputs
                                if name == prefix or name.startswith(prefix + ".")],
                    "params": sym.total(r.params for r in rows),
                    "macs": sym.total(r.macs for r in rows),
                    "flops": sym.total(r.flops for r in rows)})
    return out


class _Walker(Visitor):
    """Walks the graph carrying the shape, receptive field and tensor storages,
    and hangs each row it makes on the report's tree (tree.py).

    The walk state is (shape, receptive field, jump, storage id of the tensor).
    """

    def __init__(self, model: Model, dsize: int, batch: int, autocast: str | None = None):
        self.model = model
        self.dsize = dsize
        self.batch = batch
        self.autocast = autocast        # a torch.autocast run on this device, or None
        self.wide: set[int] = set()     # storages held in fp32 under autocast
        self.rows: list[Row] = []
        self.findings: list[SpecWarning] = []
        self._ids = itertools.count(1)
        self.storage_bytes: dict[int, sym.Num] = {}   # storage id -> bytes
        self.saved: set[int] = set()
        self.seen: dict[str, list] = {}   # row name or path -> (kind, input, output)
        self.first_weighted = True
        self.nonlinearities = 0
        # inference peak: tensors alive at once (an op's input and output, plus
        # what pending merges hold: a residual's input, finished branches)
        self.held = 0
        self.peak_live = 0
        self.outputs: list = []       # (name, shape) of each output, in order
        self.head_paths: list = []
        self.tree = TreeNode("block", "", ())
        self.level = self.tree.children   # the tree level the walk adds to
        # a general graph (from, merge): values kept for their readers, by Ref key
        self.readers: dict[tuple, int] = {}
        for ref in model.refs:
            self.readers[ref.key] = self.readers.get(ref.key, 0) + 1
        self.values: dict[tuple, tuple] = {}
        self.pins: dict[int, list] = {}         # storage -> [values kept on it, bytes held]
        self.origin: dict[int, str] = {0: "input"}   # storage -> the row that wrote it
        self.reading: tuple = ()                # inputs of the next row (Row.inputs)

    def run(self):
        x = self.model.input
        inp = Row(0, "input", (), "input", x, activations=sym.prod(x))
        self.rows.append(inp)
        self.storage_bytes[0] = sym.prod(x) * self.dsize * self.batch
        if self.autocast:   # the input batch stays fp32; the first conv casts it
            self.storage_bytes[0] = sym.prod(x) * 4 * self.batch
            self.wide.add(0)
        state = (x, (1, 1), (1, 1), 0)
        end = self.walk(self.model.body, state, (), shared=True)
        if self.model.outputs:
            if self.head_paths:
                raise SpecError("[model] outputs and heads: a spec with heads returns them "
                                "by name; drop [model] outputs", file=self.model.file)
            self.outputs.extend((ref.text, self.read(ref)[0]) for ref in self.model.outputs)
        elif not self.head_paths:
            self.outputs.append(("output", end[0]))
        elif not self.model.body.ends_in_heads():
            # heads along the way, and the main line goes on: its end is an output too
            self.outputs.append(("output", end[0]))

    def walk(self, node, state, path, shared=False):
        """``shared``: the node's input is read by another path too (in-place is off)."""
        if node.source is not None:   # from = "NAME": the named value, read by others too
            state, shared = self.read(node.source), True
        if not node.leaf:
            first = next(node.layers(), None)
            if first is not None:   # a structure's own errors (split sizes) name its line
                self.where = (first.file, first.line)
        start = len(self.level)
        out = self.visit(node, state, path, shared)
        if node.source is not None and len(self.level) > start:
            self.level[start].inputs = [self.origin.get(state[3], "input")]
        self.keep((id(node), False), out)
        return out

    def keep(self, key, state) -> None:
        """Keep a value some Ref reads later; its storage stays alive (pinned)
        until its last reader."""
        if not self.readers.get(key):
            return
        self.values[key] = state
        pin = self.pins.setdefault(state[3], [0, self.nbytes(state[0])])
        if pin[0] == 0:
            self.held += pin[1]
        pin[0] += 1

    def read(self, ref):
        """The value a Ref names; the last reader lets it go."""
        state = self.values[ref.key]
        self.readers[ref.key] -= 1
        if not self.readers[ref.key]:
            del self.values[ref.key]
            pin = self.pins[state[3]]
            pin[0] -= 1
            if pin[0] == 0:
                self.held -= pin[1]
                del self.pins[state[3]]
        origin = self.origin.get(state[3], "input")
        self.reading = (origin,) if origin != self.rows[-1].name else ()
        return state

    def gather(self, node, state, path, shared=False):
        """Walk a node onto a tree level of its own: (its tree nodes, the state after it)."""
        outer, self.level = self.level, []
        state = self.walk(node, state, path, shared)
        gathered, self.level = self.level, outer
        return gathered, state

    def visit_layer(self, node: Layer, state, path, shared):
        self.where = (node.file, node.line)
        try:
            out = self.row(node.name, node.type, node.ops, state, path, node.line, shared)
            if not node.grows:
                self.grows_map(self.rows[-1], node.line)
        except SpecError as e:
            if not e.path:
                e.path = (*path, node.label or node.name)
            raise e.at(file=node.file, line=node.line) from None
        self.level.append(TreeNode("layer", node.name, (*path, node.name), self.rows[-1]))
        return out

    def visit_sequence(self, node: Sequence, state, path, shared):
        self.keep((id(node), True), state)          # "input" of the list
        shared = shared or state[3] in self.pins
        if not node.name:   # no level of its own: its items hang on the current one
            return self.items(node, state, path, shared)
        inner = (*path, node.name)
        children, state = self.gather_items(node, state, inner, shared)
        self.level.append(TreeNode("block", node.name, inner, children=children))
        return state

    def gather_items(self, node: Sequence, state, path, shared):
        outer, self.level = self.level, []
        state = self.items(node, state, path, shared)
        gathered, self.level = self.level, outer
        return gathered, state

    def items(self, node: Sequence, state, path, shared):
        for item in node.items:
            state = self.walk(item, state, path, shared)
            # heads or a later `from` read this tensor (or a view of it shares its
            # storage): no in-place op next
            shared = item.ends_in_heads() or state[3] in self.pins
        return state

    def branch(self, node: Sequence, state, path):
        """A concat or split branch: (its tree node, its end state)."""
        nodes, end = self.gather(node, state, path, shared=True)
        return (nodes[0] if node.name else TreeNode("block", "", path, children=nodes)), end

    def nbytes(self, shape):
        return sym.prod(shape) * self.dsize * self.batch

    def visit_concat(self, node: Concat, state, path, shared):
        outs, branches = [], []
        self.held += self.nbytes(state[0])       # every branch reads the input
        for branch in node.branches:
            tree, end = self.branch(branch, state, path)
            outs.append(end)
            branches.append(tree)
            self.held += self.nbytes(outs[-1][0])  # kept until the concat
        self.held -= self.nbytes(state[0]) + sym.total(self.nbytes(o[0]) for o in outs)
        return self.concat_row(node, outs, path, branches)

    def visit_heads(self, node: Heads, state, path, shared):
        """Each head reads the input; its output is kept (alive) to the end; the
        input goes on unchanged."""
        self.held += self.nbytes(state[0])
        heads = []
        for head in node.heads:
            hpath = (*path, head.name)
            self.head_paths.append(hpath)
            tree, y = self.gather(head, state, path, shared=True)
            heads.extend(tree)
            if is_leaf(head):
                self.outputs.append((path_text(hpath), y[0]))
                self.held += self.nbytes(y[0])   # returned: alive to the end
        self.held -= self.nbytes(state[0])
        self.level.append(TreeNode("heads", "", path, children=heads))   # no row of its own
        return state

    def visit_transform(self, node: Transform, state, path, shared):
        """The localisation net reads the input and gives theta (6 features);
        the sampler row warps the input with it."""
        self.held += self.nbytes(state[0])       # the sampler reads x after the loc net
        loc, theta = self.gather(node.loc, state, path, shared=True)
        self.held -= self.nbytes(state[0])
        if len(theta[0]) != 1 or sym.norm(theta[0][0] - 6) != 0:
            raise self.error(f"a spatial transformer's localisation net must end in 6 features "
                             f"(theta of the affine map); it gives {fmt_shape(theta[0])}",
                             (*path, "loc"))
        self.held += self.nbytes(theta[0])
        y = self.row(node.name, node.sampler.kind.name, (node.sampler,), state, path,
                     shared=True)
        self.held -= self.nbytes(theta[0])
        # drawn as a merge: the loc net its body, the sampler row its merge row
        self.level.append(TreeNode("merge", node.name, (*path, node.name), self.rows[-1],
                                   body=loc, op="transform"))
        return y

    def visit_split(self, node: Split, state, path, shared):
        """Each branch reads a slice of the input's channels: a view, the same storage."""
        x, rf, jump, storage = state
        try:
            sizes = split_sizes(node, x)
        except SpecError as e:
            raise self.error(e.message, path) from None
        outs, branches = [], []
        held = self.nbytes(x)
        self.held += held                         # slices of the input, read by the branches
        for branch, c in zip(node.branches, sizes):
            tree, end = self.branch(branch, ((c, x[1], x[2]), rf, jump, storage), path)
            outs.append(end)
            branches.append(tree)
            if outs[-1][3] != storage:            # a branch's own output, kept until the concat
                self.held += self.nbytes(outs[-1][0])
                held += self.nbytes(outs[-1][0])
        self.held -= held
        return self.concat_row(node, outs, path, branches)

    def concat_row(self, node, outs, path, branches):
        """Along the first dimension (torch.cat(..., 1)): channels of C x H x W
        maps of equal H and W, or tokens of N x D tokens of equal D."""
        first = outs[0][0]
        for i, (y, *_rest) in enumerate(outs[1:], 2):
            if len(y) != len(first) or len(y) not in (2, 3):
                raise self.error(f"concat needs C x H x W outputs (or N x D tokens); received "
                                 f"{fmt_shape(y)} after {fmt_shape(first)} of b1",
                                 (*path, f"b{i}"))
            if any(sym.norm(a - b) != 0 for a, b in zip(y[1:], first[1:])):
                what = "H and W" if len(y) == 3 else "widths D"
                raise self.error(
                    f"{'x'.join(sym.fmt_int(v) for v in y[1:])} does not match "
                    f"{'x'.join(sym.fmt_int(v) for v in first[1:])} of b1 (the first branch); "
                    f"concat needs equal {what}", (*path, f"b{i}"))
        y = (sym.total(o[0][0] for o in outs), *first[1:])
        end = self.merged_row(node.name, "concat", (), outs, y, path, flops=0, op="concat")
        self.level.append(TreeNode("concat", node.name, (*path, node.name), self.rows[-1],
                                   children=branches))
        return end

    def visit_join(self, node: Join, state, path, shared):
        """A merge entry: its named inputs combined, one row."""
        self.where = (node.file, node.line)
        outs = [self.read(ref) for ref in node.sources]
        full = (*path, node.name)
        y, flops = self.joined_shape(node, [o[0] for o in outs], full)
        if all(isinstance(v, int) for v in y) and isinstance(self.held, int):
            # the inputs (let go unless read again: then in self.held) and the output
            live = self.held + self.nbytes(y) + sum(
                self.nbytes(o[0]) for o in outs if o[3] not in self.pins)
            if isinstance(live, int):
                self.peak_live = max(self.peak_live, live)
        self.reading = tuple(self.origin.get(o[3], "input") for o in outs)
        inputs = list(self.reading)
        kept = tuple(o[3] for o in outs) if node.op == "mul" else ()
        end = self.merged_row(node.name, node.type, node.post, outs, y, path, flops=flops,
                              kept=kept, op=node.op)
        if node.op == "mul":
            self.partial_products([o[0] for o in outs], y)
        self.level.append(TreeNode("join", node.name, full, self.rows[-1], op=node.op,
                                   inputs=inputs))
        return end

    def partial_products(self, shapes: list, y) -> None:
        """A product of N inputs runs as (a * b) * c ...: each of the N - 2 partial
        products is kept for the next product's backward (a sum accumulates in
        place into its first partial sum: nothing kept). The row's activations
        stay its output, as every row's."""
        partial = shapes[0]
        for s in shapes[1:-1]:
            partial = y if same_shape(partial, y) or same_shape(s, y) else partial
            self.saved.add(self.new_storage(sym.prod(partial)))

    def joined_shape(self, node: Join, shapes: list, full) -> tuple:
        """A merge entry's output shape and FLOPs: add and mul need equal shapes
        (mul broadcasts a C x 1 x 1 gate); concat, equal H and W. An add or
        mul of N inputs costs (N - 1) x numel."""
        given = ", ".join(f"{ref.text} gives {fmt_shape(s)}"
                          for ref, s in zip(node.sources, shapes))
        if node.op == "concat":
            if {len(s) for s in shapes} not in ({1}, {2}, {3}) or \
                    any(not same_shape(s[1:], shapes[0][1:]) for s in shapes):
                raise self.error(f"merge \"concat\": {given}; concat needs C x H x W "
                                 "outputs of equal H and W (or N x D tokens of equal D, "
                                 "or feature vectors)", full)
            return (sym.total(s[0] for s in shapes), *shapes[0][1:]), 0
        # the full shape: a gate (C x 1 x 1) is the smaller one
        y = next((s for s in shapes if len(s) != 3 or s[1] != 1 or s[2] != 1), shapes[0])
        for s in shapes:
            gate = node.op == "mul" and len(s) == 3 and len(y) == 3 and s[1] == 1 and \
                s[2] == 1 and sym.norm(s[0] - y[0]) == 0
            if not (same_shape(s, y) or gate):
                rule = "equal shapes" if node.op != "mul" else \
                    "equal shapes (or a C x 1 x 1 gate of the same C)"
                verb = {"add": "add", "sub": "subtract"}.get(node.op, "multiply")
                raise self.error(f"merge \"{verb}\": {given}; {verb} needs {rule}", full)
        return y, sym.norm((len(shapes) - 1) * sym.prod(y))

    def visit_merge(self, node: Merge, state, path, shared):
        x = state[0]
        self.held += self.nbytes(x)              # the shortcut reads x after the body
        body_tree, body = self.gather(node.body, state, path, shared=True)
        self.held += self.nbytes(body[0])
        short_tree = []
        if node.shortcut_layers is not None:
            short_tree, short = self.gather(node.shortcut, state, path, shared=True)
        else:
            try:
                ops = shortcut_ops(node, x, body[0])
            except SpecError as e:
                raise self.error(e.message, path) from None
            short = state if ops is None else \
                self.row(node.shortcut_name, "+".join(o.kind.name for o in ops), ops, state, path,
                         shared=True)
            if ops is not None:
                full = (*path, node.shortcut_name)
                short_tree = [TreeNode("layer", node.shortcut_name, full, self.rows[-1])]
        self.held -= self.nbytes(x) + self.nbytes(body[0])
        out, flops = self.merged_shape(node, body[0], short[0], path)
        row_type = "+".join([node.name if node.op != "mul" else "mul",
                             *(o.kind.name for o in node.post)])
        kept = (body[3], short[3]) if node.op == "mul" else ()
        # no add into a tensor a later `from` still reads
        into = body[3] if node.adds_in_place and body[3] not in self.pins else None
        end = self.merged_row(node.name, row_type, node.post, [body, short], out, path,
                              flops=flops, kept=kept, into=into, op=node.op)
        self.level.append(TreeNode("merge", node.name, (*path, node.name), self.rows[-1],
                                   body=body_tree, shortcut=short_tree, op=node.op))
        return end

    def merged_shape(self, node: Merge, y, s, path) -> tuple:
        """The shape a merge gives from its body's ``y`` and its shortcut's ``s``,
        and the merge's FLOPs."""
        if node.op == "concat":  # dense: input channels + body channels
            if len(y) != 3 or sym.norm(y[1] - s[1]) != 0 or sym.norm(y[2] - s[2]) != 0:
                raise self.error(f"dense: the body gives {fmt_shape(y)}, the input is "
                                 f"{fmt_shape(s)}; concat needs equal H and W", path)
            return (sym.norm(s[0] + y[0]), y[1], y[2]), 0
        broadcast = node.op == "mul" and len(y) == 3 and y[1] == 1 and y[2] == 1
        if not broadcast and not same_shape(y, s):
            verb = "adding" if node.op == "add" else "multiplying"
            raise self.error(
                f"{verb} {fmt_shape(y)} (body) and {fmt_shape(s)} (shortcut): "
                f"{'addition' if node.op == 'add' else 'the product'} needs equal shapes; "
                + ("use shortcut = \"projection\" or \"auto\"" if node.op == "add"
                   else "a gate must be C x 1 x 1 or the input's shape"), path)
        return s, sym.prod(s)

    def error(self, message, path) -> SpecError:
        """A merge error, located at the spec line of the block it sits in."""
        file, line = getattr(self, "where", (None, None))
        return SpecError(message, file=file or self.model.file, line=line, path=path)

    def merged_row(self, name, row_type, post, outs, y, path, flops, kept=(), into=None,
                   op="concat"):
        """The row of a merge (concat, add, mul), then its fused ops. ``into``:
        the storage an in-place add writes into (then the row allocates nothing)."""
        rf = (sym.smax(*(o[1][0] for o in outs)), sym.smax(*(o[1][1] for o in outs)))
        jump = (sym.smax(*(o[2][0] for o in outs)), sym.smax(*(o[2][1] for o in outs)))
        self.saved.update(kept)
        row = Row(len(self.rows), path_text((*path, name)), (*path, name), row_type, y,
                  flops=sym.norm(flops), allocates=into is None, merge=op, post=tuple(post),
                  inputs=self.reading,
                  merged=tuple((self.origin.get(o[3], "input"), o[0], o[1], o[2]) for o in outs))
        self.reading = ()
        wide = any(o[3] in self.wide for o in outs)   # type promotion
        storage = self.new_storage(sym.prod(y), 4 if wide else None) if into is None else into
        if wide and into is None:
            self.wide.add(storage)
        state = (y, rf, jump, storage)
        for op in post:
            state = self.op(op, row, *state)
        return self.finish(row, state)

    def row(self, name, row_type, ops, state, path, line=None, shared=False):
        main = ops[0]
        full = (*path, name)
        allocates = main.kind.allocates(main.args) or \
            (main.kind.shares_storage(main.args)
             and not in_place(main, shared, state[3] in self.saved))
        row = Row(len(self.rows), path_text(full), full, row_type, state[0],
                  allocates=allocates, weighted=main.kind.weighted,
                  ops=tuple(ops), input_shape=state[0], rf_in=state[1], jump_in=state[2],
                  inputs=self.reading)
        self.reading = ()
        fresh = None   # elements of the row's latest new tensor
        for i, op in enumerate(ops):
            before = state[3]
            state = self.op(op, row, *state, shared=shared and i == 0)
            if state[3] != before:
                if fresh is not None:   # conv's output under its fused batch norm's
                    row.fused_activations = sym.norm(row.fused_activations + fresh)
                fresh = sym.prod(state[0])
        return self.finish(row, state, line)

    def finish(self, row, state, line=None):
        x, rf, jump, storage = state
        row.output_shape = x
        row.activations = sym.prod(x)
        row.receptive_field, row.jump = rf, jump
        self.origin[storage] = row.name
        for message in row.findings:
            self.findings.append(SpecWarning(message, row.path, line))
        self.rows.append(row)
        return state

    def grows_map(self, row, line) -> None:
        """A sliding window whose output is larger than its input: a padding
        beyond the kernel's reach (a 1x1 conv with padding 1), nearly always
        a slip; the layer says `grows = true` when it is meant."""
        main = row.ops[0]
        x, y = row.input_shape, row.output_shape
        if main.kind.name not in SLIDING_KINDS or len(x) != 3 or len(y) != 3:
            return
        grown = [axis for axis, n, m in zip(("height", "width"), x[1:], y[1:])
                 if isinstance(n, int) and isinstance(m, int) and m > n]
        if not grown:
            return
        a = main.args
        arithmetic = "; ".join(main.kind.size_arithmetic(a, x) or sliding_arithmetic(
            x, a.kernel, a.stride or a.kernel, a.padding, getattr(a, "dilation", (1, 1))))
        self.findings.append(SpecWarning(
            f"grows its map ({fmt_shape(x)} in, {fmt_shape(y)} out): {arithmetic}; "
            "a padding beyond (F - 1)/2 pads more than the kernel reaches (write "
            "grows = true on the layer if that is meant)", row.path, line, rule="grows-map"))

    def find(self, name: str):
        """An earlier row by its name or its path (block.pool, in any spelling)."""
        found = self.seen.get(path_text(split_path(name)), [])
        if not found:
            raise SpecError(f"no earlier layer is named {name!r}")
        if len(found) > 1:
            raise SpecError(f"{len(found)} earlier layers are named {name!r}; "
                            "give its path, e.g. block.name")
        return found[0]

    def op(self, op, row, x, rf, jump, storage, shared=False):
        kind, a = op.kind, op.args
        kind.check_input(x)
        kind.check_references(a, x, self.find)
        if kind.nonlinear:
            self.nonlinearities += 1
        y = kind.output_shape(a, x)
        if row.ops and op is row.ops[0]:
            entry = (kind.name, x, y)
            for key in {row.path[-1], path_text(row.path)} if row.path else ():
                self.seen.setdefault(key, []).append(entry)
        row.params = sym.norm(row.params + kind.params(a, x))
        formula = kind.params_formula(a, x)
        if formula:
            row.params_formula = formula if row.params_formula is None else \
                f"{row.params_formula} + {formula}"
        row.buffers = sym.norm(row.buffers + kind.buffers(a, x))
        row.macs = sym.norm(row.macs + kind.macs(a, x, y))
        row.flops = sym.norm(row.flops + kind.flops(a, x, y))
        # the first weighted layer computes no gradient for the model input
        first = self.first_weighted
        if kind.weighted:
            self.first_weighted = False
        row.backward_flops = sym.norm(row.backward_flops + kind.backward_flops(
            a, x, y, needs_input_grad=not first))
        row.findings.extend(kind.findings(a, x))
        rf, jump = kind.receptive_field(a, x, rf, jump)
        # storages: what a training step keeps for this op's backward
        fresh = not in_place(op, shared, storage in self.saved)
        mode = kind.autocast_mode(a, self.autocast) if self.autocast else "follow"
        wide_in = storage in self.wide
        wide_out = mode == "fp32" or (mode == "follow" and wide_in)
        out = self.new_storage(sym.prod(y), 4 if wide_out else None) if fresh else storage
        if wide_out:
            self.wide.add(out)
        if all(isinstance(v, int) for v in (*x, *y)) and isinstance(self.held, int):
            # a value kept for a later reader is in self.held already
            live = self.held + (self.nbytes(x) if storage not in self.pins else 0) + \
                (self.nbytes(y) if fresh else 0)
            self.peak_live = max(self.peak_live, live)
        kept = kind.saved_autocast(a, x, y, self.autocast) if self.autocast else \
            kind.saved(a, x, y)
        if kept.input and mode == "low" and wide_in:
            # autocast casts a fp32 input for this op: the cast copy is kept
            # (one per op that reads it: autocast caches only weights' casts)
            self.saved.add(self.new_storage(sym.prod(x)))
        elif kept.input and not fresh and not kind.view:
            # an in-place op that needs its input: autograd keeps a copy of it
            self.saved.add(self.new_storage(sym.prod(x), 4 if wide_in else None))
        elif kept.input:
            self.saved.add(storage)
        if kept.output:
            self.saved.add(out)
        for elements, size in kept.extra:
            self.saved.add(self.new_storage(elements, size))
        for elements, size in kept.per_batch:
            self.saved.add(self.new_storage(elements, size, per_sample=False))
        return y, rf, jump, out

    def new_storage(self, elements, size=None, per_sample=True):
        sid = next(self._ids)
        self.storage_bytes[sid] = sym.norm(
            elements * (size or self.dsize) * (self.batch if per_sample else 1))
        return sid

    def totals(self, states):
        rows, dsize, batch = self.rows, self.dsize, self.batch
        params = sym.total(r.params for r in rows)
        activations = sym.norm(sym.total(r.activations for r in rows if r.allocates)
                               + sym.total(r.fused_activations for r in rows))
        saved = sym.total(self.storage_bytes[s] for s in sorted(self.saved))
        param_bytes = sym.norm(params * dsize)
        optimizer_bytes = sym.norm(param_bytes * states)
        totals = {
            "params": params,
            "trainable_params": params,
            "buffers": sym.total(r.buffers for r in rows),
            "macs": sym.total(r.macs for r in rows),
            "flops": sym.total(r.flops for r in rows),
            "backward_flops": sym.total(r.backward_flops for r in rows),
            "activations": activations,
            "activation_bytes": sym.norm(activations * dsize * batch),
            "param_bytes": param_bytes,
            "gradient_bytes": param_bytes,
            "optimizer_state_bytes": optimizer_bytes,
            "saved_activation_bytes": saved,
            "train_memory_bytes": sym.norm(2 * param_bytes + optimizer_bytes + saved),
            "weighted_layers": sum(1 for r in rows if r.weighted),
            "nonlinearities": self.nonlinearities,
            "outputs": len(self.outputs),
            "receptive_field": sym.smax(*(sym.smax(*r.receptive_field) for r in rows)),
        }
        if isinstance(param_bytes, int) and isinstance(self.peak_live, int) and self.peak_live:
            # weights + the most activation bytes alive at once in a no-grad forward
            totals["inference_peak_bytes"] = param_bytes + self.peak_live
        return totals


def fold(rows: list, depth: int) -> list:
    """Rows below ``depth`` folded into one row per block (summed params, MACs,
    FLOPs, activations; the block's last output and largest receptive field)."""
    out: list[Row] = []
    group = None
    for row in rows:
        if len(row.path) <= depth:
            out.append(row)
            group = None
            continue
        key = row.path[:depth]
        if group is None or group.path != key:
            group = Row(row.index, path_text(key), key, "block", row.output_shape,
                        activations=0)
            out.append(group)
        group.params = sym.norm(group.params + row.params)
        group.macs = sym.norm(group.macs + row.macs)
        group.flops = sym.norm(group.flops + row.flops)
        if row.allocates:
            group.activations = sym.norm(group.activations + row.activations)
        group.output_shape = row.output_shape
        group.receptive_field = tuple(sym.smax(p, q) for p, q in
                                      zip(group.receptive_field, row.receptive_field))
        group.jump = row.jump
    return out
