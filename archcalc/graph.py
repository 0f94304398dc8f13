"""The graph the engine walks: a Spec with its expressions, kinds and blocks resolved.

The node classes (Layer, Sequence, Concat, Split, Heads, Transform, Merge,
Join), their visitor contract and the shortcut and split shapes live in
structures.py; this module builds a graph of them from a spec.

Spec syntax for structure (in a layer list or as a reusable block):
    {block = "basic", name = "layer1_0", with = {C = 64}}
    {name = "mixed", concat = [[...], [...]]}
    {split = [[], [...]], sizes = [C1, C2]}   # branch i gets channels of slice i;
                            # sizes default to equal slices; [] is the identity
    {residual = [...], shortcut = "auto"|"identity"|"projection"|"pad"|[...], activation = "relu"}
        ("pad": He et al.'s option A for CIFAR: subsample by the stride and
        zero-pad the new channels, no parameters; shortcut_name = "downsample"
        names the shortcut's level, "shortcut" by default)
    {scale = [...]}         # x * body(x)
    {dense = [...]}         # concat(x, body(x))
    {layers = [...]}        # a plain named sequence
    {heads = [{name = "scores", layers = [...]}, {name = "offsets", layers = [...]}]}
                            # named outputs: each head reads the current tensor,
                            # the main line goes on unchanged after it; a head
                            # whose list ends in heads of its own is not an output
    {transform = [...], size = [H, W]}   # a spatial transformer: the list is the
                            # localisation net (ending in 6 features, theta); its
                            # sampler row warps the input (layers/transform.py)

A general graph (graph_refs.py resolves the names): any entry may read
``from = "NAME"`` (an earlier entry of its list or an enclosing one, a dotted
path into a named level, or "input"); ``{name = "p4", merge = "add", from =
["lat4", "up5"]}`` combines outputs (add, concat, multiply); ``[model]
outputs = [...]`` returns several.

Names and levels: a named block or structure adds a level to the path of
what is inside it. ``flat = true`` on a structure adds none: its rows, its
branches and its merge row (named by ``name``) sit in the enclosing block,
as when one PyTorch module adds twice (ViT's encoder block). A concat or
split branch may be a table ``{name = "branch1", layers = [...]}`` (its
level's name; b1, b2, ... by default) or ``{flat = true, layers = [...]}``.
``flat = true`` on a class_token, position_embedding or layer_scale row
puts its one parameter on the enclosing block under the row's name
(torchvision's bare ``nn.Parameter`` attributes). A repeated name may hold
``{expression}`` parts of the copy's index ``i`` (from 0): ``name = "{i + 1}"``
names the copies 1, 2, 3, as an ``nn.Sequential`` numbers its children. A
dotted name (``name = "convs.0"``) puts the entry's module in a container of
the level (``convs``, never called itself): the members of a ModuleList
called in several places of the forward, other layers between.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from . import limits, sym
from .errors import SpecError
from .layers import REGISTRY, lookup
from .layers.activation import ACTIVATIONS
from .layers.base import Arg
from .spec.expr import UNBOUND, check_identifier, evaluate_value
from .spec.loader import RawLayer, Spec
from .spec.defaults import fit_inherited_padding
# the node classes and their walk live in structures.py; importers read them here too
from .structures import (NODE_CLASSES, Concat, Heads, Join, Layer, Merge, Node, Op, Ref,
                         Sequence, Split, Transform, Visitor, ends_in_heads, in_place, is_leaf,
                         same_shape, shortcut_ops, split_sizes, walk)
from .graph_refs import (JOIN_OPS, NAME, RESERVED, Resolver, check_name, dotted_clash,
                         model_outputs)

ROW_KEYS = {"name", "repeat", "kind", "when", "flat", "grows"}
REPEAT_INDEX = "repeat_index"   # readable in a block call's `with`
FUSED_KEYS = {"batch_norm", "activation"}
STRUCTURES = ("layers", "concat", "split", "residual", "scale", "dense", "heads", "transform")
MERGE_OPS = {"residual": "add", "scale": "mul", "dense": "concat"}
SHORTCUTS = ("auto", "identity", "projection", "pad")


@dataclass
class Model:
    name: str
    source: str
    file: str
    input: tuple
    env: dict
    body: Sequence
    extra: dict = field(default_factory=dict)
    outputs: tuple = ()   # Refs of [model] outputs; () returns the body's output
    refs: tuple = ()      # every Ref of the graph (from, merge sources, outputs)


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): the --input option."""
    parts = re.split(r"\s*[x,×]\s*", text.strip())
    if len(parts) not in (1, 3) or not all(p.isascii() and p.isdigit() for p in parts):
        raise SpecError(f"--input takes CxHxW with positive integers, e.g. 3x224x224. "
                        f"Received: {text[:60]!r}")
    shape = tuple(limits.parse_int(p, "--input") for p in parts)
    if not all(shape):
        raise SpecError(f"--input takes CxHxW with positive sizes, e.g. 3x224x224. Received: {text!r}")
    return shape


def resolve_env(spec: Spec, overrides: dict | None) -> dict:
    """[vars] in order: ints, expressions of earlier ones, or "?" (a symbol)."""
    overrides = dict(overrides or {})
    env: dict = {}
    for name, value in spec.vars.items():
        if name in overrides:
            env[name] = overrides.pop(name)
        elif value == UNBOUND:
            env[name] = sym.symbol(name)
        else:
            try:
                env[name] = evaluate_value(value, env) if isinstance(value, str) else value
                if isinstance(env[name], bool):
                    raise SpecError(f"{value!r} is true/false, not a number")
                if isinstance(env[name], int):
                    limits.check_value(env[name], "the value")
            except SpecError as e:
                raise SpecError(f"[vars] {name}: {e.message}",
                                file=spec.var_files.get(name, spec.file)) from None
    for name, value in overrides.items():
        known = ", ".join(spec.vars) or "none"
        raise SpecError(f"--set {name}={value}: the spec has no variable {name!r} "
                        f"(its variables: {known})", file=spec.file)
    return env


def build_graph(spec: Spec, *, variables: dict | None = None,
                input: tuple | str | None = None) -> Model:
    # every step of the expansion, rows or none, costs against MAX_EXPANSION
    with limits.metered():
        return _build_graph(spec, variables, input)


def _build_graph(spec: Spec, variables: dict | None, input: tuple | str | None) -> Model:
    env = resolve_env(spec, variables)
    if isinstance(input, str):
        input = parse_shape(input)
    try:
        shape = input if input is not None else tuple(
            Arg("int", min=1).read("[model]", "input", v, env) for v in spec.input)
    except SpecError as e:
        raise e.at(file=spec.file) from None
    builder = _Builder(spec)
    scope = _Scope(env)
    body = Sequence([])
    with builder.names.frame(body, (), [raw.table for raw in spec.layers]) as frame:
        for i, raw in enumerate(spec.layers, 1):
            body.items.extend(builder.top_level(raw, i, scope))
        outputs = model_outputs(builder.names, frame, spec.outputs, spec.file)
    check_names(body, spec.file)
    return Model(spec.name, spec.source, spec.file, tuple(shape), env, body,
                 dict(spec.extra), outputs, tuple(builder.names.refs))


class _Scope:
    """Variables and auto-name counters of one level (the model, a block, a branch)."""

    def __init__(self, env: dict, blocks: tuple = (), depth: int = 0):
        self.env = env
        self.blocks = blocks          # block names being instantiated (cycle check)
        self.counts: dict[str, int] = {}
        self.depth = depth            # levels of blocks and structures around it

    def child(self, env: dict | None = None, block: str | None = None) -> "_Scope":
        limits.MAX_NESTING.check(self.depth + 1, "blocks and structures nest "
                                 f"{self.depth + 1} levels deep")
        return _Scope(self.env if env is None else env,
                      self.blocks + ((block,) if block else ()), self.depth + 1)

    def auto_name(self, base: str) -> str:
        n = self.counts.get(base, 0) + 1
        self.counts[base] = n
        return f"{base}{n}"


class _Builder:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.rows = 0          # rows made so far, against limits.MAX_ROWS
        self.names = Resolver(_LevelNames)   # from = "NAME": the lists being built
        self.defaults = {}
        for key, table in spec.defaults.items():
            try:
                kind = lookup(key)
            except SpecError as e:
                raise e.at(file=spec.file) from None
            self.defaults[kind.name] = dict(table)
            for arg in table:   # a typo is reported at its own line
                if arg not in kind.args and arg not in FUSED_KEYS:
                    file, line = spec.default_lines.get((key, arg), (spec.file, None))
                    try:
                        kind.read_args({arg: table[arg]}, {})
                    except SpecError as e:
                        raise SpecError(f"[defaults.{key}]: {e.message}", file=file,
                                        line=line) from None

    # -- entry points -----------------------------------------------------
    def top_level(self, raw: RawLayer, index: int, scope: _Scope):
        label = raw.table.get("name") or f"#{index}"
        try:
            nodes = self.entry_nodes(raw.table, scope)
        except SpecError as e:
            # block and structure instances name themselves (basic1, basic2, ...)
            named = _is_instance(raw.table)
            raise e.at(file=raw.file, line=raw.line,
                       layer=None if named else str(label)) from None
        for node in nodes:
            for layer in node.layers():   # rows of a block keep their own lines
                layer.file, layer.line = layer.file or raw.file, layer.line or raw.line
            if isinstance(node, Join):   # a merge entry's errors name its line
                node.file, node.line = raw.file, raw.line
            if node.leaf:
                node.label = node.name if "name" in raw.table else f"{label} ({node.name})"
        return nodes

    def entry(self, table, scope: _Scope):
        """One table of a layer list: a layer, a block instance or a structure."""
        if not hasattr(table, "get"):
            raise SpecError(f"a layer must be a table such as {{conv = 64, kernel = 3}}. "
                            f"Received: {table!r}")
        # a switched-off or zero-repeat row costs its step too
        limits.charge(1, "expanding the spec")
        table = dict(table)
        if "block" in table:
            yield from self.block_instances(table, scope)
        elif any(k in table for k in STRUCTURES):
            yield from self.structure_instances(table, scope)
        else:
            yield from self.layers(table, scope)

    def entry_nodes(self, table, scope: _Scope) -> list:
        """One table's nodes, on the list's frame: a merge entry, or an entry
        that reads ``from`` an earlier one (the first copy of a repeat)."""
        if hasattr(table, "get") and "merge" in table:
            return self.join(dict(table), scope)
        table = dict(table) if hasattr(table, "get") else table
        written = table.pop("from", None) if isinstance(table, dict) else None
        nodes = list(self.entry(table, scope))
        # read after `when` and `repeat` (a switched-off entry names nothing), still
        # before this entry's own names join the list
        ref = self.names.source(written) if nodes and written is not None else None
        self.names.add(nodes, ref)
        return nodes

    def join(self, table: dict, scope: _Scope) -> list:
        limits.charge(1, "expanding the spec")
        if "when" in table and not self._when(table["when"], scope):
            return []
        post = self.fused({"activation": table["activation"]} if "activation" in table else {},
                          scope)
        node = self.names.join(table, "", "name" not in table, post)
        node.name = check_name(table["name"], True) if "name" in table else \
            scope.auto_name(node.op)
        self.rows += 1
        limits.MAX_ROWS.check(self.rows, f"merge {node.name} brings the spec to "
                              f"{self.rows:,} rows")
        self.names.add([node], None, reads_previous=False)
        return [node]

    def sequence(self, entries, scope: _Scope, name: str = "") -> Sequence:
        if not isinstance(entries, list):
            raise SpecError(f"expected a list of layers. Received: {entries!r}")
        seq = Sequence([], name)
        with self.names.frame(seq, scope.blocks, entries):
            for i, table in enumerate(entries, 1):
                label = table.get("name") if hasattr(table, "get") else None
                try:
                    seq.items.extend(self.entry_nodes(table, scope))
                except SpecError as e:
                    if _is_instance(table):
                        raise
                    raise e.at(layer=str(label or f"#{i}")) from None
        return seq

    # -- layers -----------------------------------------------------------
    def layers(self, table, scope: _Scope):
        kind, primary = self._kind(table)
        args = {**self.defaults.get(kind.name, {}), **_args(table)}
        if primary is not None:
            args[kind.primary] = primary
        # a kind's own argument of that name (se's inner activation) is not a fused op
        if getattr(kind, "structural", False):
            raise SpecError(f"{kind.name} is the sampler row of a spatial transformer; write "
                            "{transform = [...localisation net ending in 6 features...], "
                            "size = [H, W]}")
        fused = {k: args.pop(k) for k in FUSED_KEYS if k in args and k not in kind.args}
        if fused and not kind.fusable:
            raise SpecError(f"{kind.name} takes no {' or '.join(sorted(fused))}; "
                            "only weighted rows (conv, fc, ...) fuse a batch norm or an activation")
        flat = table.get("flat", False)
        if flat is not False:
            if flat is not True:
                raise SpecError(f"flat takes true or false. Received: flat={flat!r}")
            if not kind.flat:
                flat_kinds = ", ".join(k.name for k in dict.fromkeys(REGISTRY.values()) if k.flat)
                raise SpecError(f"flat = true puts a row's one parameter on its block; "
                                f"{kind.name} is not one of {flat_kinds}")
            if fused:
                raise SpecError("a flat row fuses no batch norm or activation")
        grows = table.get("grows", False)
        if not isinstance(grows, bool):
            raise SpecError(f"grows takes true or false. Received: grows={grows!r}")
        names = list(self._names(table, kind.name, scope))  # checks `when` first
        if not names:
            return
        main = kind.read_args(args, scope.env)
        if "padding" in self.defaults.get(kind.name, {}) and "padding" not in table:
            fit_inherited_padding(kind.name, main)   # a 1x1 never takes a 3x3's padding
        ops = (Op(kind, main),) + self.fused(fused, scope)
        for row_name, auto in names:
            yield Layer(row_name, ops, auto=auto, flat=flat, grows=grows)

    def _names(self, table, base: str, scope: _Scope):
        """(name, made up?) per instance: `repeat` copies, none when `when` is false."""
        if "when" in table and not self._when(table["when"], scope):
            return
        repeat = Arg("int", 1, min=0, numeric=True).read(base, "repeat",
                                                         table.get("repeat", 1), scope.env)
        self.rows += repeat
        limits.MAX_ROWS.check(self.rows, f"repeat = {repeat:,} brings the spec to "
                              f"{self.rows:,} rows or more")
        name = table.get("name")
        template = isinstance(name, str) and "{" in name
        if name is not None and not template:
            check_name(name, dotted=True)
        work = limits.current_work()
        start, rows = (work.steps if work else 0), self.rows
        for i in range(repeat):
            if work is not None:
                if i == 1:  # the first copy's rows and steps, times the copies left
                    more = (self.rows - rows) * (repeat - 1)
                    limits.MAX_ROWS.check(self.rows + more, f"repeat = {repeat:,} of {base} "
                                          f"brings the spec to {self.rows + more:,} rows")
                    work.predict((work.steps - start) * (repeat - 1),
                                 f"repeat = {repeat:,} of {base}")
                work.charge(1, f"repeat = {repeat:,} of {base}")
            if name is None:
                yield scope.auto_name(base), True
            elif template:
                yield check_name(_fill_name(name, {**scope.env, "i": i}), True), False
            else:
                yield (f"{name}_{i + 1}" if repeat > 1 else name), False

    @staticmethod
    def _when(condition, scope: _Scope) -> bool:
        """`when = "stride == 1"`: whether the layer, block call or branch exists."""
        if isinstance(condition, bool):
            return condition
        if not isinstance(condition, str):
            raise SpecError(f"when takes a condition such as \"stride == 1 and C == out\" "
                            f"(or true/false). Received: when={condition!r}")
        try:
            value = evaluate_value(condition, scope.env)
        except SpecError as e:
            raise SpecError(f"when: {e.message}") from None
        if not isinstance(value, (bool, int, float)):
            raise SpecError(f"when: {condition!r} depends on unbound variables; "
                            "bind them with --set NAME=VALUE")
        return bool(value)

    def _kind(self, table):
        if "kind" in table:
            return lookup(str(table["kind"])), None
        # batch_norm is a kind and a fused flag: a flag beside another kind
        keys = [k for k in table if k in REGISTRY and k not in FUSED_KEYS] or \
            [k for k in table if k in REGISTRY]
        if len(keys) > 1:
            raise SpecError(f"names two layer kinds ({', '.join(keys)}); one table is one layer")
        if not keys:
            others = [k for k in table if k not in ROW_KEYS | FUSED_KEYS
                      and not any(k in kd.args for kd in REGISTRY.values())]
            if others:
                lookup(others[0])  # raises: unknown kind, with close matches
            raise SpecError("has no layer kind: write e.g. {conv = 64, kernel = 3} or "
                            "kind = \"conv\"; `archcalc kinds` lists the kinds")
        key = keys[0]
        kind = REGISTRY[key]
        value = table.pop(key)
        if kind.primary is None:
            if value is not True:
                raise SpecError(f"{kind.name} takes no value of its own; write "
                                f"{{{key} = true}}. Received: {key}={value!r}")
            return kind, None
        if value is True:
            return kind, None  # the primary argument keeps its default
        return kind, value

    def fused(self, fused: dict, scope: _Scope) -> tuple:
        ops = []
        if fused.get("batch_norm", False):
            if fused["batch_norm"] is not True:
                raise SpecError(f"batch_norm takes true or false. "
                                f"Received: batch_norm={fused['batch_norm']!r}")
            bn = lookup("batch_norm")
            ops.append(Op(bn, bn.read_args(self.defaults.get("batch_norm", {}), scope.env)))
        act = fused.get("activation")
        if act is not None and act is not False:
            if act not in ACTIVATIONS:
                raise SpecError(f"activation takes one of {', '.join(ACTIVATIONS)}. "
                                f"Received: activation={act!r}")
            kind = lookup(act)
            ops.append(Op(kind, kind.read_args(self.defaults.get(kind.name, {}), scope.env)))
        return tuple(ops)

    # -- structure --------------------------------------------------------
    def structure_instances(self, table, scope: _Scope):
        keys = [k for k in STRUCTURES if k in table]
        if len(keys) > 1:
            raise SpecError(f"a table takes one of {', '.join(STRUCTURES)}; "
                            f"received {' and '.join(keys)}")
        for name, auto in self._names(table, keys[0], scope):
            inner = scope.child()
            try:
                seq = self.structure(table, keys[0], inner, name)
            except SpecError as e:
                # unnamed heads add no level to the path: no name in the message either
                raise e.at(layer=None if keys[0] == "heads" and auto else name) from None
            seq.auto = auto
            yield seq

    def structure(self, table, key: str, scope: _Scope, name: str) -> Sequence:
        allowed = {"name", "repeat", "when", "flat", key} | \
            ({"sizes"} if key == "split" else set()) | \
            ({"size", "align_corners"} if key == "transform" else set())
        if key in MERGE_OPS:
            allowed |= {"activation"} | ({"shortcut", "shortcut_when", "shortcut_name"}
                                         if key == "residual" else set())
        extra = set(table) - allowed - {"block", "with", "args"}
        if extra:
            raise SpecError(f"{key} takes {', '.join(sorted(allowed - {'name', 'repeat'}))}; "
                            f"unknown key(s): {', '.join(sorted(extra))}")
        flat = table.get("flat", False)
        if flat not in (True, False):
            raise SpecError(f"flat takes true or false. Received: flat={flat!r}")
        if flat:
            # no level of its own: the structure's parts and its merge row (named
            # `name`) sit in the enclosing block
            if key == "layers" or ("shortcut_when" in table
                                   and not self._when(table["shortcut_when"], scope)):
                return self.sequence(table[key], scope)  # no merge, no level
            inner = self.structure({k: v for k, v in table.items()
                                    if k not in ("flat", "shortcut_when")}, key, scope, name)
            inner.items[0].name = name
            return Sequence(inner.items, "")
        if key == "layers":
            return self.sequence(table[key], scope, name)
        if key == "concat":
            branches = table[key]
            if not isinstance(branches, list) or len(branches) < 2:
                raise SpecError("concat takes a list of at least two branches, each a list "
                                "of layers: concat = [[...], [...]]")
            seqs = []
            for i, branch in enumerate(branches, 1):
                try:
                    found = self._branch(branch, scope, f"b{i}")
                    if found is not None:
                        seqs.append(self.sequence(found[0], scope.child(), found[1]))
                except SpecError as e:
                    raise e.at(layer=f"b{i}") from None
            if not seqs:
                raise SpecError("concat: every branch is switched off by its `when`")
            return Sequence([Concat(seqs)], name)
        if key == "split":
            return Sequence([self.split(table, scope)], name)
        if key == "transform":
            loc = self.sequence(table[key], scope.child(), "loc")
            if not loc.items:
                raise SpecError("transform needs a localisation net: a list of layers ending "
                                "in 6 features (theta)")
            sampler = lookup("affine_sampler")
            args = {k: table[k] for k in ("size", "align_corners") if k in table}
            return Sequence([Transform(loc, Op(sampler, sampler.read_args(args, scope.env)))],
                            name)
        if key == "heads":
            return Sequence([self.heads(table[key], scope)],
                            name if "name" in table else "")
        body = self.sequence(table[key], scope)
        if "shortcut_when" in table and not self._when(table["shortcut_when"], scope):
            body.name = name   # no merge: the body alone (its frame's own Sequence)
            return body
        shortcut = table.get("shortcut", "auto" if key == "residual" else "identity")
        shortcut_name = check_name(table.get("shortcut_name", "shortcut"))
        if isinstance(shortcut, list):
            shortcut = self.sequence(shortcut, scope.child(), shortcut_name)
        elif shortcut not in SHORTCUTS:
            raise SpecError(f"shortcut takes {', '.join(map(repr, SHORTCUTS))} or a list of "
                            f"layers. Received: shortcut={shortcut!r}")
        post = self.fused({"activation": table["activation"]} if "activation" in table else {},
                          scope)
        op = MERGE_OPS[key]
        merge_name = {"add": "add", "mul": "scale", "concat": "concat"}[op]
        return Sequence([Merge(body, shortcut, op, post, merge_name, shortcut_name)], name)

    def _branch(self, branch, scope: _Scope, default: str):
        """A branch: a list of layers, or {layers = [...], when = "...", name = "...",
        flat = true}; (layers, level name: "" when flat) or None when off."""
        limits.charge(1, "expanding the spec")
        if hasattr(branch, "get"):
            extra = set(branch) - {"layers", "when", "name", "flat"}
            if extra or "layers" not in branch:
                raise SpecError("a branch is a list of layers, or a table "
                                "{layers = [...], when = \"condition\", name = \"...\"}; "
                                f"received the key(s) {', '.join(sorted(map(str, branch)))}")
            if "when" in branch and not self._when(branch["when"], scope):
                return None
            flat = branch.get("flat", False)
            if flat not in (True, False):
                raise SpecError(f"flat takes true or false. Received: flat={flat!r}")
            if flat and "name" in branch:
                raise SpecError("a branch takes name (its level) or flat = true (none), "
                                "not both")
            return branch["layers"], ("" if flat else check_name(branch.get("name", default)))
        return branch, default

    def heads(self, heads, scope: _Scope) -> Heads:
        if not isinstance(heads, list) or not heads:
            raise SpecError("heads takes a list of named heads: heads = [{name = \"scores\", "
                            "layers = [...]}, {name = \"offsets\", layers = [...]}]")
        seqs = []
        for i, head in enumerate(heads, 1):
            if not hasattr(head, "get") or "name" not in head or "layers" not in head or \
                    set(head) - {"name", "layers", "when"}:
                keys = ", ".join(sorted(map(str, head))) if hasattr(head, "get") else repr(head)
                raise SpecError(f"head #{i}: a head is a table {{name = \"...\", layers = [...]}} "
                                f"(optional when); received {keys}")
            name = check_name(head["name"])
            limits.charge(1, "expanding the spec")   # a head switched off costs its step too
            if "when" in head and not self._when(head["when"], scope):
                continue
            try:
                seq = self.sequence(head["layers"], scope.child(), name)
            except SpecError as e:
                raise e.at(layer=name) from None
            if not seq.items:
                raise SpecError(f"head {name!r} has no layers", path=(name,))
            seqs.append(seq)
        if not seqs:
            raise SpecError("heads: every head is switched off by its `when`")
        return Heads(seqs)

    def split(self, table, scope: _Scope) -> Split:
        branches, sizes = table["split"], table.get("sizes")
        if not isinstance(branches, list) or len(branches) < 2:
            raise SpecError("split takes a list of at least two branches, each a list of "
                            "layers ([] passes its slice on): split = [[], [...]]")
        if sizes is not None:
            if not isinstance(sizes, list) or len(sizes) != len(branches):
                raise SpecError(f"sizes takes one channel count per branch "
                                f"({len(branches)}). Received: sizes={sizes!r}")
            sizes = tuple(Arg("int", min=1).read("split", "sizes", v, scope.env) for v in sizes)
        seqs = []
        for i, branch in enumerate(branches, 1):
            try:
                found = self._branch(branch, scope, f"b{i}")
                if found is None:
                    raise SpecError("a split branch takes no `when`: every slice needs one")
                seqs.append(self.sequence(found[0], scope.child(), found[1]))
            except SpecError as e:
                raise e.at(layer=f"b{i}") from None
        return Split(seqs, sizes)

    def block_instances(self, table, scope: _Scope):
        try:
            definition, keys, values = self._block_call(table, scope)
        except SpecError as e:
            raise e.at(layer=str(table.get("name") or table.get("block"))) from None
        block_name = table["block"]
        for copy, (name, auto) in enumerate(self._names(table, block_name, scope)):
            if copy:   # `with` may read repeat_index: each copy its own values
                try:
                    values = self._block_call(table, scope, copy)[2]
                except SpecError as e:
                    raise e.at(layer=name) from None
            inner = scope.child(values, block_name)
            try:
                seq = self.structure({**definition, "name": name}, keys[0], inner, name)
            except SpecError as e:
                raise e.at(layer=name) from None
            seq.auto = auto
            yield seq

    def _block_call(self, table, scope: _Scope, copy: int = 0):
        """Check a block call; its definition, structure key and argument values.
        `with` expressions see `repeat_index`, the copy's index under `repeat`
        (0, 1, ...; 0 without repeat): EfficientNet's drop-path rate grows
        with the block's index."""
        block_name = table["block"]
        if not isinstance(block_name, str):
            raise SpecError(f"block takes the name of a [blocks.NAME] table. "
                            f"Received: block={block_name!r}")
        blocks = self.spec.blocks
        if block_name not in blocks:
            close = difflib.get_close_matches(block_name, blocks, n=2)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else \
                f"; defined blocks: {', '.join(blocks) or 'none'}"
            raise SpecError(f"unknown block {block_name!r}{hint}")
        if block_name in scope.blocks:
            chain = " > ".join((*scope.blocks, block_name))
            raise SpecError(f"block {block_name!r} includes itself ({chain})")
        definition = dict(blocks[block_name])
        keys = [k for k in STRUCTURES if k in definition]
        if len(keys) != 1:
            raise SpecError(f"[blocks.{block_name}] needs exactly one of "
                            f"{', '.join(STRUCTURES)}")
        with_ = table.get("with", {})
        if not hasattr(with_, "items"):
            raise SpecError(f"with takes a table of block arguments. Received: with={with_!r}")
        extra = set(table) - {"block", "with", "name", "repeat", "when"}
        if extra:
            raise SpecError(f"a block call takes block, with, name, repeat and when; "
                            f"unknown key(s): {', '.join(sorted(extra))}")
        params = _block_params(block_name, definition.get("args", []))
        # every argument is read at every call, literal or not
        limits.charge(len(params), f"calls of block {block_name!r}")
        unknown = set(with_) - set(params)
        if unknown:
            raise SpecError(f"block {block_name!r} has no argument(s) "
                            f"{', '.join(sorted(unknown))}; its arguments: "
                            f"{', '.join(params) or 'none'}")
        values = dict(scope.env)
        call_env = {**scope.env, REPEAT_INDEX: copy}
        for arg, default in params.items():
            if arg in with_:
                raw = with_[arg]
            elif default is not None:
                raw = default
            else:
                raise SpecError(f"block {block_name!r} needs the argument {arg!r} "
                                f"(with = {{{arg} = ...}})")
            values[arg] = Arg("int").read(f"block {block_name}", arg, raw,
                                          call_env if arg in with_ else values)
        return definition, keys, values


def check_names(body: Sequence, file: str | None) -> None:
    """Every name unique where it is a path component: the rows of one level
    (a block's layers, its merge row, its shortcut and branches) become one
    module's children, and the built model keeps one module per name."""
    stack = [body]
    while stack:
        seq = stack.pop()
        seen: dict[str, object] = {}
        for name, node in _level(seq, stack):
            if name in seen:
                raise _collision(name, seen[name], node, file)
            seen[name] = node
        clash = dotted_clash(seen)   # "convs" and "convs.0": one module, two things
        if clash:
            raise _collision(clash[0], seen[clash[0]], seen[clash[1]], file)


def _level(seq: Sequence, deeper: list):
    """(name, node) of everything whose path is one level below ``seq``; named
    sub-sequences go on ``deeper`` to be checked as levels of their own."""
    names = _LevelNames(deeper)
    for item in seq.items:
        yield from names.visit(item)


class _LevelNames(Visitor):
    """The names one node puts on its level (check_names)."""

    def __init__(self, deeper: list):
        self.deeper = deeper

    def visit_layer(self, node: Layer):
        yield node.name, node

    def visit_sequence(self, node: Sequence):
        if node.name:
            yield node.name, node
            self.deeper.append(node)
        else:   # an unnamed sequence or a flat branch: its rows sit at this level
            for item in node.items:
                yield from self.visit(item)

    def visit_transform(self, node: Transform):
        yield node.name, node
        yield from self.visit(node.loc)

    def visit_heads(self, node: Heads):
        for head in node.heads:
            yield from self.visit(head)

    def visit_concat(self, node: Concat):
        yield node.name, node
        for branch in node.branches:
            yield from self.visit(branch)

    visit_split = visit_concat

    def visit_join(self, node: Join):
        yield node.name, node

    def visit_merge(self, node: Merge):
        yield node.name, node
        for item in node.body.items:   # the body adds no level
            yield from self.visit(item)
        if node.shortcut != "identity":
            yield node.shortcut_name, node.shortcut
        if node.shortcut_layers is not None:
            self.deeper.append(node.shortcut)


def _collision(name, first, second, file) -> SpecError:
    def where(node) -> str:
        if isinstance(node, str) or node.generated_row:   # a shortcut mode or a merge
            return "a generated row (a merge, a branch or a shortcut)"
        layer = next(node.layers(), None)
        line = f"line {layer.line}" if layer is not None and layer.line else "a layer"
        if getattr(node, "auto", False):
            return f"{line} (an unnamed {getattr(node, 'type', 'block')} named so automatically)"
        return line
    a, b = where(first), where(second)
    places = f"{a} and {b}" if a != b else f"{a} (two tables on that line)"
    layer = second if getattr(second, "leaf", False) else None
    return SpecError(f"the name {name!r} is used twice in one block: {places}; the built "
                     "model keeps one module per name, so rename one",
                     file=file, line=layer.line if layer else None)


def _fill_name(template: str, env: dict) -> str:
    """'layer{i + 1}' with i = 0 -> 'layer1': each {expression} evaluated safely."""
    out, rest = [], template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        expr, close, rest = tail.partition("}")
        if not close or "{" in expr:
            raise SpecError(f"name {template!r}: a {{ without its }}")
        try:
            value = evaluate_value(expr, env)
        except SpecError as e:
            raise SpecError(f"name {template!r}: {e.message}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"name {template!r}: {{{expr}}} must give an integer")
        out += [head, str(value)]
    if "}" in rest:
        raise SpecError(f"name {template!r}: a }} without its {{")
    return "".join(out) + rest


def _is_instance(table) -> bool:
    return hasattr(table, "get") and ("block" in table or any(k in table for k in STRUCTURES))


def _block_params(block: str, args) -> dict:
    """args = ["C", "stride=1"]: names in order, with optional defaults."""
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise SpecError(f"[blocks.{block}] args takes a list of names such as "
                        f"[\"C\", \"stride=1\"]. Received: args={args!r}")
    params = {}
    for a in args:
        name, sep, default = a.partition("=")
        name = name.strip()
        check_identifier(name, f"[blocks.{block}] args: the name")
        if name == REPEAT_INDEX:
            raise SpecError(f"[blocks.{block}] args: {REPEAT_INDEX!r} is the index of a "
                            "repeated block call's copy; name the argument otherwise")
        params[name] = default.strip() if sep else None
    return params


def _args(table):
    return {k: v for k, v in table.items() if k not in ROW_KEYS}


__all__ = ["Node", "Visitor", "NODE_CLASSES", "Op", "Layer", "Sequence", "Concat", "Split",
           "Merge", "Join", "Ref", "JOIN_OPS", "Heads", "Transform", "Model", "build_graph",
           "walk", "ends_in_heads",
           "is_leaf", "in_place", "same_shape", "shortcut_ops", "split_sizes", "parse_shape"]
