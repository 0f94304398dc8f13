"""Render predictions (`archcalc predict`) and profiles (`archcalc calibrate`)."""
from __future__ import annotations

from .safe import markup

BOUND_STYLE = {"compute": "{}", "memory": "[yellow]{}[/]", "overhead": "[magenta]{}[/]"}


def render_rich(predictions, profile, console, layers: bool = True) -> None:
    from rich.table import Table
    first = predictions[0]
    train = first.mode == "train"
    if layers:
        for p in predictions:
            render_layers(p, console)
    t = Table(title=f"{markup(first.model)}: predicted {first.mode} step ({first.dtype}) on "
                    f"{markup(profile.device_name)}", header_style="bold")
    cols = ["batch", "step (ms)", "forward (ms)"]
    if train:
        cols += ["backward (ms)", "optimizer (ms)"]
    cols += ["samples/s", "compute", "memory", "overhead"]
    for col in cols:
        t.add_column(col, justify="right")
    for p in predictions:
        total = sum(p.bound_ms.values()) or 1.0
        row = [str(p.batch), f"{p.step_ms:,.2f}", f"{p.forward_ms:,.2f}"]
        if train:
            row += [f"{p.backward_ms:,.2f}", f"{p.optimizer_ms:,.2f}"]
        row += [f"{p.samples_per_s:,.1f}"] + [f"{p.bound_ms[k] / total:.0%}"
                                              for k in ("compute", "memory", "overhead")]
        t.add_row(*row)
    console.print(t)
    s = profile.summary
    about = [str(s["device_name"])] + [f"torch {s['torch']}"] * bool(s.get("torch")) + \
        [str(s["date"])] * bool(s.get("date")) + ["quick"] * bool(s.get("quick")) + \
        ["measured under load"] * bool(s.get("measured_under_load"))
    console.print(f"profile: {markup(s['file'])} ({markup(', '.join(about))}); compute / "
                  "memory / overhead: the share of the layers' time bound by each.",
                  style="dim", highlight=False)
    notes = []
    for p in predictions:
        notes += [n for n in p.notes if n not in notes]
    for note in notes:
        console.print(f"note: {markup(note)}", style="dim", highlight=False)


def render_layers(p, console) -> None:
    from rich.table import Table
    train = p.mode == "train"
    t = Table(title=f"Per layer at batch {p.batch}: predicted time", header_style="bold")
    cols = ["layer", "kind", "forward (ms)"] + (["backward (ms)"] if train else []) + \
        ["share", "GFLOP", "bound"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("layer", "kind", "bound") else "right")
    step = p.forward_ms + p.backward_ms or 1.0
    for layer in p.layers:
        row = [markup(layer.name.replace("/", " > ")), markup(layer.type),
               f"{layer.forward_ms:.3f}"]
        if train:
            row.append(f"{layer.backward_ms:.3f}")
        row += [f"{layer.total_ms / step:.1%}", f"{layer.flops / 1e9:.3f}",
                BOUND_STYLE[layer.bound].format(layer.bound)]
        t.add_row(*row)
    console.print(t)


def render_profile(profile: dict, path: str, console) -> None:
    from rich.table import Table
    t = Table(title=f"device profile: {markup(profile['device_name'])}", header_style="bold",
              show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    peak = profile["peak"]
    for dtype, p in peak.items():
        t.add_row(f"peak {dtype} (best GEMM)", f"{p['flops_per_s'] / 1e9:,.1f} GFLOP/s")
    bw = profile["bandwidth"]
    t.add_row("copy bandwidth, largest working set",
              f"{bw[-1]['bandwidth'] / 1e9:,.1f} GB/s ({bw[-1]['bytes'] / 2**20:,.0f} MiB)")
    t.add_row("copy bandwidth, best", f"{max(p['bandwidth'] for p in bw) / 1e9:,.1f} GB/s")
    o = profile["overhead"]
    t.add_row("per-op overhead: forward / train / backward",
              f"{o['forward_s'] * 1e6:.1f} / {o['forward_train_s'] * 1e6:.1f} / "
              f"{o['backward_s'] * 1e6:.1f} us")
    for name, table in profile["tables"].items():
        planned = table.get("planned", {})
        have = {"conv": len(table["conv"]), "linear": len(table["linear"]),
                "ops": sum(len(v) for v in table["ops"].values())}
        t.add_row(f"table {name}: measured of planned", ", ".join(
            f"{have[k]} of {planned.get(k, have[k])} {word}"
            for k, word in (("conv", "convs"), ("linear", "GEMMs"), ("ops", "op points")))
            + (f" ({table['skipped']} skipped: budget)" if table.get("skipped") else ""))
    c = profile.get("compile")
    if c:
        if "skipped" in c:
            t.add_row("torch.compile", markup(c["skipped"]))
        else:
            for mode, m in c.items():
                t.add_row(f"torch.compile ({mode})", f"{m['speedup']:.2f}x the eager stack; "
                          f"elementwise at {m['elementwise_factor']:.2f}x")
    host = profile.get("host", {})
    t.add_row("load average before / after",
              f"{host.get('load_before')} / {host.get('load_after')}")
    t.add_row("elapsed", f"{profile['elapsed_s']:.0f} s (budget {profile['budget_s']:.0f} s)")
    trust = profile.get("trust") or {}
    t.add_row("repetitions' spread (median)", f"{trust.get('spread', 0):.1%}")
    console.print(t)
    console.print(f"wrote {markup(path)}", style="dim", highlight=False)
    if trust.get("measured_under_load"):
        console.print(f"warning: measured under load ({markup('; '.join(trust['reasons']))}): "
                      "predictions from this profile will say so; calibrate again on an idle "
                      "machine", style="yellow", highlight=False)
    for issue in trust.get("sanity", []):
        console.print(f"warning: {markup(issue)}", style="yellow", highlight=False)


class CalibrateProgress:
    """A rich progress bar on stderr for `archcalc calibrate`: one line per
    section (the device's constants, each table), points done of planned,
    and the seconds of the budget left. Called as progress(what, done,
    planned, budget_left_s)."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[left]}"),
                            console=console)
        self.tasks = {}

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __call__(self, what, done, total, left_s):
        if what not in self.tasks:
            self.tasks[what] = self.bar.add_task(markup(what), total=total, left="")
        self.bar.update(self.tasks[what], completed=done, total=total,
                        left=f"{left_s:,.0f} s of the budget left")


def records(predictions, profile, layers: bool = True):
    """(rows, extra) for --format csv or markdown: one row per layer and batch
    (the step's totals per batch with ``layers=False``); extra: the totals,
    the profile and the notes."""
    rows = []
    totals = []
    notes = []
    for p in predictions:
        totals.append(f"batch {p.batch}: step {p.step_ms:.3f} ms (forward {p.forward_ms:.3f}, "
                      f"backward {p.backward_ms:.3f}, optimizer {p.optimizer_ms:.3f}, "
                      f"other {p.other_ms:.3f}), {p.samples_per_s:.1f} samples/s")
        notes += [n for n in p.notes if n not in notes]
        if not layers:
            rows.append({"batch": p.batch, "mode": p.mode, "dtype": p.dtype,
                         "step_ms": round(p.step_ms, 4), "forward_ms": round(p.forward_ms, 4),
                         "backward_ms": round(p.backward_ms, 4),
                         "optimizer_ms": round(p.optimizer_ms, 4),
                         "other_ms": round(p.other_ms, 4),
                         "samples_per_s": round(p.samples_per_s, 2)})
            continue
        for layer in p.layers:
            rows.append({"batch": p.batch, "index": layer.index, "layer": layer.name,
                         "kind": layer.type, "forward_ms": round(layer.forward_ms, 4),
                         "backward_ms": round(layer.backward_ms, 4), "bound": layer.bound,
                         "flops": layer.flops})
    s = profile.summary
    extra = {"totals": totals,
             "profile": f"{s['file']} ({s['device_name']}, torch {s['torch']}, {s['date']})"}
    if notes:
        extra["notes"] = notes
    return rows, extra
