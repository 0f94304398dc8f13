"""`archcalc calibrate`: microbenchmarks that characterise a device, stored as
a profile (JSON) that `archcalc predict` reads without torch.

What is measured, per table (a dtype and a memory format: ``fp32``,
``fp32-cl`` for channels-last, ``bf16``, ...):

- ``conv``: representative convolution shapes (3x3, 1x1, 5x5, 7x7 stride 2,
  11x11 stride 4, stride-2, grouped and depthwise, narrow and wide, at batch
  1, 8 and 32), forward and backward time each. CPU convolutions (oneDNN)
  are not GEMMs with a fixed rate: their throughput depends on the shape,
  so the shapes are timed as convolutions, not only as matmuls;
- ``linear``: GEMMs as fully connected layers (M = batch, N, K), small to
  large, the memory-bound ones (a 25088 x 4096 weight at batch 1) included;
- ``ops``: the elementwise, pooling, normalization and copy primitives the
  layer kinds run (relu, sigmoid, batch norm, max/avg pool, global pool,
  LRN, add, concat, dropout, ...), each at sizes from cache-resident to
  memory-bound: forward at inference, forward in train mode, backward;
- ``optimizer``: one SGD-momentum step per parameter tensor, by size;

and once per device: the per-op overhead (a chain of tiny modules, forward
and forward + backward), the core's L2 size (sysfs: which ops ran with their
data in the cache while timed alone), the memory bandwidth by working-set size (copies),
the peak FLOP/s (the best of several GEMMs), and what ``torch.compile``
changes (a conv + batch norm + relu stack, eager vs compiled).

Timing: warm-up excluded, CUDA synchronized before every clock read, the
median of several repetitions kept (the minimum too). A budget in seconds
bounds the tables: each table has its share, and within it convs, GEMMs and
ops share the time (archcalc.profiles.schedule), each kind in priority order
(one conv of every class first), so a budget that runs out leaves some of
every kind. Each table records the points it planned; the profile's
``trust`` record says whether the machine was busy (load average, the spread
of repetitions) and what looks wrong (archcalc.profiles.trust). The shapes
and their order: archcalc.torch.grid.
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time

import torch
from torch import nn

from ..profiles.schedule import run_fair
from ..profiles.schema import PROFILE_FORMAT, PROFILE_VERSION
from ..profiles.trust import assess_calibration
from .grid import CONV_GRID, LINEAR_GRID, conv_out, table_jobs  # noqa: F401 (re-exported)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# elementwise and other primitives: name -> (build(module, shape) maker, input shape for
# a target element count, how many inputs)


def _map_shape(elements: int, channels: int = 64, min_hw: int = 4):
    """(B, C, H, W) with about `elements` elements: square maps, batch grows last."""
    hw = max(min_hw, int(math.sqrt(elements / channels)))
    batch = 1
    while hw > 128:
        batch *= 2
        hw = max(min_hw, int(math.sqrt(elements / channels / batch)))
    return (batch, channels, hw, hw)


def _gap_shape(elements: int):
    c = max(64, min(2048, elements // 49))
    return (max(1, elements // (c * 49)), c, 7, 7)


def _vec_shape(elements: int):
    features = 4096 if elements >= 4096 else elements
    return (max(1, elements // features), features)


class _Cat(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, 1)
        return torch.cat([a, b], 1)


class _Add(nn.Module):
    """A residual add, in place as torchvision's `out += identity` (in training
    too: the sum is not kept for backward)."""
    def __init__(self, shape):
        super().__init__()
        self.register_buffer("other", torch.randn(*shape) * 1e-3)

    def forward(self, x):
        return x.add_(self.other)


class _Mul(nn.Module):
    """x times a per-channel gate (squeeze-and-excitation's scale)."""
    def __init__(self, shape):
        super().__init__()
        self.register_buffer("gate", torch.rand(shape[0], shape[1], 1, 1))

    def forward(self, x):
        return x * self.gate


class _Copy(nn.Module):
    def forward(self, x):
        return x.clone()


def _ops():
    """name -> (module factory taking the input shape, shape for n elements)."""
    return {
        "relu": (lambda s: nn.ReLU(inplace=True), _map_shape),
        "sigmoid": (lambda s: nn.Sigmoid(), _map_shape),
        "gelu": (lambda s: nn.GELU(), _map_shape),
        "batch_norm": (lambda s: nn.BatchNorm2d(s[1]), _map_shape),
        "add": (lambda s: _Add(s), _map_shape),
        "mul": (lambda s: _Mul(s), _map_shape),
        "cat": (lambda s: _Cat(), _map_shape),
        "copy": (lambda s: _Copy(), _map_shape),
        "maxpool3s2": (lambda s: nn.MaxPool2d(3, 2, 1), _map_shape),
        "maxpool2s2": (lambda s: nn.MaxPool2d(2, 2), _map_shape),
        "maxpool3s1": (lambda s: nn.MaxPool2d(3, 1, 1), _map_shape),
        "avgpool2s2": (lambda s: nn.AvgPool2d(2, 2), _map_shape),
        "avgpool3s1": (lambda s: nn.AvgPool2d(3, 1, 1), _map_shape),
        "avgpool3s2": (lambda s: nn.AvgPool2d(3, 2, 1), _map_shape),
        "global_avgpool": (lambda s: nn.AdaptiveAvgPool2d(1), _gap_shape),
        "lrn": (lambda s: nn.LocalResponseNorm(5), _map_shape),
        "dropout": (lambda s: nn.Dropout(0.5), _vec_shape),
        "softmax": (lambda s: nn.Softmax(1), _vec_shape),
        "layer_norm": (lambda s: nn.LayerNorm(s[-1]), lambda n: (max(1, n // (197 * 768)) * 197, 768)
                       if n >= 197 * 768 else (max(1, n // 768), 768)),
        "group_norm": (lambda s: nn.GroupNorm(32, s[1]), _map_shape),
    }


IN_PLACE = ("relu", "add")   # the ops nets run in place (torchvision's ReLU, `out += x`)

# --------------------------------------------------------------------------
# timing


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Times a callable: warm-up, then repetitions, each synchronized. Tiny
    calls run in a loop between two clock reads (the per-call mean).

    ``timer``: "wall" (time.perf_counter) or "cpu" (time.process_time: the
    CPU time of this process, for one thread on a shared machine: the time
    the work took, without the time other processes held the core)."""

    def __init__(self, device: str, reps: int = 5, timer: str = "wall"):
        self.device, self.reps = device, reps
        self.timer = time.process_time if timer == "cpu" else time.perf_counter
        self.spreads = []   # (median - min) / median of each timing: a busy machine's is wide

    def __call__(self, fn, setup=None, reps=None, inner=None):
        reps = reps or self.reps
        clock = self.timer
        if setup:
            setup()
        sync(self.device)
        t = clock()
        fn()
        sync(self.device)
        first = clock() - t
        if inner is None:
            inner = 1 if setup else max(1, min(200, int(2e-3 / max(first, 1e-7))))
        times = []
        for _ in range(reps):
            if setup:
                setup()
            sync(self.device)
            t = clock()
            for _ in range(inner):
                fn()
            sync(self.device)
            times.append((clock() - t) / inner)
        median = statistics.median(times)
        if median > 0:
            self.spreads.append((median - min(times)) / median)
        return median, min(times)

    # -- CUDA: the host's launching and the device's kernels apart ----------
    _cycles_per_s = None

    def _sleep_cycles_per_s(self) -> float:
        """GPU clock cycles per second of torch.cuda._sleep (a spin on clock64)."""
        if Clock._cycles_per_s is None:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(1000)
            torch.cuda.synchronize()
            start.record()
            torch.cuda._sleep(10_000_000)
            end.record()
            torch.cuda.synchronize()
            Clock._cycles_per_s = 1e7 / max(start.elapsed_time(end) / 1e3, 1e-6)
        return Clock._cycles_per_s

    def split(self, fn, setup=None, inner=None):
        """CUDA: (host seconds, device seconds) per call, medians. While the host
        launches, the device spins (torch.cuda._sleep) so that nothing the host
        does shows in the events around the kernels: the host time is the
        launching alone (Python, module call, dispatch, autograd), the device
        time the kernels back to back. In a network the two overlap: the host
        runs ahead of the device (see archcalc.predict)."""
        if self.device != "cuda" or not hasattr(torch.cuda, "_sleep"):
            return None
        cps = self._sleep_cycles_per_s()
        if setup:
            setup()
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        first = time.perf_counter() - t
        if inner is None:
            inner = 1 if setup else max(1, min(50, int(2e-3 / max(first, 1e-7))))
        hosts, devices = [], []
        sleep_s = 2 * inner * first + 1e-3
        for _ in range(self.reps):
            for _attempt in range(4):
                if setup:
                    setup()
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                torch.cuda._sleep(int(min(sleep_s, 1.0) * cps))
                start.record()
                t = time.perf_counter()
                for _ in range(inner):
                    fn()
                host = time.perf_counter() - t
                # the sleep over before the host had launched everything: the
                # device waited on the host in between; again, sleeping longer
                early = start.query()
                end.record()
                torch.cuda.synchronize()
                if not early or sleep_s >= 1.0:
                    break
                sleep_s *= 4
            hosts.append(host / inner)
            devices.append(start.elapsed_time(end) / 1e3 / inner)
        return statistics.median(hosts), statistics.median(devices)


def _time_into(out, key, clock, fn, setup=None, best=True):
    """`key`_s (the median) and `key`_min_s of one timed call into `out`; on
    CUDA also `key`_host_s and `key`_gpu_s (Clock.split)."""
    median, least = clock(fn, setup=setup)
    out[f"{key}_s"] = median
    if best:
        out[f"{key}_min_s"] = least
    _split_into(out, key, clock, fn, setup)


def _split_into(out, key, clock, fn, setup=None):
    """On CUDA, `key`_host_s and `key`_gpu_s beside `key`_s (Clock.split)."""
    both = clock.split(fn, setup=setup)
    if both is not None:
        out[f"{key}_host_s"], out[f"{key}_gpu_s"] = both


class Budget:
    """Seconds the microbenchmarks may take, on the timings' own clock: with
    the CPU-time clock, CPU seconds, so that a loaded machine measures the
    same points (taking longer), not fewer."""

    def __init__(self, seconds: float, timer: str = "wall"):
        self.now = time.process_time if timer == "cpu" else time.perf_counter
        self.start = self.now()
        self.wall_start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return self.now() - self.start

    def until(self, share: float) -> float:
        """The clock time by which a section that ends at `share` of the budget stops."""
        return self.start + self.seconds * share


# --------------------------------------------------------------------------
# the sections


def fill(t):
    """Values for a timing: uniform in [-0.5, 0.5) (no denormals; faster to make
    than a normal draw, which matters for a 100M-element weight)."""
    with torch.no_grad():
        return t.uniform_(-0.5, 0.5)


def measure_conv(clock, device, dtype, channels_last, point, batch, train=True):
    k, s, p, cin, cout, n, groups = point
    g = cin if groups == "dw" else groups
    conv = nn.utils.skip_init(nn.Conv2d, cin, cout, k, s, p, groups=g, bias=False,
                              device=device, dtype=DTYPES[dtype])
    fill(conv.weight)
    x = fill(torch.empty(batch, cin, n, n, device=device, dtype=DTYPES[dtype]))
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out = {"kernel": [k, k], "stride": [s, s], "padding": [p, p], "cin": cin, "cout": cout,
           "size": [n, n], "groups": g, "depthwise": groups == "dw", "batch": batch}
    with torch.no_grad():
        _time_into(out, "forward", clock, lambda: conv(x))
    if train:
        stem = cin <= 4          # a first layer: no gradient for the image
        x.requires_grad_(not stem)
        state = {}

        def setup():
            conv.weight.grad = None
            x.grad = None
            state["y"] = conv(x)
            state["g"] = torch.ones_like(state["y"])

        _time_into(out, "backward", clock, lambda: state["y"].backward(state["g"]), setup)
        out["input_grad"] = not stem
    return out


def measure_linear(clock, device, dtype, m, k, n, train=True):
    fc = nn.utils.skip_init(nn.Linear, k, n, device=device, dtype=DTYPES[dtype])
    fill(fc.weight)
    fill(fc.bias)
    x = fill(torch.empty(m, k, device=device, dtype=DTYPES[dtype]))
    out = {"m": m, "k": k, "n": n}
    with torch.no_grad():
        _time_into(out, "forward", clock, lambda: fc(x))
    if train:
        x.requires_grad_(True)
        state = {}

        def setup():
            fc.weight.grad = fc.bias.grad = x.grad = None
            state["y"] = fc(x)
            state["g"] = torch.ones_like(state["y"])

        _time_into(out, "backward", clock, lambda: state["y"].backward(state["g"]), setup)
    return out


def measure_op(clock, device, dtype, channels_last, name, factory, shape, train=True):
    module = factory(shape).to(device, DTYPES[dtype])
    base = fill(torch.empty(*shape, device=device, dtype=DTYPES[dtype]))
    if channels_last and base.dim() == 4:
        base = base.contiguous(memory_format=torch.channels_last)
    module.eval()
    out = {"shape": list(shape), "elements": math.prod(shape)}
    with torch.no_grad():
        _time_into(out, "forward", clock, lambda: module(base))
    if train:
        module.train()
        x = base.clone().requires_grad_(True)
        inplace = name in IN_PLACE
        state = {}

        def fwd_setup():
            x.grad = None
            for p in module.parameters():
                p.grad = None
            # an in-place op works on a fresh tensor (a leaf's is refused), as in a net
            state["in"] = x.clone() if inplace else x

        def forward():
            state["y"] = module(state["in"])

        _time_into(out, "forward_train", clock, forward, fwd_setup, best=False)

        def setup():
            fwd_setup()
            state["y"] = module(state["in"])
            state["g"] = torch.ones_like(state["y"])

        _time_into(out, "backward", clock, lambda: state["y"].backward(state["g"]), setup)
    return out


def measure_overhead(clock, device, dtype):
    """Per-op cost of a tiny module in a chain: forward (no grad), forward with
    autograd recording, and backward."""
    chain = nn.Sequential(*[nn.Hardtanh() for _ in range(64)]).to(device)
    x = torch.randn(4, device=device)
    with torch.no_grad():
        fwd, _ = clock(lambda: chain(x))
    xg = x.clone().requires_grad_(True)
    ftrain, _ = clock(lambda: chain(xg))
    state = {}

    def setup():
        xg.grad = None
        state["y"] = chain(xg).sum()

    bwd, _ = clock(lambda: state["y"].backward(), setup=setup)
    n = len(chain)
    out = {"forward_s": fwd / n, "forward_train_s": ftrain / n, "backward_s": bwd / n,
           "how": f"a chain of {n} tiny modules (4 elements), per module"}
    with torch.no_grad():
        _split_into(out, "forward", clock, lambda: chain(x))
    _split_into(out, "forward_train", clock, lambda: chain(xg))
    _split_into(out, "backward", clock, lambda: state["y"].backward(), setup)
    for key in ("forward_host_s", "forward_gpu_s", "forward_train_host_s",
                "forward_train_gpu_s", "backward_host_s", "backward_gpu_s"):
        if key in out:
            out[key] /= n
    return out


def measure_optimizer(clock, device, dtype, sizes):
    """One SGD-momentum step (the bench's optimizer) per parameter tensor, by size."""
    points = []
    for elements in sizes:
        count = max(1, min(64, 2 ** 22 // elements))
        params = [torch.zeros(elements, device=device, requires_grad=True) for _ in range(count)]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        opt.step()   # the momentum buffers exist from the first step on
        median, best = clock(opt.step)
        split = clock.split(opt.step)
        # zero_grad(set_to_none=True) frees every gradient: large ones go back
        # to the system (munmap), which the next backward pays for again
        state = {}
        free, _ = clock(lambda: state.pop("g"),
                        setup=lambda: state.update(g=torch.ones(elements, device=device)))
        point = {"elements": elements, "step_s": median / count,
                 "step_min_s": best / count, "free_s": free}
        if split is not None:   # the foreach step: the host's launching, the kernels
            point.update(step_host_s=split[0] / count, step_gpu_s=split[1] / count)
        points.append(point)
        del params, opt
    return points


def cache_sizes(device: str) -> dict:
    """The CPU core's L2 size (Linux sysfs), which `predict` needs to tell an
    op whose data stayed in the cache while it was timed alone from one that
    streamed from memory; empty where it cannot be read (and on a GPU)."""
    if device != "cpu":
        return {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            path = os.path.join(base, index)
            if not index.startswith("index"):
                continue
            with open(os.path.join(path, "level")) as fh:
                level = fh.read().strip()
            with open(os.path.join(path, "type")) as fh:
                kind = fh.read().strip()
            if level == "2" and kind in ("Unified", "Data"):
                with open(os.path.join(path, "size")) as fh:
                    size = fh.read().strip()
                units = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}
                n = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
                return {"l2_bytes": n, "how": f"{path}/size"}
    except (OSError, ValueError):
        pass
    return {}


def measure_bandwidth(clock, device, sizes):
    """Bytes per second of a copy (read + write), by working-set size."""
    points = []
    for nbytes in sizes:
        src = torch.empty(nbytes // 4, device=device)
        dst = torch.empty_like(src)
        median, best = clock(lambda: dst.copy_(src))
        # a clock tick of 0 (a coarse timer) is no infinite bandwidth
        points.append({"bytes": 2 * nbytes, "bandwidth": 2 * nbytes / max(median, 1e-12),
                       "best_bandwidth": 2 * nbytes / max(best, 1e-12)})
    return points


def measure_peak_flops(clock, device, dtype, quick=False):
    """The best FLOP/s of several square GEMMs: an upper bound for a layer's rate."""
    if device == "cpu":
        sizes = (256, 512, 1024) if quick else (512, 1024, 2048, 3072)
    else:
        sizes = (1024, 2048, 4096) if quick else (2048, 4096, 8192)
    best = 0.0
    points = []
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
        b = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
        _, t = clock(lambda: a @ b, reps=3 if quick else 7)
        points.append({"n": n, "flops_per_s": 2 * n ** 3 / max(t, 1e-12)})
        best = max(best, points[-1]["flops_per_s"])
    return {"flops_per_s": best, "gemms": points}


def measure_compile(clock, device, dtype, budget_left):
    """What torch.compile changes: a conv + batch norm + relu stack and the conv
    alone, eager and compiled, inference and train."""
    import copy
    if budget_left < 30:
        return {"skipped": "not enough budget left (compiling takes tens of seconds)"}
    try:
        def block(c):
            return [nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        net = nn.Sequential(*block(64), *block(64)).to(device, DTYPES[dtype])
        convs = nn.Sequential(net[0], net[3])
        x = torch.randn(8, 64, 56, 56, device=device, dtype=DTYPES[dtype])
        out = {}
        for mode in ("inference", "train"):
            eager, conv_only = copy.deepcopy(net), copy.deepcopy(convs)
            compiled = torch.compile(copy.deepcopy(net))
            for m in (eager, compiled, conv_only):
                m.train(mode == "train")

            def step(m):
                if mode == "inference":
                    with torch.no_grad():
                        m(x)
                else:
                    m(x).sum().backward()
            step(compiled)          # compiles
            t_eager, _ = clock(lambda: step(eager))
            t_comp, _ = clock(lambda: step(compiled))
            t_conv, _ = clock(lambda: step(conv_only))
            rest_eager = max(t_eager - t_conv, 1e-9)
            rest_comp = max(t_comp - t_conv, 0.0)
            out[mode] = {"eager_s": t_eager, "compiled_s": t_comp, "conv_only_s": t_conv,
                         "speedup": t_eager / t_comp,
                         "elementwise_factor": min(1.0, rest_comp / rest_eager)}
        return out
    except Exception as e:  # no compiler toolchain: say so in the profile
        return {"skipped": f"torch.compile failed: {type(e).__name__}: {str(e)[:200]}"}


# --------------------------------------------------------------------------


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


def bf16_supported(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_tables(device: str, quick: bool) -> list[str]:
    if quick:
        return ["fp32"]
    tables = ["fp32"]
    if bf16_supported(device):
        tables.append("bf16")
    if device == "cuda":
        tables.append("fp16")
    tables += ["fp32-cl"] + (["bf16-cl"] if "bf16" in tables else [])
    return tables


LIGHT_BUDGET_S = 120   # under it, the peak's GEMMs at the quick sizes


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _measure_device(profile, clock, device, quick, budget_s):
    """The device's constants, once per profile: the per-op overhead, the L2,
    the copy bandwidth by working set, the fp32 peak, the optimizer step."""
    profile["overhead"] = measure_overhead(clock, device, "fp32")
    profile["cache"] = cache_sizes(device)
    bw_sizes = [2 ** p for p in ((14, 18, 22, 24) if quick else (14, 16, 18, 20, 22, 24, 26))]
    if device == "cuda" and not quick:   # beyond a GPU's L2 (50 MB on an H100)
        bw_sizes += [2 ** 28]
    profile["bandwidth"] = measure_bandwidth(clock, device, bw_sizes)
    # the large GEMMs of the peak take tens of seconds on a busy CPU: under 2
    # minutes of budget, the quick sizes (the tables need the time more)
    light = quick or budget_s < LIGHT_BUDGET_S
    profile["peak"] = {"fp32": measure_peak_flops(clock, device, "fp32", light)}
    opt_sizes = [2 ** p for p in ((6, 12, 18, 22) if quick else (6, 10, 14, 17, 20, 22, 24))]
    profile["optimizer"] = measure_optimizer(clock, device, "fp32", opt_sizes)


def calibrate(device: str = "cpu", *, quick: bool = False, budget_s: float | None = None,
              tables: list[str] | None = None, compile: bool | None = None,
              reps: int | None = None, timer: str = "wall", progress=None) -> dict:
    """Run the microbenchmarks and return the profile (a JSON-ready dict).
    ``timer="cpu"``: CPU time instead of wall time (one CPU thread only).
    ``progress(what, done, planned, budget_left_s)``: called as each section
    and each point goes (the CLI's progress bar)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    if timer == "cpu" and (device != "cpu" or torch.get_num_threads() != 1):
        raise ValueError("the CPU-time clock measures one CPU thread: set threads to 1")
    budget_s = budget_s if budget_s is not None else (45.0 if quick else 240.0)
    budget = Budget(budget_s, timer)
    clock = Clock(device, reps or (3 if quick else 5), timer)
    tables = tables or default_tables(device, quick)
    compile = (not quick) if compile is None else compile

    def say(what, done=0, total=1):
        if progress:
            progress(what, done, total, max(0.0, budget_s - budget.elapsed()))
    torch.manual_seed(0)
    load_before = _load()
    profile = {
        "format": PROFILE_FORMAT, "version": PROFILE_VERSION,
        "device": device, "device_name": device_name(device),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": torch.get_num_threads(),
        "quick": quick, "budget_s": budget_s,
        "timing": "median of %d repetitions after a warm-up" % clock.reps,
        "clock": timer,
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                 "load_before": load_before},
        "tables": {},
    }
    # the shares of the budget each section may use, in order
    shares = {"device": 0.08, "tables": 0.85 if compile else 0.97, "compile": 1.0}
    say("overhead, bandwidth, peak", 0, 1)
    _measure_device(profile, clock, device, quick, budget_s)
    say("overhead, bandwidth, peak", 1, 1)
    profile["tables"] = {t: {"conv": [], "linear": [], "ops": {}} for t in tables}
    # the tables: fp32 first and most; the others share what is left
    weights = {t: (3.0 if t == tables[0] else 1.0) for t in tables}   # the first most
    start = budget.until(shares["device"])
    end = budget.until(shares["tables"])
    total_w = sum(weights.values())
    for name in tables:
        dtype, cl = name.split("-")[0], name.endswith("-cl")
        if dtype not in profile["peak"] and not cl:
            profile["peak"][dtype] = measure_peak_flops(clock, device, dtype,
                                                        quick or budget_s < LIGHT_BUDGET_S)
        now = budget.now()
        # never past the tables' end: a section that overran (a busy machine)
        # leaves the tables less, not the run longer than its budget
        stop = min(end, max(now, start) + (end - start) * weights[name] / total_w)
        start = stop
        _fill_table(profile["tables"][name], clock, device, dtype, cl, quick, stop, budget.now,
                    lambda done, total, name=name: say(f"table {name}", done, total))
    if compile and device in ("cpu", "cuda"):
        say("torch.compile", 0, 1)
        left = budget_s - budget.elapsed()
        profile["compile"] = measure_compile(clock, device, "fp32", left)
        say("torch.compile", 1, 1)
    profile["host"]["load_after"] = _load()
    profile["trust"] = assess_calibration(
        cpu_count=os.cpu_count() or 1, threads=torch.get_num_threads(), clock=timer,
        load_before=load_before, load_after=profile["host"]["load_after"],
        spreads=clock.spreads, peaks=profile["peak"],
        native={d: device == "cuda" or (d == "bf16" and bf16_supported(device))
                for d in profile["peak"]})
    profile["elapsed_s"] = round(budget.elapsed(), 1)   # on the budget's clock
    profile["wall_s"] = round(time.perf_counter() - budget.wall_start, 1)
    return profile


def _fill_table(table, clock, device, dtype, channels_last, quick, stop, now=time.perf_counter,
                progress=None):
    """Conv, linear and op points until `stop` (on the clock `now`), the
    kinds sharing the time (profiles/schedule.py); the table's coverage
    (points planned per kind, skipped) recorded beside them."""
    ops = _ops()
    slow = {}   # op -> a size that took long: larger ones extrapolate

    def measure(kind, payload):
        if kind == "op" and payload[1] > slow.get(payload[0], math.inf):
            return False
        try:
            if kind == "conv":
                point, b = payload
                table["conv"].append(measure_conv(clock, device, dtype, channels_last, point, b))
            elif kind == "linear":
                table["linear"].append(measure_linear(clock, device, dtype, *payload))
            else:
                name, size = payload
                factory, shaper = ops[name]
                point = measure_op(clock, device, dtype, channels_last, name, factory,
                                   shaper(size))
                table["ops"].setdefault(name, []).append(point)
                if max(point["forward_s"], point.get("backward_s", 0)) > 0.05:
                    slow[name] = min(size, slow.get(name, math.inf))
            return True
        except (RuntimeError, NotImplementedError) as e:  # a kernel this dtype lacks
            table.setdefault("failed", []).append(f"{kind} {payload}: {str(e)[:120]}")
            return False

    coverage = run_fair(table_jobs(device, channels_last, quick, list(ops)), measure, now,
                        stop, progress)
    table["planned"] = coverage["planned"]
    if coverage["skipped"]:
        table["skipped"] = coverage["skipped"]
    for points in table["ops"].values():
        points.sort(key=lambda p: p["elements"])


__all__ = ["calibrate", "CONV_GRID", "LINEAR_GRID"]
