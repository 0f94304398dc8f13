"""Peak FLOP/s and memory bandwidth of common accelerators, from their vendors'
data sheets (dense, no sparsity), or measured on the spot (`--peak measure`)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Peak:
    name: str
    tflops: dict        # dtype -> TFLOP/s (dense tensor-core rates for bf16/fp16/tf32)
    bandwidth_tbs: float
    source: str = "data sheet"
    # measured: (working-set bytes, bytes/s) of copies, small (cache) to large
    curve: tuple = ()

    def flops(self, dtype: str) -> float:
        return self.tflops.get(dtype, self.tflops["fp32"]) * 1e12

    @property
    def bandwidth(self) -> float:
        return self.bandwidth_tbs * 1e12

    def bandwidth_at(self, nbytes: float) -> float:
        """The bandwidth a working set of `nbytes` can reach: the best copy measured
        at half that size or more (caches are faster than memory), so that the
        roofline stays a lower bound of a layer's time; the data sheet's without
        a measured curve."""
        fits = [bw for size, bw in self.curve if size >= nbytes / 2]
        if fits:
            return max(fits)
        return self.curve[-1][1] if self.curve else self.bandwidth


# name fragment (as torch.cuda.get_device_name prints it) -> peaks
KNOWN = [
    ("H200", Peak("NVIDIA H200", {"bf16": 989, "fp16": 989, "fp32": 67}, 4.8)),
    ("H100 NVL", Peak("NVIDIA H100 NVL", {"bf16": 835, "fp16": 835, "fp32": 60}, 3.9)),
    ("H100 PCIe", Peak("NVIDIA H100 PCIe", {"bf16": 756, "fp16": 756, "fp32": 51}, 2.0)),
    ("H100", Peak("NVIDIA H100 SXM", {"bf16": 989, "fp16": 989, "fp32": 67}, 3.35)),
    ("A100-SXM4-80GB", Peak("NVIDIA A100 80GB", {"bf16": 312, "fp16": 312, "fp32": 19.5}, 2.04)),
    ("A100", Peak("NVIDIA A100 40GB", {"bf16": 312, "fp16": 312, "fp32": 19.5}, 1.56)),
    ("L40S", Peak("NVIDIA L40S", {"bf16": 362, "fp16": 362, "fp32": 91.6}, 0.864)),
    ("L4", Peak("NVIDIA L4", {"bf16": 121, "fp16": 121, "fp32": 30.3}, 0.3)),
    ("A10", Peak("NVIDIA A10", {"bf16": 125, "fp16": 125, "fp32": 31.2}, 0.6)),
    ("RTX 4090", Peak("NVIDIA RTX 4090", {"bf16": 165, "fp16": 165, "fp32": 82.6}, 1.01)),
    ("RTX 3090", Peak("NVIDIA RTX 3090", {"bf16": 71, "fp16": 71, "fp32": 35.6}, 0.936)),
    ("V100", Peak("NVIDIA V100", {"fp16": 125, "bf16": 15.7, "fp32": 15.7}, 0.9)),
    ("T4", Peak("NVIDIA T4", {"fp16": 65, "bf16": 8.1, "fp32": 8.1}, 0.32)),
]


def known_peak(device: str) -> Peak | None:
    if device != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for fragment, peak in KNOWN:
        if fragment in name:
            return peak
    return None


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":  # pragma: no cover - Apple only
        torch.mps.synchronize()


def _best(fn, device, repeat):
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def measure_peak(device: str, dtype: str = "fp32", repeat: int = 5) -> Peak:
    """An upper bound of the device's FLOP/s and bandwidth, measured: the best
    of several GEMMs (square, of several sizes, and the tall-skinny shapes
    convolutions lower to) and of a few convolutions, on all the threads; and
    the best copy bandwidth by working-set size, from cache-resident to
    memory-bound. One GEMM size alone is no peak: a conv layer could beat it
    (the 101.6% `--peak measure` used to report on a CPU)."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    best_flops = 0.0
    shapes = [(n, n, n) for n in ((2048, 4096, 8192) if device == "cuda"
                                  else (512, 1024, 1536, 2048))]
    shapes += [(8 * 28 * 28, 1152, 128), (8 * 14 * 14, 2304, 256), (8 * 56 * 56, 576, 64)]
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=torch_dtype)
        b = torch.randn(k, n, device=device, dtype=torch_dtype)
        best_flops = max(best_flops, 2 * m * k * n / _best(lambda: a @ b, device, repeat))
    with torch.no_grad():
        for c, h in ((256, 14), (128, 28), (512, 7)):
            conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, torch_dtype)
            x = torch.randn(8, c, h, h, device=device, dtype=torch_dtype)
            flops = 2 * 8 * c * h * h * c * 9
            best_flops = max(best_flops, flops / _best(lambda: conv(x), device, repeat))
    curve = []
    sizes = (2**20, 2**24, 2**28) if device == "cuda" else (2**15, 2**18, 2**21, 2**24, 2**26)
    for nbytes in sizes:
        src = torch.empty(nbytes // 4, device=device)
        dst = torch.empty_like(src)
        curve.append((2 * nbytes, 2 * nbytes / _best(lambda: dst.copy_(src), device, repeat)))
    bandwidth = curve[-1][1]   # the largest working set: memory, not a cache
    name = torch.cuda.get_device_name() if device == "cuda" else f"{device} ({torch.get_num_threads()} threads)"
    return Peak(name, {dtype: best_flops / 1e12, "fp32": best_flops / 1e12}, bandwidth / 1e12,
                source="measured: best of GEMMs and convs; copies by working set",
                curve=tuple(curve))
