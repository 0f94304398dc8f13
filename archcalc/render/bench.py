"""Render bench results: rich tables, JSON or CSV."""
from __future__ import annotations

import csv
import io

from .. import sym
from .safe import csv_row, json_text

FIELDS = ("batch", "mode", "device", "dtype", "latency_ms", "latency_p90_ms", "throughput",
          "flops_per_step", "achieved_tflops", "peak_tflops", "share_of_peak",
          "predicted_memory_bytes", "measured_memory_bytes", "memory_measure", "steps")


def to_json(spec_name, results, peak_source) -> str:
    return json_text({"model": spec_name, "peak_source": peak_source,
                       "results": [r.as_json() for r in results]}, indent=2)


def to_csv(results) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for r in results:
        d = r.as_json()
        writer.writerow(csv_row(d[k] for k in FIELDS))
    return out.getvalue()


def to_markdown(results) -> str:
    from .records import render
    return render([{k: v for k, v in r.as_json().items() if k != "layers"} for r in results],
                  "markdown")


def render_rich(spec_name, results, peak_source, console) -> None:
    from rich.table import Table
    first = results[0]
    from .safe import markup
    t = Table(title=f"{markup(spec_name)}: {first.mode} on {first.device} ({first.dtype}), "
                    f"median of {first.steps} steps", header_style="bold")
    timed = any(r.predicted_ms is not None for r in results)   # bench --predict
    for col in ("batch", "latency (ms)", *(("predicted (ms)", "error ") if timed else ()),
                "p90 (ms)", "samples/s", "TFLOP/s", "share of peak",
                "memory predicted", "memory measured", "error"):
        t.add_column(col, justify="right")
    for r in results:
        err = "-" if not r.measured_memory_bytes else \
            f"{(r.predicted_memory_bytes - r.measured_memory_bytes) / r.measured_memory_bytes:+.1%}"
        time_cols = []
        if timed:
            time_cols = ["-", "-"] if r.predicted_ms is None else \
                [f"{r.predicted_ms:.2f}", f"{(r.predicted_ms - r.latency_ms) / r.latency_ms:+.1%}"]
        t.add_row(str(r.batch), f"{r.latency_ms:.2f}", *time_cols, f"{r.latency_p90_ms:.2f}",
                  f"{r.throughput:,.1f}", f"{r.achieved_tflops:.3f}",
                  "-" if r.share_of_peak is None else f"{r.share_of_peak:.1%}",
                  sym.human_bytes(r.predicted_memory_bytes),
                  "-" if r.measured_memory_bytes is None else sym.human_bytes(r.measured_memory_bytes),
                  err)
    console.print(t)
    console.print(f"FLOPs per step are calculated ({'forward + backward per layer kind' if first.mode == 'train' else 'forward'}); "
                  f"peak: {peak_source}; memory measured as {first.memory_measure}.",
                  style="dim", highlight=False)
    for r in results:
        if r.layers:
            render_layers(r, console)


def render_layers(result, console) -> None:
    if result.predicted_ms is not None:
        return render_predicted_layers(result, console)
    from rich.table import Table
    from .safe import markup
    t = Table(title=f"Per layer at batch {result.batch}: measured vs roofline "
                    "(FLOPs do not predict time)", header_style="bold")
    for col in ("layer", "kind", "time (ms)", "roofline (ms)", "GFLOP", "MB moved",
                "FLOP/byte", "bound"):
        t.add_column(col, justify="left" if col in ("layer", "kind", "bound") else "right")
    for layer in result.layers:
        t.add_row(markup(layer.name), markup(layer.type),
                  f"{layer.time_ms:.3f}",
                  "-" if layer.predicted_ms is None else f"{layer.predicted_ms:.3f}",
                  f"{layer.flops / 1e9:.3f}", f"{layer.bytes_moved / 1e6:.2f}",
                  f"{layer.intensity:.1f}",
                  "-" if layer.bound is None else
                  ("[yellow]memory[/]" if layer.bound == "memory" else "compute"))
    console.print(t)


def render_predicted_layers(result, console) -> None:
    """bench --predict: each layer's measured forward time beside the profile's
    prediction, the error, the roofline (a lower bound) and the bound."""
    from rich.table import Table
    from .safe import markup
    t = Table(title=f"Per layer at batch {result.batch}: forward measured vs predicted "
                    "(profile)", header_style="bold")
    for col in ("layer", "kind", "time (ms)", "predicted (ms)", "error", "roofline (ms)",
                "bound"):
        t.add_column(col, justify="left" if col in ("layer", "kind", "bound") else "right")
    measured = predicted = 0.0
    for layer in result.layers:
        err = "-"
        if layer.predicted_ms is not None and layer.time_ms:
            err = f"{(layer.predicted_ms - layer.time_ms) / layer.time_ms:+.0%}"
            measured += layer.time_ms
            predicted += layer.predicted_ms
        t.add_row(markup(layer.name.replace("/", " > ")), markup(layer.type),
                  f"{layer.time_ms:.3f}",
                  "-" if layer.predicted_ms is None else f"{layer.predicted_ms:.3f}", err,
                  "-" if layer.roofline_ms is None else f"{layer.roofline_ms:.3f}",
                  {"memory": "[yellow]memory[/]", "overhead": "[magenta]overhead[/]"}.get(
                      layer.bound, layer.bound or "-"))
    if measured:
        t.add_row("total (these layers)", "", f"{measured:.3f}", f"{predicted:.3f}",
                  f"{(predicted - measured) / measured:+.1%}", "", "", style="bold")
    console.print(t)
    if result.mode == "train":
        console.print("per layer: forward only (hooks time no backward); the step's "
                      "predicted time above includes backward and the optimizer.",
                      style="dim", highlight=False)
