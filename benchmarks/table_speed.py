"""How fast is `archcalc table`? Whole-process wall time of the CLI next to
`python -c "import torch"` measured in the same run (target: ratio <= 0.25),
and the engine's in-process time for a stack of N vs 10N layers (target:
10x the layers costs at most 12x the time).

    python benchmarks/table_speed.py [--repeat 5]
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


def wall(cmd, repeat):
    """Median wall time of a whole process (this checkout's archcalc first on
    the path); import_speed.py times its processes with it too."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": ROOT})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def deep_spec(n: int) -> str:
    layers = ",\n".join('  {conv = 16, kernel = 3, padding = 1, batch_norm = true, '
                        'activation = "relu"}' for _ in range(n))
    return f'[model]\nname = "deep{n}"\ninput = [16, 32, 32]\nlayers = [\n{layers},\n]\n'


def engine_time(n: int, repeat: int) -> float:
    from archcalc.analysis import analyze
    from archcalc.spec.loader import loads
    text = deep_spec(n)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        analyze(loads(text))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    specs = ["specs/vgg16.toml"] + [s for s in ("specs/preact_resnet1001_cifar.toml",)
                                    if os.path.exists(os.path.join(ROOT, s))]
    torch_import = wall([sys.executable, "-c", "import torch"], args.repeat)
    print(f"python -c 'import torch'                 {torch_import:7.3f} s  (reference)")
    for spec in specs:
        t = wall([sys.executable, "-m", "archcalc", "table", spec], args.repeat)
        verdict = "ok" if t / torch_import <= 0.25 else "OVER TARGET"
        print(f"archcalc table {spec:<28} {t:7.3f} s  ratio {t / torch_import:.3f} "
              f"(target <= 0.25: {verdict})")
    small, large = engine_time(100, args.repeat), engine_time(1000, args.repeat)
    ratio = large / small
    print(f"engine, 100 conv+bn+relu rows            {small * 1000:7.1f} ms")
    print(f"engine, 1000 conv+bn+relu rows           {large * 1000:7.1f} ms  "
          f"ratio {ratio:.1f}x for 10x the layers (target <= 12x: "
          f"{'ok' if ratio <= 12 else 'OVER TARGET'})")


if __name__ == "__main__":
    main()
