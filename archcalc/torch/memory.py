"""Refuse before allocating: an upper bound of the memory a command will use,
computed from the analysis alone (nothing is built), against what this
machine has free.

The bound is deliberately pessimistic: it is what the process can peak at,
not what the tensors the model keeps add up to (that is ``predicted_memory``
in bench and ``train_memory_bytes`` in the table). On top of the analysis
totals (weights, gradients, optimizer state, saved activations, the forward's
live peak) it counts what those leave out:

- the process as it is now (Python, torch and its libraries: ~0.5 GB of RSS
  on a CPU, more with CUDA) and an allowance for what a run adds besides
  tensors (libraries loaded later, oneDNN's kernels, autograd's graph);
- the input batch, the loss, and the activation gradients alive during the
  backward pass (up to three of the largest activation at once);
- a convolution's workspace: CPU convolutions may unfold the whole batch
  (im2col: batch x C_in x k_h x k_w x H_out x W_out elements) and keep the
  output twice (a blocked layout and the plain one);
- the optimizer step's temporaries, the data set `train` holds in memory
  (with the copies made while it is loaded and resized), and 10% for the
  allocator (fragmentation, pages not returned).

Every command that builds a model checks this bound first and refuses with
the figures when it exceeds the memory available: RAM on the CPU (the lower
of MemAvailable, a cgroup's limit and RLIMIT_AS), free device memory on a
GPU. ``--no-memory-check`` goes on anyway.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field

from ..analysis import DTYPES, analyze
from ..errors import SpecError

FLAG = "--no-memory-check"
OVERHEAD = 0.10                 # allocator: fragmentation, pages not returned to the OS
# what a run adds besides tensors: libraries loaded after the check (fvcore, sklearn),
# oneDNN's kernels and caches, autograd's graph, thread pools (measured: 150-300 MB)
RUNTIME = 320 * 2**20
CUDA_HOST = 3 * 2**30           # host RSS of the CUDA runtime, cuDNN and cuBLAS
CUDA_DEVICE = 512 * 2**20       # allocator blocks rounding up, cuBLAS workspaces
STATES = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adam": 2}


@dataclass
class Estimate:
    """An upper bound of a command's peak memory, by part (bytes)."""
    what: str                       # "bench at batch 64 (train)"
    device: str
    parts: dict = field(default_factory=dict)       # on the device (the host for cpu)
    host: dict = field(default_factory=dict)        # host-side parts of a GPU run

    @property
    def device_bytes(self) -> int:
        return int(sum(self.parts.values()))

    @property
    def host_bytes(self) -> int:
        return int(sum(self.host.values()))

    @property
    def total(self) -> int:
        """The process's peak RSS on a CPU; device memory on a GPU."""
        return self.device_bytes

    def describe(self, parts=None) -> str:
        parts = self.parts if parts is None else parts
        shown = [f"{k} {gb(v)}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
                 if v >= 0.05 * 2**30 or len(parts) <= 3][:5]
        return ", ".join(shown)


def gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.0f} MB"


# -- what the machine has ---------------------------------------------------

def _proc_kb(path: str, key: str) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return None if text in ("max", "") else int(text)
    except (OSError, ValueError):
        return None


def rss() -> int:
    """This process's resident memory now (bytes)."""
    now = _proc_kb("/proc/self/status", "VmRSS")
    if now is not None:
        return now
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # pragma: no cover


def ram_available() -> tuple[int | None, str]:
    """Bytes this process can still allocate on the host, and where the limit comes from."""
    limits = []
    avail = _proc_kb("/proc/meminfo", "MemAvailable")
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            avail = None
    if avail is not None:
        limits.append((avail, "RAM available"))
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2**60:
            limits.append((max(0, limit - usage), "memory left under the cgroup's limit"))
            break
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        size = _proc_kb("/proc/self/status", "VmSize") or 0
        limits.append((max(0, soft - size), "address space left under RLIMIT_AS (ulimit -v)"))
    if not limits:
        return None, "unknown"
    return min(limits)


def device_available(device: str) -> tuple[int | None, str]:
    if device.startswith("cuda"):
        import torch
        return torch.cuda.mem_get_info()[0], "free on the GPU"
    return None, "unknown"


# -- the bound --------------------------------------------------------------

def _bytes(v) -> int:
    return int(v) if isinstance(v, int) else 0


def _slow_convolutions() -> bool:
    """Without oneDNN, CPU convolutions take the slow path, whose backward
    holds the unfolded input twice (for the input's and the weights' gradients)."""
    try:
        import torch
        return not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
    except Exception:  # pragma: no cover
        return True


def _workspace(report, dsize: int, train: bool = False) -> int:
    """The most one row allocates beyond its input and output (which the live
    peak and the saved tensors count): a convolution's unfolded input (CPU
    convolutions may unfold the whole batch, im2col: batch x C_in x k_h x k_w
    x H_out x W_out elements) and a copy of its input and output in another
    layout; any other row, a copy of its input and output."""
    worst = 0
    prev = report.rows[0]
    for row in report.rows[1:]:
        out = _bytes(row.activations) * dsize * report.batch
        x = row.input_shape or prev.output_shape
        inp = _bytes(_prod(x)) * dsize * report.batch
        cost = inp + out
        op = row.ops[0] if row.ops else None
        copies = op.kind.im2col_copies if op is not None else 0
        if train and _slow_convolutions():
            copies *= 2
        if copies and len(row.output_shape) == 3 and len(x) == 3:
            # the kind says what one unfold holds (im2col, or a transposed conv's col2im)
            cols = _bytes(op.kind.im2col_columns(op.args, x, op.kind.output_shape(op.args, x)))
            cost += copies * cols * dsize * report.batch
        worst = max(worst, cost)
        prev = row
    return worst


# cuBLAS's workspace, which PyTorch takes from its caching allocator (on a
# Hopper GPU 32 MiB; it shows in torch.cuda.max_memory_allocated)
CUBLAS_WORKSPACE = 32 * 2**20


def cuda_conv_workspace(report, dsize: int) -> int:
    """The largest workspace cuDNN takes in a no-grad forward on a GPU: its
    tensor-core kernels run channels-last, so a k x k convolution (k > 1) on
    an NCHW map gets its input and its output in that layout in a workspace
    (a 1x1 convolution is a GEMM on NCHW as it is; a first layer on the
    image's few channels takes no such copy). Measured on an H100 (bf16,
    benchmarks/results/h100): VGG-16 inference peak +620 MB at batch 64 and
    +3,202 MB at 256 over the tensors (conv1_2's input and output: 822 and
    3,288 MB); ResNet-50 +50 and +243 MB (layer1's 3x3: 51 and 206 MB)."""
    worst = 0
    prev = report.rows[0]
    for row in report.rows[1:]:
        x = row.input_shape or prev.output_shape
        prev = row
        for op in row.ops:
            y = op.kind.output_shape(op.args, x)
            k = tuple(op.args.kernel) if op.kind.cuda_layout_copies else (1, 1)
            if k != (1, 1) and len(x) == 3 and isinstance(x[0], int) and x[0] > 4:
                worst = max(worst, (_bytes(_prod(x)) + _bytes(_prod(y))) * dsize * report.batch)
            x = y
    return worst


def _prod(shape) -> int:
    n = 1
    for d in shape:
        if not isinstance(d, int):
            return 0
        n *= d
    return n


def _largest_activation(report, dsize: int) -> int:
    return max((_bytes(r.activations) for r in report.rows), default=0) * dsize * report.batch


def _largest_row_params(report) -> int:
    return max((_bytes(r.params) for r in report.rows), default=0)


def model_parts(graph, *, batch: int, mode: str, device: str = "cpu", states: int = 1,
                amp: str | None = None, input_batches: int = 1) -> dict:
    """The tensors of one step at this batch, upper bounds, by part.

    mode: "inference" (a no-grad forward), "train" (forward, backward and an
    optimizer step with ``states`` tensors per parameter), or "check" (the
    measurements of `archcalc check`: a forward keeping every row's output,
    then a forward keeping what autograd saves)."""
    dtype = amp or "fp32"
    dsize = DTYPES[dtype]
    report = analyze(graph, batch=batch, dtype=dtype)
    t = report.totals
    params = _bytes(t["params"])
    weights = params * 4 + _bytes(t.get("buffers", 0)) * 4
    if amp:
        weights += params * dsize               # autocast's cached low-precision copies
    act = _largest_activation(report, dsize)
    x = _bytes(_prod(graph.input)) * 4 * batch * input_batches
    work = _workspace(report, dsize, train=mode == "train")
    parts = {"weights": weights, "input batch": x, "largest layer workspace": work}
    if mode == "inference":
        peak = t.get("inference_peak_bytes")
        alive = peak - _bytes(t["param_bytes"]) if isinstance(peak, int) \
            else _bytes(t["activation_bytes"])
        parts["activations alive at the forward's peak"] = max(0, alive) + act
    elif mode == "check":
        parts["activations (every row's output kept)"] = _bytes(t["activation_bytes"])
        parts["saved for backward"] = _bytes(t["saved_activation_bytes"]) + 2 * act
    else:
        parts["gradients and optimizer state"] = params * 4 * (1 + states)
        step = params * 4 if device.startswith("cuda") else _largest_row_params(report) * 4
        parts["optimizer step temporaries"] = 2 * step
        parts["saved for backward"] = _bytes(t["saved_activation_bytes"])
        parts["activation gradients"] = 3 * act
        parts["loss"] = 2 * _bytes(_prod(report.rows[-1].output_shape)) * 4 * batch
    return parts


def finish(what: str, device: str, parts: dict, host_data: int = 0) -> Estimate:
    """Add the process, the allocator's overhead and the libraries' allowance."""
    tensors = sum(parts.values())
    if device.startswith("cuda"):
        device_parts = {**parts, "allocator": int(OVERHEAD * tensors) + CUDA_DEVICE}
        host = {"process now": rss(), "CUDA libraries": CUDA_HOST, "data": host_data,
                "runtime and libraries": RUNTIME}
        return Estimate(what, device, device_parts, host)
    parts = {**parts, "data": host_data} if host_data else dict(parts)
    parts["allocator"] = int(OVERHEAD * (tensors + host_data))
    parts["process now"] = rss()
    parts["runtime and libraries"] = RUNTIME
    return Estimate(what, device, parts)


def shortfall(estimate: Estimate):
    """None when the bound fits; else (need, available, where, parts, memory),
    both figures with the process's present memory included."""
    checks = []
    if estimate.device.startswith("cuda"):
        free, where = device_available(estimate.device)
        checks.append((estimate.device_bytes, free, where, estimate.parts, "GPU memory"))
        host_free, host_where = ram_available()
        now = estimate.host.get("process now", 0)
        checks.append((estimate.host_bytes - now, host_free, host_where, estimate.host,
                       "host RAM"))
    else:
        free, where = ram_available()
        now = estimate.parts.get("process now", 0)
        # the process already holds `now`: compare what it will add with what is left
        checks.append((estimate.device_bytes - now, free, where, estimate.parts, "RAM"))
    for need, free, where, parts, memory in checks:
        if free is not None and need > free:
            now = parts.get("process now", 0)
            return need + now, free + now, where, parts, memory
    return None


def guard(estimate: Estimate, *, hint="", command: str = "") -> None:
    """Raise a one-line SpecError when the bound exceeds what is available.
    ``hint``: advice to add, or a function that makes it (called only then)."""
    short = shortfall(estimate)
    if short is None:
        return
    need, free, where, parts, memory = short
    hint = hint() if callable(hint) else hint
    prefix = f"{command}: " if command else ""
    raise SpecError(
        f"{prefix}{estimate.what} needs up to {gb(need)} of {memory} "
        f"({estimate.describe(parts)}), but {gb(free)} is available ({where}); "
        + (hint + "; " if hint else "") + f"{FLAG} runs it anyway")


def largest_fitting_batch(make, device: str) -> int:
    """The bound is affine in the batch: fixed + per_sample * batch. ``make(b)``
    gives the estimate at batch b."""
    e1, e2 = make(1), make(2)
    if device.startswith("cuda"):
        free, _ = device_available(device)
        a, b = e1.device_bytes, e2.device_bytes
    else:
        free, _ = ram_available()
        a = e1.device_bytes - e1.parts.get("process now", 0)
        b = e2.device_bytes - e2.parts.get("process now", 0)
    if free is None:
        return 0
    per, fixed = b - a, 2 * a - b
    return max(0, int((free - fixed) // per)) if per > 0 else 0


# -- per command ------------------------------------------------------------

def for_bench(graph, batch: int, mode: str, amp: str | None, device: str) -> Estimate:
    parts = model_parts(graph, batch=batch, mode=mode, device=device, states=1, amp=amp)
    return finish(f"batch {batch:,} in {mode} mode", device, parts)


def for_check(graph, batch: int, device: str) -> Estimate:
    parts = model_parts(graph, batch=batch, mode="check", device=device)
    return finish(f"measuring at batch {batch:,}", device, parts)


def for_export(graph) -> Estimate:
    parts = model_parts(graph, batch=1, mode="inference")
    parts["weights"] *= 3   # the exporter copies the initializers into the ONNX proto
    return finish("exporting to ONNX", "cpu", parts)


def for_train(graph, *, batch: int, optimizer: str, device: str, samples: int | None) -> Estimate:
    """``samples``: how many images the data source holds (data.check_source)."""
    parts = model_parts(graph, batch=batch, mode="train", device=device,
                        states=STATES.get(optimizer, 2), input_batches=3)  # + crop's copies
    n = samples or 0
    sample = _bytes(_prod(graph.input)) * 4
    # held: the images and labels; while loading and resizing: up to three copies more
    held = n * (sample + 8)
    return finish(f"training at batch {batch:,}", device, parts, host_data=4 * held)


__all__ = ["Estimate", "guard", "for_bench", "for_train", "for_check", "for_export",
           "largest_fitting_batch", "ram_available", "rss", "FLAG"]
