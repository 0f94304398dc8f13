"""How close `archcalc predict` comes to the measured step time.

One command: calibrate this device once (or read --profile), then for every
shipped spec that fits, at batches 1, 8 and 32, inference and train, time the
step with `archcalc bench`'s runner and predict it from the profile, in the
same run. Prints the MAPE (mean absolute percentage error) over the
acceptance nets at batch 8, over every point, and over the held-out nets,
and the worst cases; writes results under benchmarks/results/predict/.

    python benchmarks/predict_accuracy.py                      # calibrate + measure
    python benchmarks/predict_accuracy.py --profile cpu.json   # reuse a profile
    python benchmarks/predict_accuracy.py --specs resnet18,vgg11 --batches 8
    python benchmarks/predict_accuracy.py --threads 2 --clock wall  # an idle CPU, 2 threads
    python benchmarks/predict_accuracy.py --device cuda --amp bf16 --batches 64 # a GPU

Measured = the median step of `--steps` timed steps (after `--warmup`) of
`archcalc bench`'s runner, the median of `--repeats` such runs; the load
average is recorded beside every point: on a shared machine timings are
noisy. On a CPU the default (`--threads 1 --clock cpu`) times calibration
and steps by the process's CPU time instead of the wall clock: on a machine others load, one
thread's CPU time is what the step costs without the time the others held
the core (both clocks are recorded either way).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ACCEPTANCE = ["resnet18", "vgg11", "googlenet", "densenet121", "alexnet", "mobilenet_v2"]
HELD_OUT = ["resnet34", "resnet50", "vgg16", "zfnet", "resnext50_32x4d", "se_resnet50",
            "inception_v3", "lenet5", "nin_cifar", "resnet110_cifar", "mobilenet_v3_large",
            "shufflenet_v2_x1_0", "efficientnet_b0", "squeezenet1_0", "vit_b_16"]


def load_avg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", help="a profile to reuse instead of calibrating")
    ap.add_argument("--budget-s", type=float, default=240, help="calibration budget")
    ap.add_argument("--tables", default=None,
                    help="the profile's tables [the dtype the steps run in: fp32, or --amp's]")
    ap.add_argument("--specs", default=None, help="comma-separated spec names")
    ap.add_argument("--held-out", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--modes", default="inference,train")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-point-s", type=float, default=90,
                    help="skip a point whose predicted measuring time exceeds this (never "
                         "an acceptance net at the acceptance batch)")
    ap.add_argument("--max-gb", type=float, default=5.0,
                    help="skip a point whose predicted peak memory exceeds this (a shared machine)")
    ap.add_argument("--memory-check", action=argparse.BooleanOptionalAction, default=True,
                    help="bench's upper bound against the RAM available (--no-memory-check: "
                         "only --max-gb, the predicted step memory)")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads [a CPU: 1; a GPU: torch's default]")
    ap.add_argument("--clock", choices=("wall", "cpu"), default=None,
                    help="cpu: the process's CPU time (one thread) [a CPU at one thread: cpu; "
                         "else wall]")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: the GPU acceptance (e.g. --batches 64 --amp bf16)")
    ap.add_argument("--amp", choices=("bf16", "fp16"), default=None,
                    help="autocast the steps (the profile needs that dtype's table)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "predict"))
    args = ap.parse_args()

    import torch
    # a CPU by default: one thread timed by the process's CPU time, the one
    # configuration that measures the same on a machine others load (two
    # threads on two shared cores: passes of one point 2-15x apart)
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.clock is None:
        args.clock = "cpu" if args.device == "cpu" and args.threads == 1 else "wall"
    if args.threads:
        torch.set_num_threads(args.threads)
    from archcalc import bundled
    from archcalc.errors import SpecError
    from archcalc.graph import build_graph
    from archcalc.predict import Profile, load_profile, predict
    from archcalc.spec.loader import load
    from archcalc.torch.bench import Runner, check_memory, predicted_memory
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    if args.clock == "cpu" and (args.device != "cpu" or torch.get_num_threads() != 1):
        ap.error("--clock cpu needs --threads 1")

    def measure(graph, batch, mode):
        """(wall, cpu) median step seconds of one run of the bench's runner."""
        runner = Runner(graph, args.device, mode, args.amp, False, False)
        x = runner.batch_input(batch)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.warmup):
            runner.step(x)
        wall, cpu = [], []
        for _ in range(args.steps):
            t, c = time.perf_counter(), time.process_time()
            runner.step(x)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - t)
        peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else None
        del runner, x
        if args.device == "cuda":
            torch.cuda.empty_cache()
        return statistics.median(wall), statistics.median(cpu), peak

    os.makedirs(args.out, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if args.profile:
        profile = load_profile(args.profile)
        profile_path = args.profile
    else:
        from archcalc.torch.calibrate import calibrate
        t = time.perf_counter()
        print(f"calibrating (budget {args.budget_s:.0f} s, load {load_avg()}) ...", flush=True)
        data = calibrate(args.device, budget_s=args.budget_s, timer=args.clock,
                         tables=(args.tables or args.amp or "fp32").split(","),
                         compile=False,
                         progress=lambda what, done, total, left: (
                             done == total or done % 50 == 0) and print(
                             f"  {what}: {done}/{total} ({left:.0f} s of the budget left)",
                             flush=True))
        stamp = started.replace(":", "").replace("-", "")[:15]
        profile_path = os.path.join(args.out, f"profile-{stamp}.json")
        with open(profile_path, "w") as fh:
            json.dump(data, fh, indent=1)
        profile = Profile(data, profile_path)
        print(f"calibrated in {time.perf_counter() - t:.0f} s -> {profile_path}", flush=True)

    names = args.specs.split(",") if args.specs else \
        ACCEPTANCE + (HELD_OUT if args.held_out else [])
    available = set(bundled.names())
    batches = [int(b) for b in args.batches.split(",")]
    modes = args.modes.split(",")
    main_batch = 8 if 8 in batches else batches[0]   # the acceptance batch (a GPU: 64)
    plan = []   # (name, group, graph, mode, batch, prediction)
    for name in names:
        if name not in available:
            print(f"{name}: not shipped, skipped", flush=True)
            continue
        graph = build_graph(load(bundled.resolve(name)))
        for mode in modes:
            for batch in batches:
                group = "acceptance" if name in ACCEPTANCE else "held-out"
                try:
                    if args.memory_check:
                        check_memory(graph, [batch], mode, args.amp, args.device)
                except SpecError as e:
                    print(f"{name} {mode} b{batch}: skipped ({e})", flush=True)
                    continue
                need = predicted_memory(graph, batch, mode, args.amp, args.device)
                if args.device == "cpu" and need > args.max_gb * 1e9:
                    print(f"{name} {mode} b{batch}: skipped (predicted {need / 1e9:.1f} GB "
                          f"> --max-gb {args.max_gb})", flush=True)
                    continue
                pred, = predict(graph, profile, batches=[batch], mode=mode, amp=args.amp)
                cost = pred.step_ms / 1e3 * (args.warmup + args.steps) * args.repeats
                # the acceptance nets at the acceptance batch are always measured
                required = group == "acceptance" and batch == main_batch
                if cost > args.max_point_s and not required:
                    print(f"{name} {mode} b{batch}: skipped (about {cost:.0f} s to measure)",
                          flush=True)
                    continue
                plan.append((name, group, graph, mode, batch, pred))
    # the repeats are passes over every point: a burst of load hits one run of
    # a point, not all of them
    runs = {i: ([], [], []) for i in range(len(plan))}
    peaks = {}
    for rep in range(args.repeats):
        for i, (name, group, graph, mode, batch, pred) in enumerate(plan):
            walls, cpus, loads = runs[i]
            loads.append(load_avg())
            wall, cpu, peak = measure(graph, batch, mode)
            if peak is not None:
                peaks[i] = max(peaks.get(i, 0), peak)
            walls.append(wall * 1e3)
            cpus.append(cpu * 1e3)
            now = (cpus if args.clock == "cpu" else walls)[-1]
            print(f"pass {rep + 1}/{args.repeats} {name:18s} {mode:9s} b{batch:<3d} predicted "
                  f"{pred.step_ms:10.1f} ms  measured {now:10.1f} ms  "
                  f"({(pred.step_ms - now) / now:+.1%}, load {loads[-1]})", flush=True)
    points = []
    for i, (name, group, graph, mode, batch, pred) in enumerate(plan):
        walls, cpus, loads = runs[i]
        medians = cpus if args.clock == "cpu" else walls
        measured = statistics.median(medians)
        error = (pred.step_ms - measured) / measured
        spread = (max(medians) - min(medians)) / measured
        points.append({"spec": name, "group": group, "mode": mode, "batch": batch,
                       "predicted_ms": round(pred.step_ms, 3),
                       "measured_ms": round(measured, 3),
                       "error": round(error, 4), "runs_ms": [round(m, 3) for m in medians],
                       "spread": round(spread, 4), "load": loads,
                       "wall_ms": round(statistics.median(walls), 3),
                       "cpu_ms": round(statistics.median(cpus), 3),
                       "predicted_forward_ms": round(pred.forward_ms, 3),
                       "predicted_backward_ms": round(pred.backward_ms, 3),
                       "predicted_optimizer_ms": round(pred.optimizer_ms, 3)})
        if i in peaks:   # CUDA: the allocator's peak beside the predicted step memory
            points[-1].update(
                measured_memory_bytes=peaks[i],
                predicted_memory_bytes=predicted_memory(graph, batch, mode, args.amp,
                                                        args.device))
    print()
    for p in points:
        print(f"{p['spec']:18s} {p['mode']:9s} b{p['batch']:<3d} predicted "
              f"{p['predicted_ms']:10.1f} ms  measured {p['measured_ms']:10.1f} ms  "
              f"error {p['error']:+6.1%}  (runs spread {p['spread']:.0%})")

    def mape(sel):
        return statistics.mean(abs(p["error"]) for p in sel) if sel else None

    accepted = [p for p in points if p["group"] == "acceptance" and p["batch"] == main_batch]
    accept_key = f"acceptance_batch{main_batch}_mape"
    summary = {
        accept_key: mape(accepted),
        "acceptance_all_mape": mape([p for p in points if p["group"] == "acceptance"]),
        "held_out_mape": mape([p for p in points if p["group"] == "held-out"]),
        "all_mape": mape(points),
        f"per_net_batch{main_batch}": {f"{p['spec']} {p['mode']}": p["error"] for p in accepted},
        "nets": len({p["spec"] for p in points}),
        "points": len(points),
    }
    worst = sorted(points, key=lambda p: -abs(p["error"]))[:8]
    print()
    for key in (accept_key, "acceptance_all_mape", "held_out_mape", "all_mape"):
        v = summary[key]
        print(f"{key:26s} {'-' if v is None else f'{v:.1%}'}")
    print("worst cases:")
    for p in worst:
        print(f"  {p['spec']} {p['mode']} b{p['batch']}: predicted {p['predicted_ms']:.1f} ms, "
              f"measured {p['measured_ms']:.1f} ms ({p['error']:+.1%})")
    result = {
        "started": started, "finished": datetime.datetime.now(datetime.timezone.utc)
        .isoformat(timespec="seconds"),
        "device": profile.device_name, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "profile": profile_path,
        "method": {"warmup": args.warmup, "steps": args.steps, "repeats": args.repeats,
                   "clock": args.clock, "device": args.device, "amp": args.amp,
                   "measured": "median of the repeats' median steps (archcalc bench runner)"},
        "summary": summary, "worst": worst, "points": points,
    }
    stamp = started.replace(":", "").replace("-", "")[:15]
    path = os.path.join(args.out, f"accuracy-{stamp}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
