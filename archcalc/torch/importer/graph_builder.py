"""fx graph + probe -> the dataflow graph: every call mapped to rows of kinds,
reshape chains classified (layout), max pool indices followed into the unpools
that read them, unmapped operations kept as opaque rows with their MACs
measured (or collected, for a strict import)."""
from __future__ import annotations

import math
import operator
import re

import torch
import torch.fx as fx

from ...errors import SpecError
from ...layers import lookup
from .derived_rows import _DerivedRows
from .dataflow import (Expanded, FlowNode, Param, _Derived, _Indices, _PENDING, _POISON, _Pooled,
    _describe_target, _kind_shape, _path, _per_sample, _spec_matches, _tensor, _tensor_valued,
    _where)
from .layout import _classify_layout
from .measuring import measure
from .mappers import (ADD, SUB, CAT, Call, FUNCTION_MAPPERS, LAYOUT, LAYOUT_FUNCTIONS, LAYOUT_METHODS,
    METHOD_MAPPERS, MUL, PoolIndices, SPLIT, UNPOOLS, Unpool, NoMapping, _constant,
    _layout_module, _mapper_for, map_method_call, method_call, row)
from .naming import _clean_name
from .failures import _first_line
from .probing import PROBE_BATCH, Probed, _TensorArg


class _GraphBuilder(_DerivedRows):
    """fx graph + probe -> Nodes of tensor values, rows mapped to kinds."""

    def __init__(self, gm: fx.GraphModule, found: Probed, input_shape: tuple,
                 allow_opaque: bool, opaque=()):
        self.gm = gm
        self.opaque = set(opaque)
        self.widen: set = set()            # scopes to keep whole on the next try
        self.found = found
        self.allow_opaque = allow_opaque
        self.input_shape = tuple(input_shape)
        self.nodes: list[FlowNode] = []
        self.value: dict = {}             # fx node -> FlowNode | Param | Expanded | None
        self.unsupported: dict = {}       # (op, path) -> count
        self.opaque_vars: list = []       # MACs variables of opaque rows (none are left now)
        self.opaque_rows: list = []       # the opaque rows' FlowNodes, measured
        self.reads: dict = {}             # an opaque row's index -> parameter names it reads
        self.unscaled: list = []          # opaque rows whose MACs do not scale with the batch
        self.charged: set = set()         # parameters and _Derived calls an opaque row holds
        self.stateful_calls: dict = {}    # module path -> times called
        self.output = None
        self.outputs: list = []           # every tensor the forward returns, in order
        self.used_state: set = set()      # module paths and parameter targets used
        self.modules = dict(gm.named_modules())
        self.taped: dict = {}             # (id of an IndexTape, key) -> its max pool's FlowNode
        self.placed_tokens: dict = {}     # a class token's parameter -> (the cat's FlowNode, count)

    # -- entry ------------------------------------------------------------
    def run(self):
        chains = self._layout_chains()
        for n in self.gm.graph.nodes:
            try:
                self._visit(n, chains)
                self._in_place(n)
            except NoMapping as e:
                self._unsupported(n, str(e))
            except RuntimeError as e:   # torch refused what a mapping tried on it
                self._unsupported(n, f"{type(e).__name__}: {_first_line(e)}")
        if self.unsupported or self.widen:   # a pass that found modules to keep whole
            return
        shared = {p: k for p, k in self.stateful_calls.items() if k > 1}
        if shared:
            raise SpecError("a spec holds one set of weights per layer; these modules are "
                            "called more than once (shared weights): "
                            + ", ".join(f"{p} (x{k})" for p, k in sorted(shared.items())))

    def _visit(self, n: fx.Node, chains):
        v = self.found.values.get(n)
        if n.op == "placeholder":
            if not self.nodes and _tensor(v):
                self._add(FlowNode(0, "input", [], self.input_shape, _per_sample(v),
                               name="input"), n)
            elif _tensor(v):
                raise SpecError(f"the model's forward takes more than one tensor "
                                f"({n.name}); import needs one input")
            else:
                self.value[n] = None
            return
        if n.op == "get_attr":
            obj = self._attr(n.target)
            self.value[n] = Param(n.target, obj) if isinstance(obj, torch.Tensor) else None
            return
        if n.op == "output":
            if self.unsupported or self.widen:
                return
            # several outputs (a dict, a tuple): the spec's [model] outputs
            outs = _returned(n.args[0])
            for out in outs:
                got = self.value.get(out) if isinstance(out, fx.Node) else None
                if isinstance(got, (_Pooled, _Indices)):
                    raise SpecError(f"the model's forward returns the indices of the max "
                                    f"pool at {_where(got.pool)}; import needs tensors")
                if not isinstance(got, FlowNode):
                    raise SpecError("the model's forward must return tensors; it returns "
                                    f"{type(self.found.values.get(out, out)).__name__}")
                self.outputs.append(got)
            self.output = self.outputs[-1]
            return
        if self.widen and self._widened(n):
            self.value[n] = self._stand_in(n)
            return
        inputs = [self.value.get(a) for a in n.all_input_nodes]
        if any(x is _POISON for x in inputs):
            # downstream of an unsupported op: its own failures are not reported
            # again, but an op that has no mapping at all is
            if not self._has_mapper(n) and not self.allow_opaque:
                self._unsupported(n, "")
            self.value[n] = _POISON
            return
        held = [x for x in inputs if isinstance(x, (_Pooled, _Indices))]
        if held and self._read_indices(n, held):
            return
        tensors = [x for x in inputs if isinstance(x, FlowNode)]
        if not tensors and any(isinstance(x, _Derived) for x in inputs) and _tensor_valued(v):
            raise NoMapping("computes on parameters or buffers, not on the input")
        if not tensors and not any(isinstance(x, (Param, Expanded)) or x is _PENDING
                                   for x in inputs):
            if n.op == "call_module" and _tensor_valued(v) and _owns_state(self.modules[n.target]):
                # a module computing from its own weights alone (EdgeNeXt's
                # Fourier position encoding, called with sizes): never dropped
                raise NoMapping("computes on parameters or buffers, not on the input")
            self.value[n] = None      # shape arithmetic, asserts: no tensor work
            return
        if not (_tensor(v) or (isinstance(v, (tuple, list)) and any(map(_tensor, v)))):
            if n.op == "call_module":   # a leaf whose output is not a tensor
                raise NoMapping(f"returns a {type(v).__name__}")
            self.value[n] = None      # x.size(), x.dim(): metadata
            return
        if n in chains and chains[n] is not n:
            self.value[n] = _PENDING
            return
        if n in chains:
            return self._layout(n, chains)
        if n.op == "call_module":
            return self._module(n)
        return self._function(n, tensors, inputs)

    def _in_place(self, n: fx.Node):
        """out.mul_(gain) as a statement: fx's later calls read out's node, but
        the tensor they read is the one the in-place call wrote."""
        target = n.target if n.op == "call_method" else ""
        if target.endswith("_") and not target.endswith("__") and not n.users and \
                n.args and isinstance(self.value.get(n.args[0]), FlowNode) and \
                isinstance(self.value.get(n), FlowNode):
            self.value[n.args[0]] = self.value[n]

    # -- helpers ----------------------------------------------------------
    def _has_mapper(self, n: fx.Node) -> bool:
        if n.op == "call_module":
            return _mapper_for(self.modules[n.target]) is not None
        if n.op == "call_method":
            return n.target in METHOD_MAPPERS or n.target in (
                "add", "add_", "mul", "mul_", "sub", "sub_", "chunk", "split", "tensor_split", "expand",
                "size", "dim")
        if n.op == "call_function":
            return n.target in FUNCTION_MAPPERS or n.target in ADD + MUL + SUB + CAT + SPLIT or \
                not _tensor_valued(self.found.values.get(n))
        return True

    def _read_indices(self, n: fx.Node, held: list) -> bool:
        """A node that reads a max pool's (values, indices) pair or its indices:
        an item of the pair (True: done), or a max unpool (False: mapped as
        one); anything else cannot follow the indices."""
        pool = held[0].pool
        if isinstance(held[0], _Pooled) and len(n.all_input_nodes) == 1 and \
                n.op == "call_function" and n.target is operator.getitem and \
                n.args[1] in (-2, -1, 0, 1):
            self.value[n] = pool if n.args[1] % 2 == 0 else _Indices(pool)
            return True
        if all(isinstance(h, _Indices) for h in held):
            if n.op == "call_module":
                mapper = _mapper_for(self.modules[n.target])
            else:
                mapper = FUNCTION_MAPPERS.get(n.target) if n.op == "call_function" else None
            if mapper in UNPOOLS:
                return False
        raise NoMapping(f"reads the indices of the max pool at {_where(pool)}; only a max "
                         "unpool (MaxUnpool2d, max_unpool2d) may use them")

    def _attr(self, target):
        obj = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def _add(self, node: FlowNode, fx_node) -> FlowNode:
        node.index = len(self.nodes)
        self.nodes.append(node)
        self.value[fx_node] = node
        return node

    def _unsupported(self, n: fx.Node, reason: str):
        module = self.modules.get(n.target) if n.op == "call_module" else None
        what = _describe_target(n, module)
        path = n.target if n.op == "call_module" else n.meta.get("scope", "")
        derived = self._derived(n)
        if derived is not None:     # no row: the row that reads it holds it (an opaque
            self.value[n] = derived     # row, or a kind's that computes it: a rotary table)
            return
        if self.allow_opaque:
            try:
                return self._opaque(n, what, path)
            except NoMapping as e:
                reason = str(e)
                scope = n.meta.get("scope", "")
                if n.op == "call_module":       # the module that calls this one
                    scope = scope.rpartition(".")[0]
                if scope and scope not in self.opaque:
                    self.widen.add(scope)
                    # this pass only finds the scopes to keep whole (the next one
                    # imports them): what it computed flows on, so that those after
                    # it are found in this pass too
                    self.value[n] = self._stand_in(n)
                    return
        key = (f"{what} ({reason})" if reason else what, path)
        self.unsupported[key] = self.unsupported.get(key, 0) + 1
        self.value[n] = _POISON

    def _stand_in(self, n: fx.Node):
        """A value for a call inside a module kept whole on the next pass: its
        probed shape, in no row (a pass that widens is never emitted)."""
        y = self.found.values.get(n)
        if isinstance(y, (tuple, list)) and y and _tensor(y[0]):
            y = y[0]
        if not _tensor(y):
            return None
        x = next((v for v in map(self.value.get, n.all_input_nodes)
                  if isinstance(v, FlowNode)), None)
        y = _per_sample(y)
        return FlowNode(-1, "row", [x.index] if x is not None else [], y, y)

    def _widened(self, n: fx.Node) -> bool:
        """Whether the call is inside a module this pass keeps whole on the next."""
        scope = n.target if n.op == "call_module" else n.meta.get("scope", "")
        return any(scope == w or scope.startswith(w + ".") for w in self.widen)

    def _input_of(self, n: fx.Node) -> FlowNode:
        for a in n.all_input_nodes:
            got = self.value.get(a)
            if isinstance(got, FlowNode):
                return got
        raise NoMapping("computes on parameters or buffers, not on the input")

    def _call(self, n: fx.Node, x: FlowNode, module=None) -> Call:
        args, kwargs = self.found.args[n]
        y = self.found.values.get(n)
        held = {}
        for a in n.all_input_nodes:     # tensors computed from the model's state alone
            got = self.value.get(a)
            if isinstance(got, (Param, _Derived)):
                held[a] = (got.target,) if isinstance(got, Param) else got.reads
        return Call(n, module, args, kwargs, x.shape, x.torch_shape,
                    _per_sample(y) if _tensor(y) else None, held=held)

    def _row(self, n: fx.Node, x: FlowNode, kinds: list, *, path=None, stateful=False,
             name="", flat=False, what="", out=None) -> FlowNode | None:
        """A row (or several, e.g. a mean: pool then flatten) from x; checks that
        the kinds give PyTorch's shape (``out``'s where the call gives several)."""
        y_torch = self.found.values.get(n) if out is None else out
        y_torch = _per_sample(y_torch) if _tensor(y_torch) else None
        if not kinds:                   # an identity (nn.Identity, clone)
            self.value[n] = x
            return x
        shape = x.shape
        for kind, args in kinds:
            shape = _kind_shape(kind, args, shape)
        if y_torch is not None and not _spec_matches(shape, y_torch):
            raise NoMapping(f"mapped to {'+'.join(k for k, _ in kinds)}, but PyTorch gives "
                             f"{list(y_torch)} where the kind gives {list(shape)}")
        scope = n.target if n.op == "call_module" else n.meta.get("scope", "")
        node = FlowNode(0, "row", [x.index], tuple(shape), y_torch or tuple(shape), list(kinds),
                    _path(scope) if path is None else path, stateful, name, flat,
                    what=what, scoped=n.op != "call_module" and not flat)
        return self._add(node, n)

    # -- leaf modules -----------------------------------------------------
    def _module(self, n: fx.Node):
        module = self.modules[n.target]
        mapper = _mapper_for(module)
        if mapper is None:
            raise NoMapping("")
        x = self._input_of(n)
        found = mapper(self._call(n, x, module), module)
        if found is LAYOUT:
            return self._layout(n, {n: n})
        if isinstance(found, list) and len(found) > 1 and \
                getattr(lookup(found[0][0]), "prepares_input", False):
            x = self._pad_first(n, x, found.pop(0))
        stateful = bool(list(module.parameters())) or bool(list(module.buffers()))
        if stateful:
            self.stateful_calls[n.target] = self.stateful_calls.get(n.target, 0) + 1
            self.used_state.add(n.target)
        path = _path(n.target)
        how = dict(path=path, stateful=stateful, name=path[-1] if path else "",
                   what=_describe_target(n, module))
        if isinstance(found, PoolIndices):
            return self._pool_indices(n, x, found, how)
        if isinstance(found, Unpool):
            return self._unpool(n, x, found, how)
        self._row(n, x, found, **how)

    def _pad_first(self, n: fx.Node, x: FlowNode, pad) -> FlowNode:
        """A module that pads, then convolves or pools (timm's Conv2dSame,
        MaxPool2dSame): the pad a row of its own in the module's scope, so the
        module's name stays on the row that holds its weights."""
        shape = _kind_shape(*pad, x.shape)
        node = FlowNode(len(self.nodes), "row", [x.index], shape, shape, [pad],
                        _path(n.target), name="pad", what="a padding", scoped=True)
        self.nodes.append(node)
        return node

    # -- max pool indices -----------------------------------------------------
    def _pool_indices(self, n: fx.Node, x: FlowNode, found: PoolIndices, how: dict):
        """A max pool that gives its indices: its row is the values' (they flow on)."""
        v = self.found.values.get(n)
        pair = not _tensor(v)     # (values, indices); a tensor on a tape
        node = self._row(n, x, found.rows, out=v[0] if pair else v, **how)
        if found.tape is not None:
            self.taped[found.tape] = node
        if pair:
            self.value[n] = _Pooled(node)

    def _unpool(self, n: fx.Node, x: FlowNode, found: Unpool, how: dict):
        """A max unpool: `of` is the max pool whose indices it reads, which it
        must undo (its input the pool's output, its output the pool's input)."""
        if isinstance(found.indices, _TensorArg):
            held = self.value.get(found.indices.node)
            pool = held.pool if isinstance(held, _Indices) else None
        else:
            pool = self.taped.get(found.indices)
        if pool is None:
            raise NoMapping("max unpool of indices that no max pool of the model gave")
        pool_in = self.nodes[pool.inputs[0]].shape

        def undo(what, hw):
            """The unpool must give the pool's input size, as archcalc's does."""
            if tuple(hw) != tuple(pool_in[1:]):
                raise NoMapping(f"max unpool to {what}{'x'.join(map(str, hw))}, but the max "
                                 f"pool at {_where(pool)} pooled "
                                 f"{'x'.join(map(str, pool_in[1:]))}; archcalc's max_unpool "
                                 "gives its pool's input size")
        if found.output_size is not None:
            undo("output_size ", [int(d) for d in list(found.output_size)[-2:]])
        if tuple(x.shape) != tuple(pool.shape):
            raise NoMapping(f"max unpool of a {list(x.shape)} input with the indices of the "
                             f"{list(pool.shape)} output of the max pool at {_where(pool)}")
        seen, todo = set(), [x.index]
        while todo and pool.index not in seen:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(self.nodes[i].inputs)
        if pool.index not in seen:
            raise NoMapping(f"max unpool on a path that does not go through the max pool at "
                             f"{_where(pool)}, whose indices it reads")
        (kind, args), = found.rows
        args["of"] = _where(pool)      # a stand-in: the emitter writes the pool's row path
        undo("", _kind_shape(kind, args, x.shape)[1:])
        node = self._row(n, x, found.rows, **how)
        node.of = pool.index

    # -- functions and methods ----------------------------------------------
    def _function(self, n: fx.Node, tensors: list, inputs: list):
        target = n.target
        method = n.op == "call_method"
        args, kwargs = self.found.args[n]
        fname = target if method else getattr(target, "__name__", str(target))
        if (not method and target in ADD) or (method and target in ("add", "add_")):
            return self._binary(n, "add", inputs)
        if (not method and target in MUL) or (method and target in ("mul", "mul_")):
            return self._binary(n, "mul", inputs)
        if (not method and target in SUB) or (method and target in ("sub", "sub_")):
            return self._binary(n, "sub", inputs)
        if not method and target in CAT:
            return self._cat(n, args, kwargs)
        if (not method and target in SPLIT) or (method and target in ("chunk", "split",
                                                                      "tensor_split")):
            return self._split(n)
        if method and target == "expand" and isinstance(inputs[0], Param):
            self.value[n] = Expanded(inputs[0])
            return
        if not method and target is operator.getitem:
            source = self.value.get(n.args[0])
            if isinstance(source, FlowNode) and source.op == "split":
                index = n.args[1]
                y = _per_sample(self.found.values[n])
                node = FlowNode(0, "slice", [source.index], y, y,   # spx[-1]: the last
                                slot=int(index) % len(source.sizes), path=source.path)
                return self._add(node, n)
            if isinstance(source, FlowNode) and isinstance(self.found.values.get(n.args[0]),
                                                       (tuple, list)):
                if n.args[1] == 0:      # (output, weights) of an attention: the output
                    self.value[n] = source
                    return
                raise NoMapping(f"item {n.args[1]} of a module's outputs")
        if not method and target is method_call:
            return self._method_leaf(n, tensors[0])
        if any(isinstance(i, (Param, Expanded)) for i in inputs):
            return self._state_call(n, tensors, inputs)
        x = tensors[0]
        if len({t.index for t in tensors}) > 1:
            raise NoMapping("combines several tensors")
        table = METHOD_MAPPERS if method else FUNCTION_MAPPERS
        mapper = table.get(target)
        if mapper is None:
            raise NoMapping("")
        found = mapper(self._call(n, x))
        if found is LAYOUT:
            return self._layout(n, {n: n})
        if isinstance(found, (PoolIndices, Unpool)):
            how = dict(name=_op_name(fname, found.rows), what=_describe_target(n))
            return (self._pool_indices if isinstance(found, PoolIndices) else self._unpool)(
                n, x, found, how)
        self._row(n, x, found, name=_op_name(fname, found), what=_describe_target(n))

    def _state_call(self, n: fx.Node, tensors: list, inputs: list):
        """F.batch_norm(x, self.running_mean, ..., self.weight, self.bias) in a
        module's own forward: that module's one stateful row, named by its path
        (the state_dict keys), where the call's mapper reads state."""
        table = METHOD_MAPPERS if n.op == "call_method" else FUNCTION_MAPPERS
        mapper = table.get(n.target)
        params = [i for i in inputs if isinstance(i, (Param, Expanded))]
        owners = {p.target.rpartition(".")[0] for p in params if isinstance(p, Param)}
        if not getattr(mapper, "reads_state", False) or len(owners) != 1 or "" in owners or \
                any(isinstance(p, Expanded) for p in params) or \
                len({t.index for t in tensors}) != 1:
            raise NoMapping("computes on the module's parameters outside a layer")
        owner = owners.pop()
        x = tensors[0]
        call = self._call(n, x)
        call.state = {a: self.value[a].tensor for a in n.all_input_nodes
                      if isinstance(self.value.get(a), Param)}
        found = mapper(call)
        self.stateful_calls[owner] = self.stateful_calls.get(owner, 0) + 1
        self.used_state.update([owner] + [p.target for p in params])
        path = _path(owner)
        self._row(n, x, found, path=path, stateful=True, name=path[-1],
                  what=_describe_target(n))

    def _method_leaf(self, n: fx.Node, x: FlowNode):
        """A module's method as one call (mappers.method_call): its rows hold the
        state of the child its kind names (Swin's block's ``attn``). Unmapped,
        the module is kept whole on the next pass (its state is its row's)."""
        try:
            found, owner = map_method_call(self._call(n, x))
        except NoMapping:
            if not self.allow_opaque:
                raise
            self.widen.add(n.args[0].target)
            self.value[n] = self._stand_in(n)
            return
        owner = f"{n.args[0].target}.{owner}"
        self.stateful_calls[owner] = self.stateful_calls.get(owner, 0) + 1
        self.used_state.add(owner)
        path = _path(owner)
        self._row(n, x, found, path=path, stateful=True, name=path[-1],
                  what=_describe_target(n))

    def _binary(self, n, op, inputs):
        a, b = (self.value.get(x) if isinstance(x, fx.Node) else x for x in n.args[:2])
        if isinstance(a, FlowNode) and isinstance(b, FlowNode):
            if a.shape != b.shape and not (op == "mul" and _gate(a.shape, b.shape)):
                raise NoMapping(f"{op} of {list(a.torch_shape)} and {list(b.torch_shape)}")
            if n.kwargs.get("alpha", 1) != 1 or (len(n.args) > 2 and n.args[2] != 1):
                raise NoMapping(f"{op} with alpha")
            if op == "sub" and a.index == b.index:
                raise NoMapping("a tensor minus itself")
            y = _per_sample(self.found.values[n])
            shape = a.shape if len(a.shape) == len(y) and math.prod(a.shape) == math.prod(y) \
                else b.shape
            node = FlowNode(0, op, [a.index, b.index], shape, y, path=_path(n.meta.get("scope")),
                        name=op)
            return self._add(node, n)
        derived = next((v for v in (a, b) if isinstance(v, _Derived)), None)
        if derived is not None and op == "add" and n.kwargs.get("alpha", 1) == 1:
            other = b if derived is a else a
            if isinstance(other, FlowNode) and len(other.shape) == 2:
                return self._position_encoding(n, other, derived)
        placed = next((v for v in (a, b) if isinstance(v, Expanded) and
                       v.param.target in self.placed_tokens), None)
        if placed is not None and op == "add" and n.kwargs.get("alpha", 1) == 1:
            # CaiT: cls_token + attn(norm(cat(cls_token, x))): the token is read back
            # from the cat that put it first (its row owns the parameter)
            other = b if placed is a else a
            if isinstance(other, FlowNode):
                tokens = self._first_tokens(n, *self.placed_tokens[placed.param.target])
                if tokens.shape == other.shape:
                    node = FlowNode(0, op, [tokens.index, other.index], other.shape,
                                    _per_sample(self.found.values[n]),
                                    path=_path(n.meta.get("scope")), name=op)
                    return self._add(node, n)
        param, x = (a, b) if isinstance(a, Param) else (b, a)
        if isinstance(param, Param) and isinstance(x, FlowNode):
            shape = tuple(param.tensor.shape)
            self.used_state.add(param.target)
            path = _path(param.target)
            if op == "add" and len(x.shape) in (2, 3) and shape == (1, *x.shape):
                return self._row(n, x, row("position_embedding"), path=path, stateful=True,
                                 name=path[-1], flat=True, what="a position embedding")
            if op == "add" and len(x.shape) == 2 and shape == (1, *x.torch_shape) and \
                    len(shape) == 4 and shape[1] * shape[2] == x.shape[0]:
                # VOLO's: 1 x H x W x D added to a channels-last map (its tokens, row-major)
                return self._row(n, x, row("position_embedding", stored=list(shape[1:])),
                                 path=path, stateful=True, name=path[-1], flat=True,
                                 what="a position embedding")
            if op == "mul" and _per_channel(shape, x):
                init = _constant(param.tensor, 1e-6)
                # timm's LayerScale2d keeps C values, viewed as 1 x C x 1 x 1
                vector = len(x.shape) == 3 and param.stored == (x.shape[0],)
                return self._row(n, x, row("layer_scale", init=init, **(
                    {"vector": True} if vector else {})), path=path,
                                 stateful=True, name=path[-1], flat=True,
                                 what="a layer scale")
            if op == "mul" and math.prod(shape) == 1:    # NFNet's skipinit gain
                return self._row(n, x, row("scalar_gain", init=_constant(param.tensor, 0.0)),
                                 path=path, stateful=True, name=path[-1], flat=True,
                                 what="a learned gain")
            raise NoMapping(f"{op} of the input and a parameter of shape {list(shape)}")
        number, x = (a, b) if _number(a) else (b, a)
        if op == "add" and _number(number) and number == 0 and isinstance(x, FlowNode) and \
                n.kwargs.get("alpha", 1) == 1:    # a sum started at 0 (x1 = 0; x1 += conv(x))
            self.value[n] = x
            return
        if op == "mul" and _number(number) and isinstance(x, FlowNode):   # NF-ResNet's x * beta
            inplace = n.target == "mul_" or n.target is operator.imul
            return self._row(n, x, row("multiply", by=float(number), inplace=inplace),
                             name="multiply", what=_describe_target(n))
        raise NoMapping(f"{op} of a tensor and a constant")

    def _cat(self, n, args, kwargs):
        parts = list(n.args[0]) if isinstance(n.args[0], (list, tuple)) else [n.args[0]]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        values = [self.value.get(p) for p in parts]
        y = _per_sample(self.found.values[n])
        if len(values) >= 2 and all(isinstance(v, Expanded) for v in values[:-1]) and \
                isinstance(values[-1], FlowNode) and len(values[-1].shape) == 2 and dim in (1, -2):
            return self._class_tokens(n, [v.param for v in values[:-1]], values[-1])
        if not all(isinstance(v, FlowNode) for v in values):
            raise NoMapping("cat of something other than tensors")
        rank = len(values[0].shape)
        if rank not in (2, 3) or any(len(v.shape) != rank for v in values) or \
                dim not in (1, -rank):
            raise NoMapping(f"cat along dim {dim} (archcalc concatenates channels of maps "
                            "or tokens)")
        if len(values) == 1:
            self.value[n] = values[0]
            return
        node = FlowNode(0, "cat", [v.index for v in values], y, y, path=_path(n.meta.get("scope")),
                    name="concat")
        return self._add(node, n)

    def _split(self, n):
        x = self._input_of(n)
        outs = self.found.values[n]
        if len(x.shape) != 3 or not all(_tensor(o) for o in outs):
            raise NoMapping("a split of something other than a map")
        shapes = [_per_sample(o) for o in outs]
        if any(s[1:] != x.shape[1:] for s in shapes) or sum(s[0] for s in shapes) != x.shape[0]:
            raise NoMapping("a split along another dimension than the channels")
        node = FlowNode(0, "split", [x.index], x.shape, x.torch_shape,
                    sizes=tuple(s[0] for s in shapes), path=_path(n.meta.get("scope")),
                    name="split")
        return self._add(node, n)

    # -- reshapes -----------------------------------------------------------
    def _layout_chains(self) -> dict:
        """Consecutive reshapes (view, permute, transpose, ...) as one chain:
        node -> the chain's last node (itself for the last)."""
        layout = {n for n in self.gm.graph.nodes if self._is_layout(n)}
        follows = {}
        for n in self.gm.graph.nodes:
            if n not in layout:
                continue
            consumers = [u for u in n.users if _tensor_valued(self.found.values.get(u))]
            if len(consumers) == 1 and consumers[0] in layout and \
                    consumers[0].all_input_nodes and consumers[0].all_input_nodes[0] is n:
                follows[n] = consumers[0]
        chains = {}
        for n in layout:
            tail = n
            while tail in follows:
                tail = follows[tail]
            chains[n] = tail
        return chains

    def _is_layout(self, n: fx.Node) -> bool:
        if not _tensor(self.found.values.get(n)) or not n.all_input_nodes:
            return False
        first = n.all_input_nodes[0]
        if not _tensor(self.found.values.get(first)):
            return False
        if n.op == "call_function":
            return n.target in LAYOUT_FUNCTIONS
        if n.op == "call_method":
            return n.target in LAYOUT_METHODS
        if n.op == "call_module":
            module = self.modules.get(n.target)
            return _mapper_for(module) is _layout_module if module is not None else False
        return False

    def _layout(self, tail: fx.Node, chains):
        chain = [n for n in self.gm.graph.nodes if chains.get(n) is tail]
        head = chain[0]
        x = self.value.get(head.all_input_nodes[0])
        if x is _POISON:
            for n in chain:
                self.value[n] = _POISON
            return
        if isinstance(x, Param) and _tensor(self.found.values.get(tail)):
            # self.gamma.reshape(1, -1, 1, 1): the parameter, seen in that shape
            for n in chain[:-1]:
                self.value[n] = None
            self.value[tail] = Param(x.target, x.tensor.reshape(self.found.values[tail]),
                                     x.stored or tuple(x.tensor.shape))
            return
        if not isinstance(x, FlowNode):
            raise NoMapping("computes on the module's parameters or buffers, not on its input")
        kinds = _classify_layout(chain, x, self.found, self.modules)
        if tail.op == "call_module" and len(chain) == 1:   # nn.Flatten: named as the module
            path = _path(tail.target)
            self._row(tail, x, kinds, path=path, name=path[-1] if path else "",
                      what="a reshape")
        else:
            self._row(tail, x, kinds, path=_path(tail.meta.get("scope", "")),
                      name=kinds[0][0] if kinds else "", what="a reshape")
        for n in chain[:-1]:
            self.value[n] = None

    # -- opaque rows ----------------------------------------------------------
    def _opaque(self, n: fx.Node, what: str, path: str):
        """One row for a call without a kind: its output shape as probed, the
        parameters it holds or reads, its MACs measured (FlopCounterMode)."""
        y = self._one_output(n)
        if not y or y[0] != PROBE_BATCH:      # x.flatten(0, 1): samples mixed
            raise NoMapping("its output does not keep the batch in dimension 0")
        flows = {a: self._flowing(a) for a in n.all_input_nodes}
        flows = {a: v for a, v in flows.items() if isinstance(v, FlowNode)}
        if not flows:
            raise NoMapping("computes on parameters or buffers, not on the input")
        if len({v.index for v in flows.values()}) > 1:
            raise NoMapping("it combines several tensors")
        x = next(iter(flows.values()))
        y = _per_sample(y)
        batched = set(flows)
        measured = measure(self.gm, n, self.found, batched)
        module = self.modules.get(n.target) if n.op == "call_module" else None
        # the module's tensors a function reads are its own, and so are those a
        # tensor computed from parameters alone (a _Derived) read, with its work
        params, buffers, reads, work = self._state_read(n)
        if module is not None:
            params += sum(p.numel() for p in module.parameters())
            buffers += sum(b.numel() for b in module.buffers())
        stateful = module is not None and bool(params or buffers)
        spath = _path(path)
        if n.op == "call_module":
            row_name = spath[-1] if spath else n.name
        else:     # a function: named after it, in the module that calls it
            row_name = _clean_name(getattr(n.target, "__name__", str(n.target))).strip("_")
        if stateful:
            self.used_state.add(n.target)
            self.stateful_calls[n.target] = self.stateful_calls.get(n.target, 0) + 1
        if len(x.shape) == 2 and len(y) in (2, 3):
            shape = (math.prod(y[:-1]), y[-1])      # tokens stay tokens
        else:     # any rank (attention's heads x N x d); a scalar per sample as [1]
            shape = tuple(y) or (1,)
        node = FlowNode(0, "row", [x.index], shape, y,
                    [("opaque", {"op": what, "input": list(x.shape), "output": list(shape),
                                 "params": params, "buffers": buffers,
                                 "macs": measured.macs + work})],
                    spath, stateful, row_name or "opaque", what=what,
                    scoped=n.op != "call_module")
        self._add(node, n)
        self.opaque_rows.append(node)
        if reads:
            self.reads[node.index] = reads
        if not measured.scales or work:
            self.unscaled.append(node)

    def _flowing(self, a: fx.Node):
        """The value of ``a``; for a reshape inside a chain (its value pending on
        the chain's last node, which an opaque row stands for), the value the
        chain started from."""
        got = self.value.get(a)
        while got is _PENDING and a.all_input_nodes:
            a = a.all_input_nodes[0]
            got = self.value.get(a)
        return got

    def _one_output(self, n: fx.Node):
        """The probed output of an opaque call: its tensor, or the first item of
        a tuple of which nothing reads another item (x.max(1): values, indices)."""
        y = self.found.values.get(n)
        if _tensor(y):
            return y
        if isinstance(y, (tuple, list)) and y and _tensor(y[0]) and n.users and all(
                u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0
                for u in n.users):
            return y[0]
        raise NoMapping("its output is not one tensor")

    def _state_read(self, n: fx.Node) -> tuple:
        """(parameters, buffers, their names, MACs) of the module's tensors a call
        reads: parameters, and tensors computed from them (their work measured),
        each counted once, by the first row that reads it."""
        params = buffers = work = 0
        names = []
        for a in n.all_input_nodes:
            got = self.value.get(a)
            got = got.param if isinstance(got, Expanded) else got
            if isinstance(got, Param):
                targets, nodes = (got.target,), ()
            elif isinstance(got, _Derived):
                targets, nodes = got.reads, got.nodes
            else:
                continue
            for target in targets:
                if target in self.charged:
                    continue
                self.charged.add(target)
                names.append(target)
                self.used_state.add(target)
                tensor = self._attr(target)
                if isinstance(tensor, torch.nn.Parameter):
                    params += tensor.numel()
                else:
                    buffers += tensor.numel()
            for d in nodes:
                if d not in self.charged:
                    self.charged.add(d)
                    work += self._derived_work(d)
        return params, buffers, names, work


def _returned(out) -> list:
    """What the forward returns, as a list: a dict's values, a tuple's items."""
    if isinstance(out, dict) and out:
        return list(out.values())
    if isinstance(out, (tuple, list)) and out:
        return list(out)
    return [out]


def _per_channel(shape: tuple, x: FlowNode) -> bool:
    """A parameter of this shape scales each channel of x: (C, 1, 1) or
    (1, C, 1, 1) on a map, (D,) or (1, 1, D) on tokens (a layer scale)."""
    tail = (x.shape[0], 1, 1) if len(x.shape) == 3 else \
        (x.shape[1],) if len(x.shape) == 2 and len(x.torch_shape) >= 2 else None
    return tail is not None and shape[-len(tail):] == tail and \
        all(d == 1 for d in shape[:-len(tail)])


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _gate(a, b) -> bool:
    """x * g with g of C x 1 x 1 (squeeze-and-excitation style)."""
    return len(a) == 3 and len(b) == 3 and a[0] == b[0] and (a[1:] == (1, 1) or b[1:] == (1, 1))


def _op_name(fname: str, kinds) -> str:
    base = kinds[0][0] if kinds else re.sub(r"\W+", "_", str(fname)).strip("_") or "op"
    return base


def _owns_state(module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())
