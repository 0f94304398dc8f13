"""The probe: one run of the traced graph on concrete (meta) tensors, recording
on every node, in ``node.meta["archcalc"]`` (as torch.fx's ShapeProp keeps
``tensor_meta``), its output's shape and dtype and its arguments (tensors
marked by their node)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .failures import _quiet_warnings


META_KEY = "archcalc"     # node.meta[META_KEY] = (output described, (args, kwargs) marked)


class _OnNodes:
    """One item of what the probe put on each node's meta, read as a mapping
    by node (``.get(node)``, ``[node]``)."""

    def __init__(self, item: int):
        self.item = item

    def get(self, node, default=None):
        found = node.meta.get(META_KEY) if isinstance(node, fx.Node) else None
        return default if found is None else found[self.item]

    def __getitem__(self, node):
        return node.meta[META_KEY][self.item]

    def __contains__(self, node) -> bool:
        return isinstance(node, fx.Node) and META_KEY in node.meta


@dataclass
class Probed:
    """What one run on concrete (meta) tensors measured at each node, read
    from the nodes' meta."""
    meta: bool = True                              # run on the meta device (else on CPU)
    values: _OnNodes = field(default_factory=lambda: _OnNodes(0))  # shape, or the value
    args: _OnNodes = field(default_factory=lambda: _OnNodes(1))    # (args, kwargs), marked


class _TensorArg:
    """Stands for a tensor argument in the recorded arguments of a node."""

    def __init__(self, node):
        self.node = node

    def __repr__(self):
        return f"<tensor {self.node.name}>"


def _meta_like(t):
    return torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t


class _Probe(fx.Interpreter):
    def __init__(self, gm, meta: bool):
        super().__init__(gm, garbage_collect_values=True)
        self.meta = meta
        self.found = Probed(meta=meta)

    def run_node(self, n):
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        marked = (_mark(n.args, args), _mark(n.kwargs, kwargs))
        out = super().run_node(n)
        n.meta[META_KEY] = (_describe(out), marked)
        return out

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        if not self.meta:
            return module(*args, **kwargs)
        state = {k: _meta_like(v) for k, v in
                 list(module.named_parameters()) + list(module.named_buffers())}
        return torch.func.functional_call(module, state, tuple(args), kwargs)

    def get_attr(self, target, args, kwargs):
        value = super().get_attr(target, args, kwargs)
        return _meta_like(value) if self.meta else value


def _mark(template, concrete):
    """The concrete arguments, each tensor replaced by a _TensorArg naming its node."""
    if isinstance(template, fx.Node):
        return _TensorArg(template) if isinstance(concrete, torch.Tensor) else concrete
    if isinstance(template, (list, tuple)):
        return type(template)(_mark(t, c) for t, c in zip(template, concrete))
    if isinstance(template, dict):
        return {k: _mark(template[k], concrete[k]) for k in template}
    return concrete


class ProbedShape(tuple):
    """A tensor's shape, as probed (batch included): its own type, so a probed
    tensor is told from a tuple value (layers.base.Shape is a plain tuple);
    ``dtype`` is the tensor's (an opaque row's measurement makes one alike)."""
    dtype = torch.float32


def _describe(out):
    if isinstance(out, torch.Tensor):
        shape = ProbedShape(out.shape)
        shape.dtype = out.dtype
        return shape
    if isinstance(out, (list, tuple)) and not isinstance(out, torch.Size):
        return type(out)(_describe(o) for o in out) if type(out) in (list, tuple) \
            else tuple(_describe(o) for o in out)
    return out


PROBE_BATCH = 2


def probe(gm: fx.GraphModule, input_shape, meta: bool = True) -> Probed:
    device = "meta" if meta else "cpu"
    x = torch.zeros((PROBE_BATCH, *input_shape), device=device)
    runner = _Probe(gm, meta)
    with torch.no_grad(), _quiet_warnings():
        runner.run(x)
    return runner.found
