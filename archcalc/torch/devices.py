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

    def flops(self, dtype: str) -> float:
        return self.tflops.get(dtype, self.tflops["fp32"]) * 1e12

    @property
    def bandwidth(self) -> float:
        return self.bandwidth_tbs * 1e12


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


def measure_peak(device: str, dtype: str = "fp32", repeat: int = 5) -> Peak:
    """Time a large matmul (FLOP/s) and a large copy (bytes/s) on the device."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    n = 8192 if device == "cuda" else 1536
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    flops = 2 * n ** 3 / best
    src = torch.empty(256 * 2**20 // 4 if device == "cuda" else 32 * 2**20 // 4,
                      device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    best_copy = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best_copy = min(best_copy, time.perf_counter() - t)
    bandwidth = 2 * src.numel() * 4 / best_copy  # read + write
    name = torch.cuda.get_device_name() if device == "cuda" else f"{device} ({torch.get_num_threads()} threads)"
    return Peak(name, {dtype: flops / 1e12, "fp32": flops / 1e12}, bandwidth / 1e12,
                source="measured: matmul and copy")
