"""An opaque row's MACs, measured: the one fx node it stands for run alone
under torch.utils.flop_counter.FlopCounterMode, on tensors made alike to the
probe's (shape and dtype; on the meta device where the probe ran there, so
nothing is computed or allocated), at batch 1 and at the probe's batch.

Per sample is the count at batch 1 (what `archcalc table` shows and what
FlopCounterMode gives for the whole model at batch 1); the count at the
probe's batch says whether it scales with the batch (an op on parameters
alone does not)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch.utils.flop_counter import FlopCounterMode

from .failures import _first_line, _quiet_warnings
from .mappers import NoMapping
from .probing import PROBE_BATCH, Probed, _meta_like, _TensorArg


@dataclass(frozen=True)
class Measured:
    macs: int          # per sample: FlopCounterMode's FLOPs at batch 1, / 2
    scales: bool       # the count at the probe's batch is PROBE_BATCH times batch 1's


def measure(gm: fx.GraphModule, n: fx.Node, found: Probed, batched) -> Measured:
    """The MACs of node ``n`` alone; ``batched``: the nodes whose tensors carry
    the batch (the model's input and what flows from it), made at each batch
    size; the others (parameters, constants) keep their probed shape."""
    device = "meta" if found.meta else "cpu"
    try:
        at_probe = _flops(gm, n, found, batched, PROBE_BATCH, device)
    except Exception as e:  # noqa: BLE001 - the user's code: one line
        raise NoMapping(f"its FLOPs cannot be measured: {type(e).__name__}: "
                        f"{_first_line(e)}") from None
    try:
        one = _flops(gm, n, found, batched, 1, device)
    except Exception:  # noqa: BLE001 - a forward made for the probe's batch only
        if at_probe % (2 * PROBE_BATCH):
            raise NoMapping(f"its FLOPs at batch {PROBE_BATCH} ({at_probe:,}) do not divide "
                            "into samples, and it does not run at batch 1") from None
        return Measured(at_probe // (2 * PROBE_BATCH), True)
    return Measured(one // 2, at_probe == PROBE_BATCH * one)


def _flops(gm, n: fx.Node, found: Probed, batched, batch: int, device: str) -> int:
    args, kwargs = found.args[n]

    def alike(v):
        """A tensor alike to the probed one (the batch resized), or the value."""
        if isinstance(v, _TensorArg):
            shape = found.values[v.node]
            dims = tuple(shape)
            if v.node in batched and dims and batch != PROBE_BATCH:
                # dim 0 holds the batch (or the batch times a size: x.flatten(0, 1))
                dims = (dims[0] // PROBE_BATCH * batch, *dims[1:])
            return torch.zeros(dims, dtype=shape.dtype, device=device)
        if isinstance(v, list):       # fx's immutable_list too
            return [alike(x) for x in v]
        if isinstance(v, tuple):
            return tuple(alike(x) for x in v)
        if isinstance(v, dict):
            return {k: alike(x) for k, x in v.items()}
        return v

    args, kwargs = alike(args), alike(kwargs)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), _quiet_warnings():
        if n.op == "call_module":
            module = gm.get_submodule(n.target)
            if device == "meta":
                state = {k: _meta_like(v) for k, v in
                         list(module.named_parameters()) + list(module.named_buffers())}
                torch.func.functional_call(module, state, tuple(args), kwargs)
            else:
                module(*args, **kwargs)
        elif n.op == "call_method":
            getattr(args[0], n.target)(*args[1:], **kwargs)
        else:
            n.target(*args, **kwargs)
    return counter.get_total_flops()


def measure_module(module, input_shape: tuple, meta: bool = True) -> tuple:
    """(Measured, output shape per sample) of a whole module's forward on a
    zero input: where no part of the model can be a row of its own."""
    device = "meta" if meta else "cpu"
    state = {k: _meta_like(v) for k, v in
             list(module.named_parameters()) + list(module.named_buffers())} if meta else None
    counts, shape = [], None
    for batch in (1, PROBE_BATCH):
        x = torch.zeros((batch, *input_shape), device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad(), _quiet_warnings():
            y = torch.func.functional_call(module, state, (x,)) if meta else module(x)
        counts.append(counter.get_total_flops())
        shape = _first_tensor(y).shape[1:]
    one, at_probe = counts
    return Measured(one // 2, at_probe == PROBE_BATCH * one), tuple(int(d) for d in shape)


def _first_tensor(y):
    if isinstance(y, torch.Tensor):
        return y
    items = y.values() if isinstance(y, dict) else y if isinstance(y, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None
