"""The import's second tracer: torch.export, for what torch.fx cannot trace.

torch.fx traces symbolically: a forward that branches or loops on a shape
(``if x.shape[-1] > 8``, ``range(x.size(1) // 4)``) or hands a size to plain
Python (``int(...)``, ``math.sqrt(...)``, ``len(x)``) fails there. torch.export
(non-strict) runs the forward itself on fake tensors of the probe's shape,
so such code is specialized to that input; what depends on tensor *values*
(``if x.sum() > 0``) it cannot trace either.

Its graph holds aten operations, each with the stack of modules whose
forward made it (``nn_module_stack``, one entry per call: ``relu@1`` is the
second call of ``relu``). It is rewritten into the graph torch.fx would have
given, so the rest of the import is unchanged:

- the operations made inside a call of a mapped module (a leaf, the same test
  as the fx tracer's) become one ``call_module`` node, called with the
  arguments recorded by a forward hook during the export (tensors matched to
  the call's inputs in the graph), its outputs taken back as fx would
  (``getitem`` for a tuple);
- the operations outside leaves become the torch functions and Tensor
  methods the importer maps (``aten.add.Tensor`` -> ``torch.add``,
  ``aten.view`` -> ``Tensor.view``, ...); reshapes without such a twin
  (``select``, ``slice``, ``unflatten``) stay aten calls, evaluated as
  reshapes; anything else stays an aten call and is reported as unsupported;
- parameters, buffers and constants are ``get_attr`` nodes named by their
  module paths, so rows are named as with fx.

A call that returns its input (``nn.Identity``) would leave no operation in
the graph; the hook makes an alias inside the call to stand for it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import operator

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F
from torch.utils import _pytree as pytree

from .failures import _first_line, _quiet_warnings

aten = torch.ops.aten

# aten operation -> (fx op, target), arguments unchanged
_SAME_ARGS = {
    aten.add.Tensor: ("call_function", torch.add),
    aten.add_.Tensor: ("call_function", torch.add),
    aten.mul.Tensor: ("call_function", torch.mul),
    aten.mul_.Tensor: ("call_function", torch.mul),
    aten.cat.default: ("call_function", torch.cat),
    aten.concat.default: ("call_function", torch.cat),
    aten.split.Tensor: ("call_function", torch.split),
    aten.split_with_sizes.default: ("call_function", torch.split),
    aten.chunk.default: ("call_function", torch.chunk),
    aten.relu.default: ("call_function", torch.relu),
    aten.relu_.default: ("call_function", torch.relu_),   # in place: the import says so
    aten.relu6.default: ("call_function", F.relu6),
    aten.sigmoid.default: ("call_function", torch.sigmoid),
    aten.sigmoid_.default: ("call_function", torch.sigmoid),
    aten.tanh.default: ("call_function", torch.tanh),
    aten.tanh_.default: ("call_function", torch.tanh),
    aten.silu.default: ("call_function", F.silu),
    aten.silu_.default: ("call_function", aten.silu_.default),
    aten.hardswish.default: ("call_function", F.hardswish),
    aten.hardswish_.default: ("call_function", aten.hardswish_.default),
    aten.hardsigmoid.default: ("call_function", F.hardsigmoid),
    aten.hardsigmoid_.default: ("call_function", aten.hardsigmoid_.default),
    aten.mish.default: ("call_function", F.mish),
    aten.hardtanh.default: ("call_function", F.hardtanh),
    aten.hardtanh_.default: ("call_function", F.hardtanh),
    aten.gelu.default: ("call_function", F.gelu),
    aten.leaky_relu.default: ("call_function", F.leaky_relu),
    aten.leaky_relu_.default: ("call_function", F.leaky_relu),
    aten.softmax.int: ("call_function", torch.softmax),
    aten.dropout.default: ("call_function", torch.dropout),
    aten.adaptive_avg_pool2d.default: ("call_function", F.adaptive_avg_pool2d),
    aten.max_pool2d.default: ("call_function", torch.max_pool2d),
    aten.avg_pool2d.default: ("call_function", torch._C._nn.avg_pool2d),
    aten.mean.dim: ("call_function", torch.mean),
    aten.clone.default: ("call_function", torch.clone),
    aten.alias.default: ("call_function", torch.clone),
    aten.flatten.using_ints: ("call_function", torch.flatten),
    aten.channel_shuffle.default: ("call_function", torch.channel_shuffle),
    aten.native_channel_shuffle.default: ("call_function", torch.channel_shuffle),
    aten.view.default: ("call_method", "view"),
    aten.reshape.default: ("call_method", "reshape"),
    aten._unsafe_view.default: ("call_method", "reshape"),
    aten.permute.default: ("call_method", "permute"),
    aten.transpose.int: ("call_method", "transpose"),
    aten.squeeze.default: ("call_method", "squeeze"),
    aten.squeeze.dim: ("call_method", "squeeze"),
    aten.squeeze.dims: ("call_method", "squeeze"),
    aten.unsqueeze.default: ("call_method", "unsqueeze"),
    aten.contiguous.default: ("call_method", "contiguous"),
    aten.expand.default: ("call_method", "expand"),
    aten.detach.default: ("call_method", "detach"),
}

def _elu(args, kwargs):
    alpha, scale, input_scale = (list(args[1:]) + [1.0, 1.0, 1.0])[:3]
    alpha = kwargs.get("alpha", alpha)
    if kwargs.get("scale", scale) != 1 or kwargs.get("input_scale", input_scale) != 1:
        return None
    return F.elu, (args[0], alpha), {}


def _softmax_private(args, kwargs):
    x, dim, half_to_float = args
    return (torch.softmax, (x, dim), {}) if not half_to_float else None


def _upsample(mode):
    def convert(args, kwargs):
        names = ("input", "output_size", "align_corners", "scale_factors") if mode != "nearest" \
            else ("input", "output_size", "scale_factors")
        given = dict(zip(names, args), **kwargs)
        out = {"size": given.get("output_size"), "scale_factor": given.get("scale_factors"),
               "mode": mode}
        if mode != "nearest":
            out["align_corners"] = given.get("align_corners")
        return F.interpolate, (given["input"],), out
    return convert


_CONVERTED = {
    aten.elu.default: _elu,
    aten._softmax.default: _softmax_private,
    aten.upsample_nearest2d.vec: _upsample("nearest"),
    aten.upsample_bilinear2d.vec: _upsample("bilinear"),
    aten.upsample_bicubic2d.vec: _upsample("bicubic"),
}


class ExportFailure(Exception):
    pass


@contextlib.contextmanager
def _quiet_torch_logs():
    """torch.export logs its guards and graphs as warnings; the failure says it."""
    names = ["torch"] + [n for n in logging.Logger.manager.loggerDict if n.startswith("torch.")]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class Exported:
    """One torch.export of the model at the probe's input, with each module
    call's arguments and output (fake tensors) as its forward hooks saw them."""

    def __init__(self, model: nn.Module, input_shape: tuple, batch: int):
        self.model = model
        self.calls: dict = {}            # id(module) -> [(args, kwargs, output)]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if device.type not in ("cpu", "meta"):
            device = torch.device("cpu")
        x = torch.zeros((batch, *input_shape), device=device)
        handles = []
        for m in model.modules():
            handles.append(m.register_forward_hook(self._record, with_kwargs=True))
        try:
            # export prints the partial graph of a failure on stderr: its reason
            # is the one line the import gives
            with _quiet_warnings(), _quiet_torch_logs(), torch.no_grad(), \
                    contextlib.redirect_stderr(io.StringIO()):
                self.program = torch.export.export(model, (x,), strict=False)
        except Exception as e:  # noqa: BLE001 - export's reasons are varied; one line each
            raise ExportFailure(f"{type(e).__name__}: {_first_line(e)}") from None
        finally:
            for h in handles:
                h.remove()

    def _record(self, module, args, kwargs, output):
        # a call that returns its input (nn.Identity, torchvision's
        # StochasticDepth at inference) leaves no operation in the graph: an
        # alias made here, inside the call, stands for it, so it keeps its row
        if isinstance(output, torch.Tensor) and any(output is a for a in
                                                    pytree.tree_leaves((args, kwargs))):
            output = aten.alias.default(output)
        self.calls.setdefault(id(module), []).append((args, kwargs, output))
        return output


def _leaf_of(node, model, is_leaf) -> tuple | None:
    """(call key, module path) of the outermost leaf module whose call made node."""
    stack = node.meta.get("nn_module_stack") or {}
    for key, value in stack.items():
        path = value[0] if isinstance(value, tuple) else ""
        if not path:
            continue
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ExportFailure(f"torch.export names a module {path!r} the model does not "
                                "have") from None
        if is_leaf(module, path):
            return key, path
    return None


def _scope_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [v[0] for v in stack.values() if isinstance(v, tuple) and v[0]]
    return paths[-1] if paths else ""


def _call_index(key: str) -> int:
    _, at, n = key.rpartition("@")
    return int(n) if at and n.isdigit() else 0


def _shape(v):
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _signature(sig):
    """(placeholder name -> parameter, buffer or constant path; the user's
    input names; the user's output names) of an exported program."""
    from torch.export.graph_signature import InputKind, OutputKind
    attr_of, user_inputs = {}, []
    for spec in sig.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            user_inputs.append(spec.arg.name)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            attr_of[spec.arg.name] = spec.target
    user_outputs = [spec.arg.name for spec in sig.output_specs
                    if spec.kind == OutputKind.USER_OUTPUT]
    return attr_of, user_inputs, user_outputs


def _leaf_calls(src, model, is_leaf) -> dict:
    """node -> its leaf module call: contiguous runs of nodes made by one call."""
    group_of: dict = {}
    last = None
    for n in src.nodes:
        if n.op != "call_function":
            last = None
            continue
        leaf = _leaf_of(n, model, is_leaf)
        if leaf is None:
            last = None
            continue
        if last is None or last["key"] != leaf[0] or last["nodes"][-1].next is not n:
            last = {"key": leaf[0], "path": leaf[1], "nodes": []}
        last["nodes"].append(n)
        group_of[n] = last
    return group_of


def to_fx(exported: Exported, is_leaf) -> fx.GraphModule:
    """The exported graph as the call-level graph torch.fx would give."""
    model = exported.model
    program = exported.program
    src = program.graph
    sig = program.graph_signature
    attr_of, user_inputs, user_outputs = _signature(sig)
    group_of = _leaf_calls(src, model, is_leaf)

    root: dict = {}
    graph = fx.Graph()
    env: dict = {}          # source node -> new node (or a getitem of a call)
    attrs: dict = {}

    def attr(target):
        if target not in attrs:
            root[target] = _attribute(model, program, target)
            node = graph.get_attr(target)
            node.meta["scope"] = target.rpartition(".")[0]
            attrs[target] = node
        return attrs[target]

    def value(a):
        if isinstance(a, fx.Node):
            if a.name in attr_of:
                return attr(attr_of[a.name])
            if a not in env:
                raise ExportFailure(f"torch.export's {a.name} is used outside the module "
                                    "call that made it")
            return env[a]
        return a

    def mapped(v):
        return fx.node.map_aggregate(v, value)

    emitted = set()
    for n in src.nodes:
        if n.op == "placeholder":
            if n.name in user_inputs:
                env[n] = graph.placeholder(n.name)
                env[n].meta["scope"] = ""
            continue
        if n.op == "output":
            outs = [o for o in pytree.tree_leaves(n.args[0]) if isinstance(o, fx.Node)
                    and o.name in user_outputs]
            results = [value(o) for o in outs]
            graph.output(results[0] if len(results) == 1 else tuple(results))
            continue
        if n.op != "call_function":
            raise ExportFailure(f"torch.export gave a {n.op} node ({n.name})")
        group = group_of.get(n)
        if group is not None:
            if id(group) not in emitted:
                emitted.add(id(group))
                _emit_call(group, graph, root, env, value, model, exported,
                           lambda a, path: a.name in attr_of and
                           attr_of[a.name].startswith(path + "."))
            continue
        op, target, args, kwargs = _translate(n)
        new = graph.create_node(op, target, mapped(args), mapped(kwargs))
        new.meta["scope"] = _scope_of(n)
        env[n] = new
    gm = fx.GraphModule(root, graph, type(model).__name__)
    gm.meta["model"] = model    # its modules and parameters as built
    return gm


def _attribute(model, program, target):
    try:
        return model.get_parameter(target)
    except AttributeError:
        pass
    try:
        return model.get_buffer(target)
    except AttributeError:
        pass
    if target in program.constants:
        return program.constants[target]
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _translate(n: fx.Node):
    """(op, target, args, kwargs) of the torch function or method an aten call is."""
    if n.target in _SAME_ARGS:
        op, target = _SAME_ARGS[n.target]
        return op, target, n.args, dict(n.kwargs)
    if n.target in _CONVERTED:
        got = _CONVERTED[n.target](n.args, dict(n.kwargs))
        if got is not None:
            target, args, kwargs = got
            return "call_function", target, args, kwargs
    return "call_function", n.target, n.args, dict(n.kwargs)


def _emit_call(group, graph, root, env, value, model, exported, is_attr):
    """One call_module node for the call a group of aten nodes came from."""
    path = group["path"]
    module = model.get_submodule(path)
    calls = exported.calls.get(id(module), [])
    index = _call_index(group["key"])
    if index >= len(calls):
        raise ExportFailure(f"cannot match torch.export's call {group['key']} of {path} to a "
                            "call of the module")
    args, kwargs, output = calls[index]
    nodes = group["nodes"]
    inside = set(nodes)
    inputs = []
    for n in nodes:
        for a in n.all_input_nodes:
            # the module's own parameters and buffers are no inputs; another
            # module's (a table a layer computes from) are
            if a not in inside and a not in inputs and not is_attr(a, path):
                inputs.append(a)
    tensors = []
    for t in pytree.tree_leaves((args, kwargs)):
        if isinstance(t, torch.Tensor) and not any(t is u for u in tensors):
            tensors.append(t)
    match = _match(tensors, inputs, f"the inputs of {path}", complete=True)
    root[path] = module

    def as_node(v):
        if isinstance(v, torch.Tensor):
            for t, a in zip(tensors, match):
                if v is t:
                    return value(a)
        return v

    call_args = pytree.tree_map(as_node, args)
    call_kwargs = pytree.tree_map(as_node, kwargs)
    node = graph.call_module(path, tuple(call_args), dict(call_kwargs))
    node.meta["scope"] = path

    used = [n for n in nodes if any(u not in inside for u in n.users)]
    if isinstance(output, torch.Tensor):
        if not used:      # nothing uses it
            return
        if len(used) != 1 or _shape(used[0].meta.get("val")) != _shape(output):
            raise ExportFailure(f"cannot tell the output of {path} in torch.export's graph")
        env[used[0]] = node
        return
    if not isinstance(output, (tuple, list)) or not all(
            o is None or isinstance(o, torch.Tensor) for o in output):
        raise ExportFailure(f"{path} returns a {type(output).__name__}: the import takes "
                            "modules that return tensors")
    items = [(i, o) for i, o in enumerate(output) if isinstance(o, torch.Tensor)]
    chosen = _match([o for _, o in items], used, f"the outputs of {path}", complete=False)
    for (i, _), src in zip(items, chosen):
        if src is not None:
            item = graph.call_function(operator.getitem, (node, i))
            item.meta["scope"] = _scope_of(src)
            env[src] = item


def _match(tensors, nodes, what, complete):
    """The graph node of each tensor, matched by shape in order (a module's
    arguments in the order the graph first uses them); every node must be
    matched, and with ``complete`` every tensor too (an output no one uses
    has None)."""
    out, taken = [], set()
    for t in tensors:
        fits = [i for i, n in enumerate(nodes)
                if i not in taken and _shape(n.meta.get("val")) == _shape(t)]
        if fits:
            taken.add(fits[0])
            out.append(nodes[fits[0]])
        elif complete:
            raise ExportFailure(f"cannot tell {what} in torch.export's graph")
        else:
            out.append(None)
    if len(taken) != len(nodes):
        raise ExportFailure(f"cannot tell {what} in torch.export's graph")
    return out
