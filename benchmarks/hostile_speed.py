"""How fast does the CLI refuse a hostile spec? Runs tests/test_hostile_specs.py
(each case a whole `python -m archcalc` process under a 1.5 GB cap) with
ARCHCALC_HOSTILE_TIMES set, then reports the slowest processes against the
target: every refusal within 5 s wall time (README, "Tested as an attacker
would"). The unit tests bound CPU time and memory only; seconds are measured
here, on a machine left otherwise idle.

    python benchmarks/hostile_speed.py [--target 5]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=5.0, help="seconds per process")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        times = os.path.join(folder, "times.jsonl")
        subprocess.run([sys.executable, "-m", "pytest", "tests/test_hostile_specs.py", "-q",
                        "-p", "no:cacheprovider"], cwd=ROOT, check=True,
                       env={**os.environ, "ARCHCALC_HOSTILE_TIMES": times})
        with open(times) as f:
            rows = [json.loads(line) for line in f]
    rows.sort(key=lambda r: -r["seconds"])
    print(f"{len(rows)} CLI processes; slowest:")
    for r in rows[:10]:
        print(f"  {r['seconds']:6.2f} s  {r['test']}")
    over = [r for r in rows if r["seconds"] > args.target]
    print(f"over the {args.target:g} s target: {len(over)}")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
