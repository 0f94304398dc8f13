"""How fast is `archcalc sweep`? Milliseconds per point of 1,000-point sweeps
of a ResNet-50-sized and an EfficientNet-sized spec, beside the wall time of
one `archcalc table` process on the same spec, all in one run.

Two kinds of grid per spec, because they cost differently:
- "width x depth": nearly every point is another graph (the engine's full
  cost: bind, build, analyse; widths that make_divisible rounds to the same
  channels share one, and the number of graphs built is printed);
- "width x resolution": a few widths at 250 input sizes, where the built
  graph is shared and only the analysis runs again.

Both wall time and the process's CPU time are reported: on a machine shared
with other jobs (load above the core count) wall time says more about the
neighbours than about archcalc. Target (the issue): at most 10 ms per point
for ResNet-50 on a 2-core machine, goal 2 ms.

    python benchmarks/sweep_speed.py [--points 1000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# spec, label, the "rebuilt" grids, the "reused" grids (each 1,000 points); the
# depth multipliers stay near 1 so that the nets stay ResNet-50- and B0-sized
# (34 to 67 weighted layers for the ResNet)
CASES = (
    ("specs/resnet50_scaled.toml", "ResNet-50",
     ["widen=0.5:1.495:0.005", "depth=0.67,0.84,1,1.17,1.34"],
     ["widen=0.75,1,1.25,1.5", "res=128:377:1"]),
    ("specs/efficientnet_b0.toml", "EfficientNet-B0",
     ["width=0.5:1.495:0.005", "depth=0.6,0.8,1,1.2,1.4"],
     ["width=1,1.1,1.2,1.4", "res=128:377:1"]),
)


def table_process(spec: str, repeat: int) -> float:
    """Median wall seconds of `python -m archcalc table SPEC --format json`."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "archcalc", "table", spec, "--format", "json"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": ROOT})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_point(spec: str, grids: list, points: int) -> tuple[float, float, int, int]:
    """(wall ms, CPU ms) per point of one sweep in this process, its size, and
    the graphs it built."""
    from archcalc.sweep import sweep
    from archcalc.sweep.space import parse_grid
    sizes = [len(parse_grid(g).values) for g in grids]
    assert sizes[0] * sizes[1] == points, sizes
    uses_res = any(g.startswith("res=") for g in grids)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = sweep(os.path.join(ROOT, spec), grids, input="3,res,res" if uses_res else None)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = len(result.points)
    assert not result.errors, result.errors
    return wall / n * 1e3, cpu / n * 1e3, n, result.evaluator.built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    print(f"{'spec':<16} {'grid':<22} {'points':>6} {'wall ms/pt':>10} {'CPU ms/pt':>10} "
          f"{'graphs':>6} {'table process s':>16}")
    for spec, label, rebuilt, reused in CASES:
        table_s = table_process(spec, args.repeat)
        for name, grids in (("width x depth", rebuilt), ("width x resolution", reused)):
            best = min((per_point(spec, grids, args.points) for _ in range(args.repeat)),
                       key=lambda r: r[1])
            print(f"{label:<16} {name:<22} {best[2]:>6} {best[0]:>10.2f} {best[1]:>10.2f} "
                  f"{best[3]:>6} {table_s:>16.2f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
