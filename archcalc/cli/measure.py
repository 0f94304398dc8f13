"""The commands that build the spec in PyTorch and run it: check, bench, train."""
from __future__ import annotations

import os
import sys

import click

from ..errors import SpecError
from ..options import parse_sets, refuse_fp16_on_cpu
from .loading import require_numbers
from .options import (BATCH, MEMORY_CHECK_HELP, SPEC, FiniteFloat, cap_threads, console,
                      format_option, input_option, parse_batches, require_device, set_option,
                      show, stderr_console, step_options, threads_option)
from .predict import load_device_profile, profile_warnings


@click.command()
@click.argument("spec", type=SPEC)
@click.option("--batch", "-b", type=BATCH, default=1, show_default=True)
@click.option("--device", type=click.Choice(("cpu", "cuda")), default="cpu", show_default=True)
@input_option
@set_option
@click.option("--meta", is_flag=True, help="Shapes and params only, on the meta device.")
@click.option("--all-rows", is_flag=True, help="Show every row, not only disagreements, "
              "for nets of more than 60 rows.")
@click.option("--no-memory-check", "no_memory_check", is_flag=True,
              help="Measure for real even when the estimated memory exceeds what is "
                   "available (otherwise such a model is measured on the meta device).")
@format_option()
def check(spec, batch, device, input_shape, sets, meta, all_rows, no_memory_check, fmt):
    """Build the spec in PyTorch, run it, and put every calculated figure beside
    the measured one: shapes (forward hooks), params (numel), MACs (fvcore, per
    module), 2 x MACs (FlopCounterMode), forward and saved-for-backward memory.
    Exit 0 when everything agrees within tolerance, 1 when anything does not.

    \b
    Examples:
      archcalc check specs/lenet5.toml
      archcalc check specs/resnet50.toml --batch 8
      archcalc check specs/vgg16.toml --device cuda
      archcalc check specs/lenet5.toml --format json
    """
    from ..errors import require
    require("torch", "torch", "archcalc check")
    require_device(device)
    from ..spec.loader import load
    from ..torch.check import run_check
    result = run_check(load(spec), batch=batch, device=device, variables=parse_sets(sets),
                       input=input_shape, force_meta=meta, memory_check=not no_memory_check)
    show(result, fmt, all_rows=all_rows)
    sys.exit(0 if result.ok else 1)


@click.command()
@click.argument("spec", type=SPEC)
@click.option("--device", type=click.Choice(("cpu", "cuda", "mps")), default="cpu", show_default=True)
@step_options(amp="Autocast to this dtype.", compile_="torch.compile the model first.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True)
@threads_option()
@click.option("--peak", type=click.Choice(("table", "measure")), default="table", show_default=True,
              help="Device peak FLOP/s: a table of known GPUs, or a matmul timed on the spot.")
@click.option("--per-layer", is_flag=True, help="Time every layer beside its roofline.")
@click.option("--predict", "predict_profile", default=None, metavar="PROFILE",
              help="Put the time predicted from this profile (archcalc calibrate) beside "
                   "the measured one, per layer and in total, with the error.")
@click.option("--max-batch", is_flag=True, help="Find the largest batch that fits (predicted, then run).")
@set_option
@format_option()
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also write the results here.")
@click.option("--no-memory-check", "no_memory_check", is_flag=True, help=MEMORY_CHECK_HELP)
def bench(spec, device, batch_text, mode, amp, channels_last, compile_, warmup, steps, threads,
          peak, per_layer, predict_profile, max_batch, sets, fmt, output, no_memory_check):
    """Run the compiled spec and time it: latency (median, p90), throughput,
    achieved FLOP/s from the calculated FLOPs, share of the device's peak, and
    peak memory measured vs predicted.

    \b
    Examples:
      archcalc bench specs/resnet18.toml --device cpu --batch 1,8 --steps 5
      archcalc bench specs/resnet50.toml --device cuda --batch 64 --mode train --amp bf16
      archcalc bench specs/vgg16.toml --device cuda --batch 32 --per-layer
      archcalc bench specs/resnet50.toml --device cuda --mode train --max-batch
      archcalc bench specs/resnet18.toml --batch 8 --predict cpu.json
    """
    from ..errors import require
    if output is not None:
        from ..output import check_output_path
        check_output_path(output, "-o", [spec, predict_profile])
    require("torch", "torch", "archcalc bench")
    batches = parse_batches(batch_text)
    require_device(device)
    import torch
    refuse_fp16_on_cpu("--amp", [amp], device == "cpu", instead="--amp bf16")
    if threads:
        torch.set_num_threads(cap_threads(threads))
    from ..graph import build_graph
    from ..spec.loader import load
    from ..torch import bench as runner
    graph = build_graph(load(spec), variables=parse_sets(sets))
    require_numbers(graph)
    profile = load_device_profile(predict_profile, device) if predict_profile else None
    if profile is not None and device == "cpu" and \
            profile.data.get("threads") not in (None, torch.get_num_threads()):
        click.echo(f"note: the profile was measured with {profile.data['threads']} threads, "
                   f"this run uses {torch.get_num_threads()} (--threads)", err=True)
    if profile is not None:   # what predict would warn about this profile, before the run
        from ..predict import predict as predict_steps
        profile_warnings(predict_steps(graph, profile, batches=batches, mode=mode, amp=amp,
                                        channels_last=channels_last), strict=False)
    if max_batch:
        predicted, verified = runner.max_batch(graph, device=device, mode=mode, amp=amp,
                                               channels_last=channels_last)
        click.echo(f"largest batch: predicted {predicted}, verified by a run: {verified}")
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    with Progress(TextColumn("[bold]batch {task.fields[batch]}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("steps (warm-up included)"),
                  console=stderr_console(), transient=True,
                  disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("bench", total=(warmup + steps) * len(batches), batch=batches[0])

        def progress(batch, done, total):
            bar.update(task, advance=1, batch=batch)
        results = runner.run_bench(graph, device=device, batches=batches, mode=mode, amp=amp,
                                   channels_last=channels_last, compile=compile_,
                                   warmup=warmup, steps=steps, peak=peak,
                                   per_layer=per_layer, progress=progress, profile=profile,
                                   memory_check=not no_memory_check)
    from ..torch.devices import known_peak
    peak_source = "measured (best of GEMMs and convs; copies by working set)" if peak == "measure" else \
        (known_peak(device).name + " data sheet" if known_peak(device) else "unknown device: use --peak measure")
    from ..render import BenchRun, render
    run = BenchRun(graph.name, results, peak_source)
    show(run, fmt)
    if output is not None:
        from ..output import shown, write_atomic
        write_atomic(output, render(run, "json" if fmt == "rich" else fmt))
        click.echo(f"wrote {shown(output)}", err=True)


@click.command()
@click.argument("spec", type=SPEC)
@click.option("--data", default="synthetic", show_default=True,
              metavar="synthetic|digits|digits-distorted|cifar10:DIR|imagefolder:DIR",
              help="digits: scikit-learn's bundled 8x8 digits, resized to the spec's input; "
                   "digits-distorted: each rotated, scaled and shifted on a 32x32 canvas; "
                   "cifar10: the python pickle batches in DIR; no downloads.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--batch", "-b", type=BATCH, default=32, show_default=True,
              help="Global batch (divided among torchrun processes).")
@click.option("--optimizer", type=click.Choice(("sgd", "momentum", "nesterov", "adagrad",
                                                "rmsprop", "adam")), default="adam", show_default=True)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Learning rate (default per optimizer: adam 1e-3, momentum 1e-2, ...).")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=0.0, show_default=True)
@click.option("--schedule", type=click.Choice(("none", "step", "exponential", "inverse", "cosine",
                                               "plateau", "cyclic")), default="none", show_default=True)
@click.option("--label-smoothing", type=FiniteFloat(0, 1, max_open=True), default=0.0)
@click.option("--augment", default="", metavar="crop,flip", help="Random crop and/or flip.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--device", type=click.Choice(("cpu", "cuda", "mps")), default="cpu", show_default=True)
@threads_option("CPU threads [auto: one per 100 M forward MACs of a step, at most the idle "
                "physical cores; the header shows the choice].")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for checkpoint.pt, metrics.csv/json, curves.png [runs/SPEC_NAME].")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--force", is_flag=True, help="Start over in an OUT that holds a run, replacing it.")
@click.option("--plot", is_flag=True, help="Save the loss and accuracy curves as OUT/curves.png.")
@set_option
@click.option("--no-memory-check", "no_memory_check", is_flag=True, help=MEMORY_CHECK_HELP)
def train(spec, data, epochs, batch, optimizer, lr, weight_decay, schedule, label_smoothing,
          augment, seed, device, threads, out_dir, resume, force, plot, sets, no_memory_check):
    """Train the compiled spec and report per epoch: train loss, test loss and
    accuracy, time, samples/s and peak memory. Checkpoints are written
    atomically each epoch; Ctrl-C finishes the step under way, saves that state
    (with the data order and random states) and exits, and --resume continues
    exactly there. A loss that turns NaN or infinite ends the run (exit 1).

    \b
    Examples:
      archcalc train specs/lenet5.toml --data digits --epochs 5 --seed 0
      archcalc train specs/resnet18.toml --data cifar10:~/cifar-10-batches-py \\
          --optimizer momentum --lr 0.1 --schedule cosine --augment crop,flip --device cuda
      torchrun --nproc_per_node 2 -m archcalc train specs/lenet5.toml --data digits
    """
    from ..errors import require
    require("torch", "torch", "archcalc train")
    require_device(device)
    augmentations = tuple(a for a in augment.split(",") if a)
    bad = [a for a in augmentations if a not in ("crop", "flip")]
    if bad:
        raise SpecError(f"--augment takes crop and/or flip, e.g. crop,flip. Received: {augment!r}")
    from ..graph import build_graph
    from ..spec.loader import load
    from ..torch.train import TrainConfig
    graph = build_graph(load(spec), variables=parse_sets(sets))
    require_numbers(graph)
    out_dir = out_dir or os.path.join("runs", os.path.splitext(os.path.basename(spec))[0])
    config = TrainConfig(data=os.path.expanduser(data) if ":" in data else data, epochs=epochs,
                         batch=batch, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         schedule=schedule, label_smoothing=label_smoothing, augment=augmentations,
                         seed=seed, device=device, out=out_dir, plot=plot, resume=resume,
                         force=force, threads=cap_threads(threads) if threads else None,
                         memory_check=not no_memory_check)
    out = console()
    _train_with_progress(graph, config, out)
    if int(os.environ.get("RANK", "0")) == 0:
        from ..render.safe import markup
        shown_dir = markup(out_dir)  # a folder name is data, not rich markup
        out.print(f"metrics: {shown_dir}/metrics.csv, {shown_dir}/metrics.json; checkpoint: "
                  f"{shown_dir}/checkpoint.pt"
                  + (f"; curves: {shown_dir}/curves.png" if plot else ""),
                  style="dim", highlight=False)


def _train_with_progress(graph, config, out):
    """Run the training with a progress bar on a terminal (a line at each
    quarter of an epoch when piped) and one line per epoch on `out`."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)
    from ..torch.train import train as run_train
    from ..render.safe import markup
    from ..sym import human_bytes
    main_rank = int(os.environ.get("RANK", "0")) == 0
    interactive = sys.stderr.isatty()
    # on one terminal the lines and the bar go through one console, whose live
    # display clears the bar's line before a line is printed (two consoles
    # would print "0:00:00epoch 1/2 ..." onto the bar's line)
    bar_console = out if interactive and sys.stdout.isatty() else stderr_console()
    with Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("steps"),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                  console=bar_console, transient=True,
                  disable=not main_rank or not interactive) as bar:
        task = bar.add_task("train", total=None, epoch=1, rate="")
        started = {}

        def progress(epoch, step, total):
            import time
            if epoch not in started:
                started[epoch] = (time.perf_counter(), step)
                bar.reset(task, total=total, completed=step, epoch=epoch, rate="")
                return
            t0, first = started[epoch]
            rate = (step - first) * config.batch / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=step, epoch=epoch, rate=f"{rate:,.0f} samples/s")
            # piped: a line at each quarter of the epoch instead of a bar
            if not interactive and main_rank and total >= 4 and step % (total // 4) == 0 \
                    and step < total:
                left = (total - step) * config.batch / max(rate, 1e-9)
                click.echo(f"epoch {epoch}: step {step}/{total}, {rate:,.0f} samples/s, "
                           f"about {left:,.0f} s left in the epoch", err=True)

        def show_epoch(m):
            if isinstance(m, str):
                out.print(markup(m), highlight=False)
                return
            out.print(f"epoch {m.epoch}/{config.epochs}  train loss {m.train_loss:.4f}  "
                      f"test loss {m.test_loss:.4f}  accuracy {100 * m.test_accuracy:.1f}%  "
                      f"{m.time_s:.1f} s  {m.samples_per_s:,.0f} samples/s  memory "
                      f"{human_bytes(m.peak_memory_bytes)} measured / "
                      f"{human_bytes(m.predicted_memory_bytes)} predicted", highlight=False)
        try:
            run_train(graph, config, say=show_epoch, progress=progress)
        except KeyboardInterrupt:
            sys.exit(130)
