"""Where does `archcalc import` stand on the models people use? Import every
timm model (timm:NAME) and every torchvision classification and segmentation
model at its default input, each in a worker process with a time and a memory
limit, weights on the meta device (CPU where a model cannot be built there),
and record for each: imported or the error, params == sum(p.numel())?, MACs ==
FlopCounterMode / 2 on the meta device?, how many opaque rows (operations
without a kind, measured) it has and which ops a --strict import refuses,
seconds. A model is exact (no opaque row), exact with opaque rows, imported
with figures that differ (with or without opaque rows), or not imported.

    python benchmarks/import_sweep.py                       # everything (hours on 2 cores)
    python benchmarks/import_sweep.py --sample 150          # a deterministic sample across families
    python benchmarks/import_sweep.py --only 'resnet|torchvision' --limit 20 --workers 2

Writes benchmarks/results/import_sweep.json (every record, the summary, the
versions) and benchmarks/results/import_sweep.md (the summary: imports, exact,
per family, the failure families with example models, the slowest 1%), and
prints the summary. docs/import-sweep.md says what the numbers mean.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import signal
import sys
import time
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")

# statuses, best first; OPAQUE is older runs' (opaque rows whose MACs were
# unknown, with --allow-opaque): opaque rows are measured since
EXACT, EXACT_OPAQUE, MISMATCH, OPAQUE_MISMATCH, OPAQUE, FAILED, TIMEOUT, CRASHED = (
    "exact", "exact-opaque", "mismatch", "opaque-mismatch", "opaque", "failed", "timeout",
    "crashed")
STATUSES = (EXACT, EXACT_OPAQUE, MISMATCH, OPAQUE_MISMATCH, OPAQUE, FAILED, TIMEOUT, CRASHED)
WITH_OPAQUE = (EXACT_OPAQUE, OPAQUE_MISMATCH, OPAQUE)
SEGMENTATION_INPUT = (3, 520, 520)   # torchvision's segmentation weights resize to 520


# -- the targets ---------------------------------------------------------------


def timm_targets() -> list[dict]:
    """Every model of timm's registry; its family is the timm module that
    defines it (timm.resnet, timm.vision_transformer)."""
    import timm
    family = {}
    for module in timm.list_modules():
        for name in timm.list_models(module=module):
            family[name] = f"timm.{module}"
    return [{"target": f"timm:{name}", "family": family.get(name, "timm.?"), "kwargs": None}
            for name in timm.list_models()]


def torchvision_targets() -> list[dict]:
    """torchvision's classifiers and segmentation models, weights=None and
    weights_backbone=None (nothing downloads), at the input of their weights'
    preprocessing (inception_v3: 299, segmentation: 520)."""
    import torchvision.models as tvm
    out = []
    for module, prefix in ((tvm, "torchvision.models"), (tvm.segmentation,
                                                          "torchvision.models.segmentation")):
        for name in tvm.list_models(module=module):
            builder = tvm.get_model_builder(name)
            family = "torchvision." + builder.__module__.split("torchvision.models.")[-1]
            kwargs = {"weights": None}
            if module is tvm.segmentation:
                kwargs["weights_backbone"] = None
            out.append({"target": f"{prefix}:{name}", "family": family,
                        "kwargs": json.dumps(kwargs), "input": _torchvision_input(name)})
    return out


def _torchvision_input(name) -> list:
    import torchvision.models as tvm
    try:
        preprocess = tvm.get_model_weights(name).DEFAULT.transforms()
    except Exception:  # no weights: the usual input
        return [3, 224, 224]
    size = getattr(preprocess, "crop_size", None)
    if size:
        return [3, size[0], size[0]]
    return list(SEGMENTATION_INPUT)


def sample_across_families(targets: list[dict], n: int) -> list[dict]:
    """n targets, round-robin over the families (sorted), each family's models
    in a fixed pseudo-random order (a hash of the name): every family is
    represented before any has two, and the same n gives the same sample."""
    by_family = defaultdict(list)
    for t in targets:
        by_family[t["family"]].append(t)
    queues = [sorted(ts, key=lambda t: hashlib.sha1(t["target"].encode()).hexdigest())
              for _, ts in sorted(by_family.items())]
    picked = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(picked) < n:
                picked.append(q[depth])
        depth += 1
    return picked


def select(targets, only=None, sample=None, limit=None, plus=None) -> list[dict]:
    """--only, then --sample, then --limit; --plus adds every target it matches."""
    every = targets
    if only:
        pattern = re.compile(only)
        targets = [t for t in targets if pattern.search(t["target"]) or
                   pattern.search(t["family"])]
    if sample:
        targets = sample_across_families(targets, sample)
    targets = targets[:limit] if limit else targets
    if plus:
        pattern, have = re.compile(plus), {t["target"] for t in targets}
        targets = targets + [t for t in every if pattern.search(t["target"])
                             and t["target"] not in have]
    return targets


# -- one model, in a worker ----------------------------------------------------


class TimedOut(Exception):
    pass


def _alarm(signum, frame):
    raise TimedOut()


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def meta_macs(model, shape):
    """FlopCounterMode's FLOPs / 2 of one forward on the meta device (no data)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    # FlopCounterMode's module tracker wants a grad_fn on every input that
    # requires grad (timm's pit and cait pass a parameter on under no_grad and
    # fail): the count does not depend on it
    for p in model.parameters():
        p.requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape, device="meta"))
    return counter.get_total_flops() // 2


def _build(job, meta):
    from archcalc.torch.importer import targets as import_targets
    built = import_targets.load(job["target"], job.get("kwargs"), meta=meta)
    shape = tuple(job.get("input") or built.default_input)
    size = getattr(built.model, "image_size", None)
    if isinstance(size, int) and job.get("input"):
        # torchvision's ViT-H/14 is built for 224 with weights=None, though its
        # only weights (SWAG) are at 518: the model's own size wins
        shape = (shape[0], size, size)
    return built.model.eval(), shape


def _import(model, shape, job, rec):
    """The Imported of a strict import, or, where it refused ops without a
    kind (their names go in rec), of the default one (opaque rows, measured)."""
    from archcalc.torch import importer
    try:
        return importer.import_module(model, shape, label=job["target"], strict=True)
    except importer.Unsupported as e:
        rec["error"] = first_line(e)
        # "op (computes on the module's parameters ...)" is the same op: one family
        rec["ops"] = sorted({op.split(" (")[0] for op, _ in e.found})
    return importer.import_module(model, shape, label=job["target"])


def attempt(job, meta: bool) -> dict:
    """One import of job's target, weights on meta (or CPU), with its checks."""
    from archcalc.analysis import analyze
    from archcalc.spec.loader import loads
    rec = {"device": "meta" if meta else "cpu"}
    model, shape = _build(job, meta)
    rec["input"] = list(shape)
    rec["params_total"] = sum(p.numel() for p in model.parameters())
    done = _import(model, shape, job, rec)
    rec["tracer"] = done.tracer
    rec["opaque_rows"] = len(done.opaque)
    rec["whole_model"] = done.whole     # the forward as one opaque row
    report = analyze(loads(done.text, file=job["target"]))
    params, macs = report.totals["params"], report.totals["macs"]
    rec["params_spec"] = params if isinstance(params, int) else str(params)
    # parameters the forward never reaches (an auxiliary head) are left out of
    # the spec and said in its notes; counted here so a summary can tell them
    rec["params_unused"] = sum(done.unused.values())
    rec["params_ok"] = rec["params_spec"] == rec["params_total"] - rec["params_unused"]
    rec["macs_spec"] = macs if isinstance(macs, int) else str(macs)
    try:
        rec["macs_ref"] = meta_macs(model if meta else model.to("meta"), shape)
    except Exception as e:   # the reference cannot run: say so, compare nothing
        rec["macs_ref"], rec["macs_ref_error"] = None, first_line(e)
    rec["macs_ok"] = rec["macs_ref"] is not None and rec["macs_spec"] == rec["macs_ref"]
    exact = rec["params_ok"] and rec["macs_ok"]
    if rec["opaque_rows"]:
        rec["status"] = EXACT_OPAQUE if exact else OPAQUE_MISMATCH
    else:
        rec["status"] = EXACT if exact else MISMATCH
    return rec


def measure(job: dict, timeout: float) -> dict:
    """The record of one target: on meta first; on CPU again where meta failed
    for another reason than ops without a kind (a model that computes from
    its weights while it is built)."""
    from archcalc.torch import importer
    rec = {"target": job["target"], "family": job["family"]}
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, int(timeout)))
    try:
        try:
            rec.update(attempt(job, meta=True))
        except (TimedOut, MemoryError):
            raise
        except Exception as e:
            from archcalc.errors import SpecError
            if isinstance(e, (importer.Unsupported, SpecError)):
                raise   # the same on CPU: what the import refuses, not the weights
            rec["meta_error"] = first_line(e)
            rec.update(attempt(job, meta=False))
    except TimedOut:
        rec.update(status=TIMEOUT, error=f"TimedOut: over {timeout:g} s")
    except MemoryError:
        rec.update(status=CRASHED, error="MemoryError: over the memory limit")
    except BaseException as e:  # noqa: BLE001 - the model's code: recorded, never fatal
        rec.update(status=FAILED, error=first_line(e))
    finally:
        signal.alarm(0)
    rec.setdefault("error", None)
    rec["seconds"] = round(time.perf_counter() - start, 3)
    return rec


def worker(conn, timeout, memory_bytes):
    """Import the targets the parent sends, one record back for each."""
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import torch
    torch.set_num_threads(1)
    import warnings
    warnings.simplefilter("ignore")
    while True:
        job = conn.recv()
        if job is None:
            return
        conn.send(measure(job, timeout))


# -- the pool ------------------------------------------------------------------


RECYCLE = 20   # models per worker process before a fresh one


class Pool:
    """N worker processes; a worker past the time limit (plus a grace, for C
    code the alarm cannot interrupt) or dead is replaced and its model
    recorded as a timeout or a crash."""

    def __init__(self, workers, timeout, memory_bytes):
        import multiprocessing as mp
        self.mp = mp.get_context("fork")   # the children share the parent's imports
        self.timeout, self.memory = timeout, memory_bytes
        self.slots = [self._start() for _ in range(workers)]

    def _start(self):
        parent, child = self.mp.Pipe()
        proc = self.mp.Process(target=worker, args=(child, self.timeout, self.memory),
                               daemon=True)
        proc.start()
        return {"proc": proc, "conn": parent, "job": None, "since": 0.0}

    def run(self, jobs, on_record):
        from multiprocessing.connection import wait
        pending = list(reversed(jobs))
        while pending or any(s["job"] for s in self.slots):
            for s in self.slots:
                if s["job"] is None and pending:
                    s["job"], s["since"] = pending.pop(), time.monotonic()
                    s["conn"].send(s["job"])
            busy = {s["conn"]: s for s in self.slots if s["job"]}
            for conn in wait(list(busy), timeout=1.0):
                slot = busy[conn]
                try:
                    rec = conn.recv()
                except (EOFError, OSError):
                    rec = self._lost(slot, CRASHED, "the worker died (memory limit?)")
                job, slot["job"] = slot["job"], None
                slot["done"] = slot.get("done", 0) + 1
                # a worker's address space grows model after model (RLIMIT_AS counts
                # it): a failed allocation is retried once on a fresh worker, and
                # every worker is replaced after RECYCLE models
                retry = rec.get("status") == FAILED and "allocate memory" in (
                    rec.get("error") or "") and not job.get("retried")
                if retry or slot["done"] >= RECYCLE:
                    self._replace(slot)
                if retry:
                    pending.append(dict(job, retried=True))
                    continue
                on_record(rec)
            for i, s in enumerate(self.slots):
                if s["job"] and time.monotonic() - s["since"] > self.timeout + 30:
                    on_record(self._lost(s, TIMEOUT, f"TimedOut: over {self.timeout:g} s "
                                                     "(killed)"))
                    self.slots[i] = self._start()
        for s in self.slots:
            s["conn"].send(None)
            s["proc"].join(5)

    def _restart(self, slot):
        fresh = self._start()
        slot.update(proc=fresh["proc"], conn=fresh["conn"], done=0)

    def _replace(self, slot):
        slot["conn"].send(None)
        slot["proc"].join(5)
        if slot["proc"].is_alive():
            slot["proc"].kill()
            slot["proc"].join()
        self._restart(slot)

    def _lost(self, slot, status, error):
        job = slot["job"]
        slot["proc"].kill()
        slot["proc"].join()
        if status == CRASHED:
            self._restart(slot)
        return {"target": job["target"], "family": job["family"], "status": status,
                "error": error, "seconds": round(time.monotonic() - slot["since"], 3)}


# -- the summary ---------------------------------------------------------------


# the spellings of one operation: torch.nn.functional.linear, torch._C._nn.linear,
# torch.ops.aten.linear.default (torch.export's graph), Tensor.view, operator.matmul
_OP_PREFIX = re.compile(r"^(torch\.nn\.functional\.|torch\._C\._nn\.|torch\.ops\.aten\."
                        r"|torch\._VariableFunctionsClass\.|torch\.|Tensor\.|operator\.)")
_OP_OVERLOAD = re.compile(r"\.(default|Tensor|Scalar|dtype|int|self|dim|using_ints)$")
# an op in Unsupported's message: "torch.nn.functional.batch_norm (why): 33 calls, at"
_OP_IN_MESSAGE = re.compile(r"(?:: |; )([\w.]+)(?: \([^)]*\))?: \d+ calls?, at")


def operation(op: str) -> str:
    """One name for an op's spellings: batch_norm, matmul, view; a module
    class (timm.models.cait.LayerScaleBlockClassAttn) stays whole."""
    if op.startswith("timm.") or ".modules." in op:
        return op
    return _OP_OVERLOAD.sub("", _OP_PREFIX.sub("", op))


def record_ops(rec) -> list[str]:
    """The operations without a kind a record names: its ops, or those of its
    error message where the import failed even with --allow-opaque."""
    ops = rec.get("ops") or _OP_IN_MESSAGE.findall(rec.get("error") or "")
    return sorted({operation(op) for op in ops})


def error_family(rec) -> list[str]:
    """The failure families a record belongs to: one per op without a kind
    (an import can lack several), else its error with names and numbers
    taken out, so one cause groups the models it stops."""
    if rec["status"] in (MISMATCH, OPAQUE_MISMATCH):
        return [f"imports, but {' and '.join(w for w, ok in (('params', rec.get('params_ok')), ('MACs', rec.get('macs_ok'))) if not ok)} differ"]
    ops = record_ops(rec)
    if ops:
        return [f"no kind: {op}" for op in ops]
    text = rec.get("error") or "?"
    text = re.sub(r"cannot import [^:]+:[^:\s]+:?", "cannot import MODEL:", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\d+", "N", text)
    return [text[:160]]


def summarize(records: list[dict]) -> dict:
    """The figures of a sweep: counts by status, per family, the failure
    families (cause -> models), the slowest 1%."""
    n = len(records)
    status = Counter(r["status"] for r in records)
    imported = status[EXACT] + status[MISMATCH]
    families = defaultdict(Counter)
    for r in records:
        families[r["family"]]["models"] += 1
        families[r["family"]][r["status"]] += 1
    causes = defaultdict(list)
    for r in records:
        if r["status"] != EXACT:
            for cause in error_family(r):
                causes[cause].append(r["target"])
    sources = defaultdict(Counter)   # timm, torchvision.models, ....segmentation
    for r in records:
        sources[r["target"].partition(":")[0]]["models"] += 1
        sources[r["target"].partition(":")[0]][r["status"]] += 1
    sole = Counter(ops[0] for ops in map(record_ops, records) if len(ops) == 1)
    slow = sorted(records, key=lambda r: -r.get("seconds", 0))[:max(1, n // 100)] if n else []
    return {
        "models": n,
        "status": {s: status[s] for s in STATUSES},
        "imported": imported,
        "exact": status[EXACT],
        "exact_with_opaque": status[EXACT_OPAQUE],
        "with_opaque": sum(status[s] for s in WITH_OPAQUE),
        "whole_model": sum(1 for r in records if r.get("whole_model")),
        "built_on_cpu": sum(1 for r in records if r.get("device") == "cpu"),
        "params_unused": sum(1 for r in records if r.get("params_unused")),
        "opaque_rows_median": _median([r["opaque_rows"] for r in records
                                       if r["status"] in WITH_OPAQUE]),
        "sources": {k: dict(c) for k, c in sorted(sources.items())},
        "families": {f: dict(c) for f, c in sorted(families.items())},
        "causes": sorted(([cause, len(ts), ts[:5]] for cause, ts in causes.items()),
                         key=lambda c: (-c[1], c[0])),
        "sole_blocker": dict(sole.most_common()),
        "slowest": [[r["target"], r.get("seconds", 0)] for r in slow],
        "seconds_total": round(sum(r.get("seconds", 0) for r in records), 1),
    }


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else None


def _pct(k, n):
    return f"{k} ({100 * k / n:.1f}%)" if n else "0"


def render_markdown(summary: dict, title="Import sweep") -> str:
    n = summary["models"]
    s = summary["status"]
    lines = [f"# {title}", "",
             f"- models: {n}",
             f"- import, with or without opaque rows: "
             f"{_pct(summary['imported'] + summary.get('with_opaque', 0), n)}; exact of "
             f"those: {_pct(summary['exact'] + s.get(EXACT_OPAQUE, 0), summary['imported'] + summary.get('with_opaque', 0))}",
             f"- import (no opaque row): {_pct(summary['imported'], n)}",
             f"- exact (params == sum(numel), MACs == FlopCounterMode / 2 on meta): "
             f"{_pct(summary['exact'], n)}",
             f"- imported, figures differ: {s[MISMATCH]}",
             f"- with opaque rows (measured, not derived): {summary.get('with_opaque', 0)} "
             f"(median opaque rows: {summary['opaque_rows_median']}); exact: "
             f"{s.get(EXACT_OPAQUE, 0)}, figures differ: {s.get(OPAQUE_MISMATCH, 0)}, "
             f"MACs unknown (older runs' --allow-opaque): {s.get(OPAQUE, 0)}; the whole "
             f"forward as one opaque row: {summary.get('whole_model', 0)}",
             f"- not imported: {s[FAILED]}; time limit: {s[TIMEOUT]}; "
             f"crashed: {s[CRASHED]}",
             f"- built on CPU (not on the meta device): {summary.get('built_on_cpu', 0)}",
             f"- imported with parameters the forward never uses left out (said in the "
             f"spec's notes): {summary.get('params_unused', 0)}",
             f"- worker seconds in all: {summary['seconds_total']}", ""]
    for source, c in summary.get("sources", {}).items():
        lines.insert(-1, f"- {source}: {c.get(EXACT, 0)} of {c['models']} exact, "
                         f"{c.get(EXACT, 0) + c.get(MISMATCH, 0)} import")
    lines += ["## Failure families (the work list)", "",
              "| cause | models | examples |", "|---|---:|---|"]
    for cause, count, examples in summary["causes"]:
        lines.append(f"| {_cell(cause)} | {count} | {_cell(', '.join(examples))} |")
    if summary["sole_blocker"]:
        lines += ["", "Models one op stands between them and an import (the only op "
                  "without a kind):", ""]
        lines += [f"- {op}: {k}" for op, k in summary["sole_blocker"].items()]
    lines += ["", "## Per family", "", "| family | models | exact | imported | opaque | failed |",
              "|---|---:|---:|---:|---:|---:|"]
    for family, c in summary["families"].items():
        failed = c.get(FAILED, 0) + c.get(TIMEOUT, 0) + c.get(CRASHED, 0)
        opaque = sum(c.get(s, 0) for s in WITH_OPAQUE)
        lines.append(f"| {family} | {c['models']} | {c.get(EXACT, 0)} | "
                     f"{c.get(EXACT, 0) + c.get(MISMATCH, 0)} | {opaque} | {failed} |")
    lines += ["", "## Slowest 1%", ""]
    lines += [f"- {t}: {sec:.1f} s" for t, sec in summary["slowest"]]
    return "\n".join(lines) + "\n"


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


# -- main ----------------------------------------------------------------------


def versions() -> dict:
    import timm
    import torch
    import torchvision
    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": sys.version.split()[0]}


def write(records, args, out_dir, done=True, versions_of=None):
    summary = summarize(records)
    os.makedirs(out_dir, exist_ok=True)
    data = {"args": vars(args), "versions": versions_of or versions(), "complete": done,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "summary": summary, "records": sorted(records, key=lambda r: r["target"])}
    for name, text in (("import_sweep.json", json.dumps(data, indent=1)),
                       ("import_sweep.md", render_markdown(summary) + _footer(data))):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out_dir, name))
    return summary


def _footer(data):
    v = data["versions"]
    a = data["args"]
    return (f"\n---\n{data['date']}; torch {v['torch']}, torchvision {v['torchvision']}, "
            f"timm {v['timm']}; --workers {a['workers']} --timeout {a['timeout']} "
            f"--sample {a['sample']} --only {a['only']} --limit {a['limit']} --plus {a.get('plus')}"
            f"{'' if data['complete'] else ' (INCOMPLETE: the run was still going)'}"
            f"{'; records of a later run merged' if a.get('merged') else ''}\n")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", metavar="REGEX", help="targets (or families) that match")
    ap.add_argument("--limit", type=int, metavar="N", help="the first N targets")
    ap.add_argument("--sample", type=int, metavar="N",
                    help="a deterministic sample of N across families")
    ap.add_argument("--plus", metavar="REGEX",
                    help="also every target that matches, beyond --only/--sample/--limit")
    ap.add_argument("--timeout", type=float, default=180, metavar="S",
                    help="seconds per model [180]")
    ap.add_argument("--memory-gb", type=float, default=12,
                    help="RLIMIT_AS of each worker, GiB [12]; 0: none")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N")
    ap.add_argument("--out", default=RESULTS, help="the folder of the results")
    ap.add_argument("--resume", metavar="JSON",
                    help="keep the records of this results file and import only the "
                         "selected targets it lacks")
    ap.add_argument("--from-json", nargs="+", metavar="JSON",
                    help="import nothing: summarize the records of these results files (a "
                         "later file's record of a target replaces an earlier one's)")
    return ap.parse_args(argv)


def from_json(args):
    records, versions_of, complete, run_args = {}, None, True, args
    for path in args.from_json:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        records.update((r["target"], r) for r in data["records"])
        versions_of, complete = data["versions"], complete and data.get("complete", True)
        if run_args is args:   # the first file's run; later files' records replace its own
            run_args = argparse.Namespace(**{**data["args"], "from_json": None,
                                             "merged": len(args.from_json) - 1})
    summary = write(list(records.values()), run_args, args.out, complete, versions_of)
    print(render_markdown(summary), end="")


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        return from_json(args)
    import archcalc.torch.importer  # noqa: F401  (loaded once; the forked workers share it)
    jobs = select(timm_targets() + torchvision_targets(), args.only, args.sample, args.limit,
                  args.plus)
    records = []
    if args.resume:   # the records of an earlier run: kept, their targets not imported again
        with open(args.resume, encoding="utf-8") as f:
            records = json.load(f)["records"]
        done = {r["target"] for r in records}
        jobs = [j for j in jobs if j["target"] not in done]
    print(f"{len(jobs)} models, {args.workers} workers, {args.timeout:g} s each",
          file=sys.stderr, flush=True)
    total = len(records) + len(jobs)

    def on_record(rec):
        records.append(rec)
        print(f"[{len(records)}/{total}] {rec['status']:8} {rec['seconds']:7.1f} s "
              f"{rec['target']} {rec.get('error') or ''}"[:240], file=sys.stderr, flush=True)
        if len(records) % 10 == 0:
            write(records, args, args.out, done=False)

    Pool(args.workers, args.timeout, int(args.memory_gb * 2**30)).run(jobs, on_record)
    summary = write(records, args, args.out)
    print(render_markdown(summary), end="")


if __name__ == "__main__":
    main()
