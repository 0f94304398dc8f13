"""How many CPU threads a training step gets when the user does not say.

A small model's step is dominated by per-operator overhead: each op that
runs on several threads pays a fork/join, and on a core that other processes
share the threads also wait for each other. Measured on the 2-core machine
these sessions share (load average 3.5): LeNet-5 at batch 32 (13 M MACs a
step) ran 2,259 samples/s on one thread and 1,345 on two; ResNet-18 at 32x32,
batch 32 (1.2 G MACs), 93 vs 15; MobileNet-v3-small at 64x64 (0.2 G), 163
vs 21. So a tuned runner gives a step one thread per MACS_PER_THREAD of its
forward work, and never more threads than there are idle physical cores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# forward multiply-accumulates a step needs per thread before a second one pays
MACS_PER_THREAD = 100_000_000


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str

    def describe(self) -> str:
        return f"threads: {self.threads} ({self.reason})"


def physical_cores() -> int:
    """The physical cores this process may run on (SMT siblings counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{base}/physical_package_id") as a, open(f"{base}/core_id") as b:
                cores.add((a.read().strip(), b.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def choose_threads(step_macs: int, device: str, requested: int | None = None,
                   cores: int | None = None, load: float | None = None,
                   environment: dict | None = None, current: int = 1,
                   processes: int = 1) -> ThreadChoice:
    """The thread count for steps of `step_macs` forward MACs (per process).
    `requested` is --threads; an OMP_NUM_THREADS the environment sets (torchrun
    sets 1 per process) is the user's choice too. `current` is torch's count;
    `processes` on this machine share its cores."""
    environment = os.environ if environment is None else environment
    if requested is not None:
        return ThreadChoice(requested, "--threads")
    if not device.startswith("cpu"):
        return ThreadChoice(current, f"torch's default; the model runs on {device}")
    if str(environment.get("OMP_NUM_THREADS", "")).strip().isdigit():
        return ThreadChoice(current, "OMP_NUM_THREADS")
    cores = physical_cores() if cores is None else cores
    processes = max(1, processes)
    by_work = int(step_macs // MACS_PER_THREAD)
    idle = cores if load is None else int(round(cores - load))
    threads = max(1, min(cores // processes, idle // processes, by_work))
    work = f"{_short(step_macs)} forward MACs a step, one thread per {_short(MACS_PER_THREAD)}"
    machine = f"{cores} core{'s' if cores != 1 else ''}" + \
        ("" if load is None else f", load {load:.1f}") + \
        (f", {processes} processes" if processes > 1 else "")
    return ThreadChoice(threads, f"auto: {work}; {machine}")


def _short(n: float) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{n:.0f}"


__all__ = ["ThreadChoice", "choose_threads", "MACS_PER_THREAD"]
