"""Measure a compiled model the way the engine predicts it: output shapes by
forward hooks, parameters by numel, MACs by fvcore per module, FLOPs by
torch.utils.flop_counter, forward activation bytes by the storages the rows
produce, and the bytes autograd saves by saved_tensors_hooks."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
from torch import nn

# fvcore's names for the ops that are multiply-accumulates (our MACs)
FVCORE_MAC_OPS = ("conv", "linear", "matmul", "addmm", "bmm", "einsum")


@dataclass
class Measured:
    shapes: dict = field(default_factory=dict)      # module name -> output shape (per sample)
    params: dict = field(default_factory=dict)      # module name -> parameter count
    total_params: int = 0
    macs: dict = field(default_factory=dict)        # module name -> fvcore conv/linear count
    fvcore_skipped: tuple = ()                      # ops fvcore reported it does not count
    fvcore_total: int | None = None
    flop_counter_total: int | None = None           # on the meta device: every op counted
    flop_counter_device_total: int | None = None    # on the device (fused kernels may be missed)
    forward_activation_bytes: int | None = None
    saved_bytes: int | None = None
    device: str = "cpu"
    meta: bool = False
    meta_reason: str = ""                           # why it was measured on the meta device
    outputs: dict = field(default_factory=dict)     # a model with heads: output name -> shape


def measure(model: nn.Module, report, *, batch: int = 1, device: str = "cpu",
            meta: bool = False) -> Measured:
    out = Measured(device=device, meta=meta)
    x_shape = (batch, *report.model.input)
    modules = dict(model.named_modules())
    out.total_params = sum(p.numel() for p in model.parameters())
    for row_path, name in model.rows.items():
        if name in modules:
            out.params[name] = sum(p.numel() for p in modules[name].parameters())
    if meta:
        model = model.to("meta")
        x = torch.zeros(x_shape, device="meta")
        _forward_shapes(model, x, out, modules_of=model)
        return out
    model = model.to(device)
    x = torch.randn(x_shape, device=device)
    model.eval()
    with torch.no_grad():
        out.forward_activation_bytes = _forward_shapes(model, x, out, modules_of=model)
    _flop_counts(model, x, out)
    model.train()
    out.saved_bytes = saved_tensor_bytes(model, x, device)
    # FlopCounterMode on the meta device sees every matmul; on a real device
    # fused kernels (nn.MultiheadAttention's fast path) escape it. The model
    # is not needed on the device any more, so it moves instead of a copy.
    out.flop_counter_device_total = out.flop_counter_total
    model.to("meta")
    out.flop_counter_total = _flop_counter(model, torch.zeros(x_shape, device="meta"))
    return out


def _forward_shapes(model, x, out: Measured, modules_of) -> int:
    """Run once with hooks on every row's module; returns the bytes of the
    distinct storages the rows produced (the input included)."""
    names = set(model.rows.values())
    storages = {x.untyped_storage().data_ptr(): x.untyped_storage().nbytes()}
    alive = []  # keep every row output so the allocator cannot reuse its storage
    hooks = []
    for name, module in modules_of.named_modules():
        if name in names and type(module) is nn.Sequential:
            # a row's fused ops (conv, batch norm, relu): each op's new tensor
            # counts, as the engine counts a fused row (the in-place relu's is
            # the batch norm's storage again)
            for child in module.children():
                hooks.append(child.register_forward_hook(
                    lambda mod, args, result: _keep(result, storages, alive)))
        if name in names:
            def hook(mod, args, result, name=name):
                out.shapes[name] = tuple(result.shape[1:])
                if result.device.type != "meta":
                    alive.append(result)
                    st = result.untyped_storage()
                    storages[st.data_ptr()] = st.nbytes()
            hooks.append(module.register_forward_hook(hook))
    try:
        y = model(x)
        if isinstance(y, dict):
            out.outputs = {k: tuple(v.shape[1:]) for k, v in y.items()}
    finally:
        for h in hooks:
            h.remove()
    return sum(storages.values())


def _keep(result, storages: dict, alive: list) -> None:
    if isinstance(result, torch.Tensor) and result.device.type != "meta":
        alive.append(result)
        st = result.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()


def _flop_counter(model, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    model.eval()
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def _flop_counts(model, x, out: Measured):
    import warnings
    out.flop_counter_total = _flop_counter(model, x)
    try:
        with warnings.catch_warnings():  # fvcore calls torch.jit.script on import
            warnings.simplefilter("ignore", FutureWarning)
            from fvcore.nn import FlopCountAnalysis
    except ImportError:  # reported by the caller as "not measured"
        return
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with warnings.catch_warnings():  # fvcore traces with torch.jit, which warns
        warnings.simplefilter("ignore")
        by_module = analysis.by_module_and_operator()
    for name in set(model.rows.values()):
        ops = by_module.get(name, {})
        out.macs[name] = sum(v for k, v in ops.items() if k in FVCORE_MAC_OPS)
    out.fvcore_total = sum(v for k, v in analysis.by_operator().items() if k in FVCORE_MAC_OPS)
    out.fvcore_skipped = tuple(sorted(analysis.unsupported_ops()))


@contextlib.contextmanager
def any_batch_size():
    """Let a training-mode batch norm run on one value per channel (a 1 x 1 map
    or an fc's features at batch 1). PyTorch's functional batch norm refuses it
    up front (its statistics would be those of a single value), but the kernel
    computes it, and keeps the same tensors for backward as at any batch: this
    lifts the up-front check, so the saved bytes are measured as they are."""
    functional = torch.nn.functional
    check = getattr(functional, "_verify_batch_size", None)
    if check is None:  # pragma: no cover - a torch without the check
        yield
        return
    functional._verify_batch_size = lambda size: None
    try:
        yield
    finally:
        functional._verify_batch_size = check


def saved_tensor_bytes(model: nn.Module, x, device: str = "cpu") -> int:
    """Bytes autograd keeps for backward in one training step: the distinct
    storages its saved tensors live in, parameters left out (CPU), or the
    growth of allocated memory over the forward pass (CUDA). Works at any
    batch, batch 1 included (see ``any_batch_size``)."""
    with any_batch_size():
        return _saved_tensor_bytes(model, x, device)


def _saved_tensor_bytes(model: nn.Module, x, device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        from .build import output_tensors
        y = model(x)
        torch.cuda.synchronize()
        grown = torch.cuda.memory_allocated() - before - sum(
            {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
             for t in output_tensors(y)}.values())
        del y
        return grown
    with SavedBytes(model) as saved:
        model(x)
    return saved.total


class SavedBytes:
    """Inside the block, the bytes of the distinct storages autograd saves for
    backward (parameters left out: they are counted as weights); ``total``
    once the block is left."""

    def __init__(self, model: nn.Module):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: dict[int, int] = {}
        self.total = 0

    def _pack(self, t):
        st = t.untyped_storage()
        if st.data_ptr() not in self.params:
            self.seen[st.data_ptr()] = st.nbytes()
        # a new tensor on the same storage: returning t itself, when t is the
        # op's output, makes a cycle (t -> grad_fn -> saved t) that no gc sees,
        # and the whole graph, weights included, leaked on every measurement
        return t.detach()

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)
        self.total = sum(self.seen.values())
        return False
