"""Tracing: torch.fx with the mapped modules as leaves, each node tagged with the
module whose forward made it. Where fx cannot trace a module's forward (a loop
on a shape, len() of a size), that module is kept whole, a leaf (a kind maps
it, or it becomes one opaque row, measured), with the other modules of its
class, and fx traces the rest; only where the model's own forward cannot be
traced, torch.export's graph is rewritten to fx's form (export_trace)."""
from __future__ import annotations

import inspect

import torch
import torch.fx as fx
from torch import nn

from ...errors import SpecError
from .failures import TraceFailure, _first_line, _quiet_warnings
from .mappers import FUNCTION_MAPPERS, METHOD_LEAVES, _mapper_for, method_call
from .probing import PROBE_BATCH


# --------------------------------------------------------------------------
# tracing: torch.fx with the mapped modules as leaves, each node tagged with
# the module whose forward made it


class _Tracer(fx.Tracer):
    def __init__(self, opaque=(), classes=()):
        super().__init__(autowrap_functions=_leaf_functions())
        self.opaque = set(opaque)     # module paths kept whole (as opaque rows)
        self.classes = set(classes)   # module classes kept whole: fx cannot trace them
        self._paths = [""]
        self.failed_in: str | None = None   # the innermost module whose forward failed

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.opaque or type(m) in self.classes or _mapper_for(m) is not None:
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        # torch.nn's own modules without a mapping stay leaves: reported by type
        return type(m).__module__.startswith(("torch.nn", "torch.ao.nn"))

    def call_module(self, m, forward, args, kwargs):
        self._paths.append(self.path_of_module(m))
        leaf = METHOD_LEAVES.get(type(m))
        if leaf is not None and self._paths[-1] and not self.is_leaf_module(m, self._paths[-1]):
            setattr(m, leaf[0], self._method_leaf(self._paths[-1], leaf[0]))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:     # the innermost: it raised first
                self.failed_in = self._paths[-1]
            raise
        finally:
            self._paths.pop()
            if leaf is not None:
                vars(m).pop(leaf[0], None)

    def _method_leaf(self, path, method):
        """A stand-in for the module's method while fx traces its forward: one
        call_function node (mappers.method_call) of the module and the method."""
        def call(*args):
            module = self.create_proxy("get_attr", path, (), {})
            return self.create_proxy("call_function", method_call, (module, method, *args), {})
        return call

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["scope"] = target if kind == "call_module" else self._paths[-1]
        return node


def trace(model: nn.Module, opaque=(), classes=()) -> fx.GraphModule:
    """torch.fx's symbolic trace, the mapped modules as leaves (and the modules
    at the paths ``opaque`` and of the ``classes``). TraceFailure.module: the
    path of the innermost module whose forward fx could not trace ("" for the
    model's own)."""
    tracer = _Tracer(opaque, classes)
    try:
        with _quiet_warnings():
            graph = tracer.trace(model)
    except Exception as e:  # noqa: BLE001 - fx's reasons are varied; one line each
        failure = TraceFailure(f"{type(e).__name__}: {_first_line(e)}")
        failure.module = tracer.failed_in or ""
        raise failure from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta["model"] = model    # its modules as built (fx keeps only the leaves)
    return _stacks_averaged(gm)


def _leaf_functions() -> tuple:
    """The plain Python functions outside torch that a companion maps (timm's
    CrossViT scale_image, which branches on the input's size): each one call
    of the graph (fx's autowrap), as a mapped module is one leaf."""
    return tuple(f for f in FUNCTION_MAPPERS if inspect.isfunction(f) and
                 not (f.__module__ or "").startswith(("torch", "archcalc")))


def _stacks_averaged(gm: fx.GraphModule) -> fx.GraphModule:
    """torch.stack([a, b, ...]).mean(0) (CrossViT's heads' logits averaged)
    rewritten as (a + b + ...) * (1/n), which computes the same: add merges and
    a multiply row (a stack combines several tensors: no row reads it); and
    .sum(0) (the 18x2 ViTs' parallel branches) as the adds alone."""
    graph, changed = gm.graph, False
    for n in list(graph.nodes):
        parts = _stacked(n)
        mean = next(iter(n.users)) if parts and len(n.users) == 1 else None
        reduction = _reduction_of_first_dim(mean, n) if mean is not None else None
        if reduction is None:
            continue
        with graph.inserting_before(mean):
            total = parts[0]
            for part in parts[1:]:
                total = graph.call_function(torch.add, (total, part))
                total.meta["scope"] = mean.meta.get("scope", "")
            if reduction == "mean":
                total = graph.call_function(torch.mul, (total, 1.0 / len(parts)))
                total.meta["scope"] = mean.meta.get("scope", "")
        mean.replace_all_uses_with(total)
        graph.erase_node(mean)
        graph.erase_node(n)
        changed = True
    if changed:
        gm.recompile()
    return gm


def _stacked(n: fx.Node):
    """The tensors torch.stack(tensors, dim=0) stacks (two or more), else None."""
    if n.op != "call_function" or n.target not in (torch.stack, torch.ops.aten.stack.default):
        return None
    dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
    parts = n.args[0] if n.args else n.kwargs.get("tensors")
    if dim != 0 or not isinstance(parts, (list, tuple)) or len(parts) < 2 or \
            not all(isinstance(p, fx.Node) for p in parts):
        return None
    return list(parts)


def _reduction_of_first_dim(node: fx.Node, stack: fx.Node) -> str | None:
    """"mean" or "sum" where ``node`` is torch.mean(stack, 0) or torch.sum(stack,
    0) (or the methods, dim=0), no keepdim or dtype; else None."""
    reduction = node.target.__name__ if node.op == "call_function" and \
        node.target in (torch.mean, torch.sum) else \
        node.target if node.op == "call_method" and node.target in ("mean", "sum") else None
    if reduction is None:
        return None
    args, kwargs = list(node.args), dict(node.kwargs)
    names = ("input", "dim", "keepdim", "dtype")
    given = dict(zip(names, args), **kwargs)
    same = given.get("input") is stack and given.get("dim") in (0, (0,), [0]) and \
        not given.get("keepdim", False) and given.get("dtype") is None
    return reduction if same else None


class _Tracing:
    """The model's graph at each try of the import: torch.fx's symbolic trace,
    or, where fx cannot trace the forward, torch.export's graph rewritten to
    fx's form (archcalc.torch.importer.export_trace), exported once and regrouped for
    each set of modules kept whole."""

    def __init__(self, module: nn.Module, input_shape: tuple, label: str):
        self.module, self.input_shape, self.label = module, input_shape, label
        self.fx_error: str | None = None      # why fx could not trace it
        self.exported = None
        self.untraced: dict = {}              # module path -> why fx cannot trace it
        self._classes: set = set()            # their classes: leaves too

    def without_fx(self, why: str) -> None:
        """torch.export from now on, for the whole forward."""
        self.fx_error = why
        self._classes = set()

    @property
    def tracer(self) -> str:
        return "torch.fx" if self.fx_error is None else "torch.export"

    def graph(self, opaque=()) -> fx.GraphModule:
        from . import export_trace
        while self.fx_error is None:
            try:
                return trace(self.module, opaque, self._classes)
            except TraceFailure as e:
                leaf = self.module.get_submodule(e.module) if e.module else None
                if leaf is None or type(leaf) in self._classes:
                    self.fx_error = str(e)    # the model's own forward: torch.export
                else:                         # that module whole; fx traces the rest
                    self.untraced[e.module] = str(e)
                    self._classes.add(type(leaf))
        if self.exported is None:
            try:
                self.exported = export_trace.Exported(self.module, self.input_shape,
                                                      PROBE_BATCH)
            except export_trace.ExportFailure as e:
                raise SpecError(f"torch.fx cannot trace {self.label} ({self.fx_error}), nor "
                                f"can torch.export ({e})") from None
        while True:
            is_leaf = _Tracer(opaque, self._classes).is_leaf_module
            try:
                with _quiet_warnings():
                    return _stacks_averaged(export_trace.to_fx(self.exported, is_leaf))
            except export_trace.ExportFailure as e:
                if not self._classes:
                    raise SpecError(f"torch.fx cannot trace {self.label} ({self.fx_error}); "
                                    f"torch.export's graph of it cannot be read: {e}") from None
                # a module fx kept whole that cannot be a leaf of the export's graph (it
                # returns a tuple: NaFlexViT's embeds): export's calls inside it instead
                self._classes = set()
