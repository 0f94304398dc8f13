"""How fast is `archcalc import`, and is the analysis of an imported spec as
fast as that of the shipped one? For ResNet-50 and ViT-B/16:

- the import in process: building torchvision's model (weights on the meta
  device, as the figures need only shapes; and with real weights, as the CLI
  does) apart from archcalc's trace, probe and spec writing;
- the whole `archcalc import torchvision.models:NAME -o FILE` process;
- `archcalc table FILE` on the imported spec next to `archcalc table` on the
  shipped spec (target: the imported spec's table within 1.5x of the shipped
  one's; both are pure Python, no torch).

    python benchmarks/import_speed.py [--repeat 3] [--models resnet50,vit_b_16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


from table_speed import wall  # noqa: E402  (this folder is on the path: a script)


def in_process(name, repeat):
    """Medians of: construction on meta, with weights, import_module; and the
    first import_module of the process (caches cold)."""
    import torchvision

    from archcalc.torch import importer
    build, imp, real = [], [], []
    for _ in range(repeat):
        t = time.perf_counter()
        with importer.empty_weights():
            model = torchvision.models.get_model(name, weights=None)
        t1 = time.perf_counter()
        done = importer.import_module(model, (3, 224, 224), label=f"torchvision.models:{name}")
        t2 = time.perf_counter()
        build.append(t1 - t)
        imp.append(t2 - t1)
        t = time.perf_counter()
        torchvision.models.get_model(name, weights=None)
        real.append(time.perf_counter() - t)
    return (statistics.median(build), statistics.median(real), statistics.median(imp), imp[0],
            done)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default="resnet50,vit_b_16")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    py = sys.executable
    torch_import = wall([py, "-c", "import torch, torchvision"], args.repeat)
    print(f"python -c 'import torch, torchvision'          {torch_import:7.3f} s  (reference)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            meta, real, imp, first, done = in_process(name, args.repeat)
            print(f"{name}: construct on meta {meta:.3f} s, with weights {real:.3f} s; "
                  f"import (trace, probe, spec) {imp:.3f} s, the process's first {first:.3f} s; "
                  f"{len(done.text.splitlines())} lines, {done.params:,} params")
            out = os.path.join(tmp, f"{name}.toml")
            cli = wall([py, "-m", "archcalc", "import", f"torchvision.models:{name}", "-o", out],
                       args.repeat)
            print(f"  archcalc import torchvision.models:{name:<10}  {cli:7.3f} s  (whole process)")
            imported = wall([py, "-m", "archcalc", "table", out], args.repeat)
            shipped_path = os.path.join(ROOT, "specs", f"{name}.toml")
            line = f"  archcalc table (imported spec)               {imported:7.3f} s"
            if os.path.exists(shipped_path):
                shipped = wall([py, "-m", "archcalc", "table", shipped_path], args.repeat)
                ratio = imported / shipped
                verdict = "ok" if ratio <= 1.5 else "OVER TARGET"
                line += (f"  vs shipped spec {shipped:.3f} s: ratio {ratio:.2f} "
                         f"(target <= 1.5: {verdict})")
            print(line)


if __name__ == "__main__":
    main()
