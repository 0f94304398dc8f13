"""Time a compiled spec: latency, throughput, achieved FLOP/s and share of the
device's peak, peak memory measured vs predicted; per layer, a roofline.

Timing is honest: warm-up steps excluded, CUDA synchronized before every
clock read, median and p90 over the timed steps.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from ..analysis import DTYPES, analyze
from ..errors import SpecError
from ..graph import Model
from .build import build_model, scalar_of
from .devices import Peak, known_peak, measure_peak

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZER_STATES = 1  # the train step uses SGD with momentum


@dataclass
class BenchResult:
    batch: int
    mode: str
    device: str
    dtype: str
    latency_ms: float           # median
    latency_p90_ms: float
    throughput: float           # samples / s
    flops_per_step: int         # calculated: forward (+ backward in train mode)
    achieved_tflops: float
    peak_tflops: float | None
    share_of_peak: float | None
    predicted_memory_bytes: int
    measured_memory_bytes: int | None
    memory_measure: str
    steps: int
    layers: list = field(default_factory=list)
    predicted_ms: float | None = None   # bench --predict: the profile's step time

    def as_json(self) -> dict:
        d = asdict(self)
        if self.predicted_ms is None:
            d.pop("predicted_ms")
            return d
        # predicted_ms and its error beside latency_ms
        out = {}
        for k, v in d.items():
            if k == "predicted_ms":
                continue
            out[k] = v
            if k == "latency_ms":
                out["predicted_ms"] = self.predicted_ms
                out["predicted_error"] = (self.predicted_ms - v) / v if v else None
        return out


@dataclass
class LayerTiming:
    name: str
    type: str
    time_ms: float
    flops: int
    bytes_moved: int
    intensity: float            # FLOPs per byte
    predicted_ms: float | None  # the roofline; with bench --predict the profile's forward
    bound: str | None           # "compute" | "memory" (| "overhead" with --predict)
    roofline_ms: float | None = None
    predicted_backward_ms: float | None = None   # bench --predict, train mode


class Runner:
    """One model on one device, stepped in inference or train mode."""

    def __init__(self, graph: Model, device: str, mode: str, amp: str | None,
                 channels_last: bool, compile: bool):
        self.graph, self.device, self.mode, self.amp = graph, device, mode, amp
        self.model = build_model(graph).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        self.module = torch.compile(self.model) if compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.model.train(mode == "train")

    def batch_input(self, batch: int):
        x = torch.randn(batch, *self.graph.input, device=self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def step(self, x):
        amp = self.amp is not None
        dtype = AMP.get(self.amp, torch.bfloat16)
        if self.mode == "inference":
            with torch.no_grad(), torch.autocast(self.device, dtype=dtype, enabled=amp):
                self.module(x)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device, dtype=dtype, enabled=amp):
                out = self.module(x)
                loss = scalar_of(out)  # a scalar to differentiate (every output)
            loss.backward()
            self.optimizer.step()
        synchronize(self.device)


def synchronize(device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":  # pragma: no cover - Apple only
        torch.mps.synchronize()


def predicted_memory(graph: Model, batch: int, mode: str, amp: str | None,
                     device: str = "cuda") -> int:
    """Bytes a step needs: fp32 weights, autocast's low-precision weight copies,
    and in train mode gradients, momentum and the tensors saved for backward
    (under autocast on ``device``: what runs in fp32 kept at 4 bytes);
    at inference the activations alive at the forward's peak."""
    act_dtype = amp or "fp32"
    report = analyze(graph, batch=batch, dtype=act_dtype, optimizer="momentum",
                     autocast=("cpu" if device == "cpu" else "cuda") if amp else None)
    t = report.totals
    weights = t["params"] * DTYPES["fp32"]
    copies = t["params"] * DTYPES[amp] if amp else 0   # autocast's cached weight casts
    if mode == "inference":  # activations alive at the peak of a no-grad forward
        alive = t["inference_peak_bytes"] - t["param_bytes"]
        if device == "cuda":   # cuDNN's layout copies, cuBLAS's workspace (see memory.py)
            from .memory import CUBLAS_WORKSPACE, cuda_conv_workspace
            alive += cuda_conv_workspace(report, DTYPES[act_dtype]) + CUBLAS_WORKSPACE
        return weights + copies + alive
    return weights * (2 + OPTIMIZER_STATES) + copies + t["saved_activation_bytes"]


def largest_batch(graph: Model, mode: str, amp: str | None, free: int) -> int:
    """Memory is affine in the batch: fixed + per_sample * batch."""
    m1, m2 = predicted_memory(graph, 1, mode, amp), predicted_memory(graph, 2, mode, amp)
    per_sample, fixed = m2 - m1, 2 * m1 - m2
    return max(0, int((free - fixed) // per_sample)) if per_sample > 0 else 0


def free_memory(device: str) -> int | None:
    """Bytes free for tensors: the GPU's free memory, or the RAM available (CPU)."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    if device == "cpu":
        import os
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            return None
    return None


def check_memory(graph: Model, batches, mode: str, amp: str | None, device: str) -> None:
    """Refuse, before anything is allocated, a batch whose estimated peak (an
    upper bound: see memory.py) exceeds what the device has available."""
    from . import memory
    batch = max(batches)
    estimate = memory.for_bench(graph, batch, mode, amp, device)

    def hint():
        fits = memory.largest_fitting_batch(
            lambda b: memory.for_bench(graph, b, mode, amp, device), device)
        if fits == 0:
            return "not even batch 1 fits"
        return (f"the largest batch that fits is {fits:,}"
                + (" (--max-batch finds it by running)" if device == "cuda" else ""))
    memory.guard(estimate, command="bench", hint=hint)


def run_bench(graph: Model, *, device: str = "cpu", batches=(1,), mode: str = "inference",
              amp: str | None = None, channels_last: bool = False, compile: bool = False,
              warmup: int = 3, steps: int = 10, peak: str = "table", per_layer: bool = False,
              progress=None, profile=None, memory_check: bool = True) -> list[BenchResult]:
    """``profile``: an archcalc.predict.Profile (bench --predict): each result
    gets the predicted step time and, per layer, the predicted forward time."""
    if memory_check:
        check_memory(graph, batches, mode, amp, device)
    predictions = {}
    if profile is not None:
        from ..predict import predict
        predictions = {p.batch: p for p in predict(graph, profile, batches=batches, mode=mode,
                                                   amp=amp, channels_last=channels_last,
                                                   compile=compile)}
        per_layer = True
    runner = Runner(graph, device, mode, amp, channels_last, compile)
    dtype = amp or "fp32"
    device_peak = measure_peak(device, dtype) if peak == "measure" else known_peak(device)
    results = []
    for batch in batches:
        need = predicted_memory(graph, batch, mode, amp, device)
        report = analyze(graph, batch=batch, dtype=dtype)
        per_sample = report.totals["flops"] + (report.totals["backward_flops"]
                                               if mode == "train" else 0)
        flops = per_sample * batch
        x = runner.batch_input(batch)
        times = []
        try:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for i in range(warmup + steps):
                t = time.perf_counter()
                runner.step(x)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
                if progress:
                    progress(batch, i + 1, warmup + steps)
        except torch.cuda.OutOfMemoryError:
            free = free_memory(device) or 0
            raise SpecError(f"CUDA ran out of memory at batch {batch} (predicted "
                            f"{need / 1e9:.1f} GB); the "
                            f"largest batch predicted to fit is "
                            f"{largest_batch(graph, mode, amp, free)}") from None
        measured, how = measured_memory(runner, x, device)
        median = statistics.median(times)
        p90 = sorted(times)[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        achieved = flops / median / 1e12
        peak_tflops = device_peak.flops(dtype) / 1e12 if device_peak else None
        result = BenchResult(
            batch=batch, mode=mode, device=device, dtype=dtype,
            latency_ms=median * 1e3, latency_p90_ms=p90 * 1e3, throughput=batch / median,
            flops_per_step=int(flops), achieved_tflops=achieved, peak_tflops=peak_tflops,
            share_of_peak=achieved / peak_tflops if peak_tflops else None,
            predicted_memory_bytes=need,
            measured_memory_bytes=measured, memory_measure=how, steps=steps)
        if batch in predictions:
            result.predicted_ms = predictions[batch].step_ms
        if per_layer:
            result.layers = layer_times(runner, report, x, device_peak, dtype, steps,
                                        predictions.get(batch))
        results.append(result)
    return results


def measured_memory(runner: Runner, x, device: str):
    """CUDA: the allocator's peak over the steps. CPU: the bytes of the tensors a
    step holds at its peak: weights, gradients, optimizer state and the tensors
    saved for backward (train), or weights and the forward outputs (inference)."""
    if device == "cuda":  # everything allocated at the peak, weights included
        return torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    from .measure import saved_tensor_bytes
    params = sum(p.numel() * p.element_size() for p in runner.model.parameters())
    if runner.mode == "inference":
        return params + _live_peak(runner, x), "weights + peak of live forward tensors"
    grads = sum(p.numel() * p.element_size() for p in runner.model.parameters())
    state = sum(t.numel() * t.element_size() for s in runner.optimizer.state.values()
                for t in s.values() if torch.is_tensor(t))
    with torch.autocast(device, dtype=AMP.get(runner.amp, torch.bfloat16),
                        enabled=runner.amp is not None):
        saved = saved_tensor_bytes(runner.model, x, device)
    return params + grads + state + saved, "weights + grads + optimizer + saved (tensor bytes)"


def _live_peak(runner: Runner, x) -> int:
    """The most bytes of row outputs (and the input) alive at once in a no-grad
    forward, followed through weak references: CPU PyTorch keeps no allocator peak."""
    import weakref
    alive: dict[int, tuple] = {}   # storage pointer -> (weak ref to a tensor, bytes)
    peak = [0]

    def track(tensor):
        st = tensor.untyped_storage()
        alive[st.data_ptr()] = (weakref.ref(tensor), st.nbytes())
        for ptr in [p for p, (ref, _) in alive.items() if ref() is None]:
            del alive[ptr]
        peak[0] = max(peak[0], sum(n for _, n in alive.values()))

    names = set(runner.model.rows.values())
    hooks = [m.register_forward_hook(lambda mod, args, out: track(out))
             for name, m in runner.model.named_modules() if name in names]
    hooks += [m.register_forward_pre_hook(lambda mod, args: track(args[0]))
              for name, m in runner.model.named_modules() if name in names]
    try:
        with torch.no_grad():
            track(x)
            runner.model(x)
    finally:
        for h in hooks:
            h.remove()
    return peak[0]


def layer_times(runner: Runner, report, x, peak: Peak | None, dtype: str, steps: int,
                prediction=None):
    """Each row's module timed with synchronizing hooks, beside its roofline (and
    the profile's prediction of its forward time, bench --predict)."""
    modules = dict(runner.model.named_modules())
    rows = [r for r in report.rows[1:] if r.name in runner.model.rows
            and r.type.split("+")[0] not in ("concat", "add", "mul", "sub")]
    starts, spent = {}, {r.name: [] for r in rows}
    hooks = []
    for row in rows:
        module = modules[runner.model.rows[row.name]]

        def pre(mod, args, name=row.name):
            synchronize(runner.device)
            starts[name] = time.perf_counter()

        def post(mod, args, out, name=row.name):
            synchronize(runner.device)
            spent[name].append(time.perf_counter() - starts[name])
        hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        mode = runner.mode
        runner.mode = "inference"  # forward timings: backward has no module hooks
        for _ in range(steps):
            runner.step(x)
        runner.mode = mode
    finally:
        for h in hooks:
            h.remove()
    dsize = DTYPES[dtype]
    by_name = {r.name: r for r in report.rows}
    out = []
    previous = report.rows[0]
    for row in report.rows[1:]:
        if row.name not in spent:
            previous = row
            continue
        inp = previous.activations
        moved = (inp + row.activations) * dsize * report.batch + row.params * dsize
        flops = row.flops * report.batch
        predicted = bound = None
        if peak:
            t_compute, t_memory = flops / peak.flops(dtype), moved / peak.bandwidth_at(moved)
            predicted = max(t_compute, t_memory) * 1e3
            bound = "memory" if t_memory > t_compute else "compute"
        timing = LayerTiming(row.name, row.type, statistics.median(spent[row.name]) * 1e3,
                             int(flops), int(moved), flops / moved if moved else 0.0,
                             predicted, bound, roofline_ms=predicted)
        if prediction is not None:
            mine = next((p for p in prediction.layers if p.name == row.name), None)
            if mine is not None:
                timing.predicted_ms, timing.bound = mine.forward_ms, mine.bound
                if runner.mode == "train":
                    timing.predicted_backward_ms = mine.backward_ms
        out.append(timing)
        previous = by_name[row.name]
    return out


def max_batch(graph: Model, *, device: str, mode: str, amp: str | None,
              channels_last: bool = False) -> tuple[int, int]:
    """The largest batch predicted to fit, then verified by running one step
    (stepping down 10% on an out-of-memory error). Returns (predicted, verified)."""
    free = free_memory(device)
    if free is None or device != "cuda":
        raise SpecError("--max-batch needs a CUDA device (it verifies the batch by running "
                        "until memory runs out)")
    predicted = largest_batch(graph, mode, amp, free)
    runner = Runner(graph, device, mode, amp, channels_last, compile=False)
    batch = predicted
    while batch > 0:
        try:
            runner.step(runner.batch_input(batch))
            return predicted, batch
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch = int(batch * 0.9)
    return predicted, 0


__all__ = ["run_bench", "max_batch", "BenchResult", "LayerTiming", "predicted_memory"]
