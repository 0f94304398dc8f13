"""Time without running: calibrate (a device profile) and predict (a step's
time from the spec and a profile)."""
from __future__ import annotations

import click

from ..errors import SpecError, printable
from ..options import parse_sets, refuse_fp16_on_cpu
from .options import (SPEC, FiniteFloat, console, format_option, input_option, parse_batches,
                      require_device, set_option, show, stderr_console, step_options,
                      threads_option)


@click.command()
@click.option("--device", type=click.Choice(("cpu", "cuda")), default="cpu", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The profile to write [DEVICE-profile.json].")
@click.option("--quick", is_flag=True,
              help="A 45 s budget for the microbenchmarks: one conv of every class, fp32 "
                   "only, no torch.compile (starting torch and the rest take longer).")
@click.option("--budget-s", type=FiniteFloat(min=1, max=1e6), default=None,
              help="Seconds the microbenchmarks may take [240; --quick 45]; the shapes "
                   "beyond it are skipped, the most important first.")
@click.option("--tables", default=None, metavar="fp32,bf16,fp32-cl,...",
              help="dtypes (-cl: channels-last) to time [fp32; bf16 and fp16 where the "
                   "device has them; their channels-last twins].")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="Also measure what torch.compile changes [on, except --quick].")
@threads_option()
@click.option("--clock", type=click.Choice(("wall", "cpu")), default="wall", show_default=True,
              help="cpu: the process's CPU time instead of wall time, for one thread on a "
                   "machine others load (needs --threads 1).")
def calibrate(device, output, quick, budget_s, tables, compile_, threads, clock):
    """Characterise this device for `archcalc predict`: microbenchmarks of
    convolutions (3x3, 1x1, 5x5, 7x7 and 11x11 stems, strided, grouped,
    depthwise; small to large), GEMMs, the elementwise, pooling and
    normalization ops, copies (bandwidth by working set), the per-op overhead,
    the SGD step and torch.compile, per dtype and memory format. Writes a
    versioned JSON profile (device, torch version, date, load average).
    Timings are medians; run it on an otherwise idle machine.

    \b
    Examples:
      archcalc calibrate --device cpu -o cpu.json             # a few minutes
      archcalc calibrate --quick -o quick.json                # a 45 s budget
      archcalc calibrate --device cuda --tables bf16,fp32 -o h100.json
    """
    from ..errors import require
    from ..output import check_output_path, write_atomic
    output = f"{device}-profile.json" if output is None else output
    check_output_path(output, "-o")  # before minutes of measuring
    require("torch", "torch", "archcalc calibrate")
    require_device(device)
    import torch
    if threads:
        torch.set_num_threads(threads)
    if clock == "cpu" and (device != "cpu" or torch.get_num_threads() != 1):
        raise SpecError("--clock cpu measures one CPU thread: use it with --device cpu "
                        "--threads 1")
    names = None
    if tables:
        from ..profiles.schema import parse_table_names
        names = parse_table_names(tables, "--tables")
        refuse_fp16_on_cpu("--tables", names, device == "cpu")
    from ..render.predict import render_profile
    from ..render.safe import json_text
    from ..torch.calibrate import calibrate as run
    from ..render.predict import CalibrateProgress
    with CalibrateProgress(stderr_console()) as progress:
        profile = run(device, quick=quick, budget_s=budget_s, tables=names, compile=compile_,
                      timer=clock, progress=progress)
    write_atomic(output, json_text(profile, indent=1) + "\n")
    render_profile(profile, output, console())


def profile_warnings(results, strict: bool) -> None:
    """Each reason not to trust a prediction once on stderr; --strict refuses."""
    warnings = []
    for p in results:
        warnings += [w for w in p.warnings if w not in warnings]
    if strict and warnings:
        more = f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""
        raise SpecError(f"{warnings[0]}{more}; --strict refuses a profile this prediction "
                        "cannot trust: calibrate again on an idle machine with a larger budget")
    for w in warnings:
        click.echo(f"warning: {printable(w)} (--strict makes this an error)", err=True)


def load_device_profile(name, device="cpu"):
    """--profile: a file or a shipped profile's name; left out, the shipped one."""
    from .. import profiles
    from ..predict import load_profile
    if name is None:
        name = profiles.default(device)
        if name is None:
            raise SpecError("--profile is needed: make one with `archcalc calibrate -o "
                            f"FILE` (shipped: {', '.join(profiles.names()) or 'none'})")
        click.echo(f"note: using the shipped profile {name} (measured on another machine; "
                   "`archcalc calibrate` makes one for this one)", err=True)
    return load_profile(name)


@click.command()
@click.argument("spec", type=SPEC)
@click.option("--profile", "profile_name", default=None, metavar="FILE|NAME",
              help="A profile from `archcalc calibrate`, or a shipped one by name "
                   "[the shipped CPU profile].")
@step_options(amp="Autocast to this dtype (the profile's table of that dtype).",
              compile_="As if torch.compile'd.")
@input_option
@set_option
@click.option("--summary", is_flag=True, help="Totals only, no per-layer table.")
@format_option()
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also write the JSON here.")
@click.option("--strict", is_flag=True,
              help="Refuse (exit 2) a prediction the profile cannot be trusted for: too few "
                   "points in a table it rates from, measured under load, suspect numbers.")
def predict(spec, profile_name, batch_text, mode, amp, channels_last, compile_, input_shape,
            sets, summary, fmt, output, strict):
    """Predict the time of a step before running it: per layer, the forward
    (and backward) time from the layer's shape and a device profile, and the
    bound (compute, memory or overhead); per step, the total and samples/s.
    Pure analysis: torch is not needed.

    \b
    Examples:
      archcalc predict specs/resnet18.toml --profile cpu.json --batch 1,8,32
      archcalc predict specs/vgg16.toml --profile cpu.json --mode train --batch 8
      archcalc predict specs/resnet50.toml --profile h100.json --amp bf16 --format json
      archcalc predict specs/vgg16.toml --batch 8 --format csv   # one row per layer

    --format csv and markdown: one row per layer and batch (with --summary,
    one per batch); json: the whole result, the profile it came from included.
    """
    from ..predict import predict as run
    from ..render import Prediction, render
    from ..spec.loader import load
    from ..output import check_output_path, shown, write_atomic
    batches = parse_batches(batch_text)
    if output is not None:
        check_output_path(output, "-o", [spec, profile_name])
    profile = load_device_profile(profile_name)
    refuse_fp16_on_cpu("--amp", [amp], profile.device == "cpu", needs="a GPU profile",
                       instead="--amp bf16")
    results = run(load(spec), profile, batches=batches, mode=mode, amp=amp,
                  channels_last=channels_last, compile=compile_, variables=parse_sets(sets),
                  input=input_shape)
    profile_warnings(results, strict)
    prediction = Prediction(results, profile, layers=not summary)
    show(prediction, fmt)
    if output is not None:
        write_atomic(output, render(prediction, "json"))
        click.echo(f"wrote {shown(output)}", err=True)
