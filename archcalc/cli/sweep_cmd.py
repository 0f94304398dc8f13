"""The `archcalc sweep` command. Only click is imported here at start-up; the
engine, rich and matplotlib load when used."""
from __future__ import annotations

import click

from ..errors import SpecError
from ..options import parse_sets
from .options import SPEC, dtype_option, format_option, set_option, show
from .predict import load_device_profile

OUTPUT_SUFFIXES = (".png", ".svg", ".pdf", ".html", ".htm", ".json", ".csv")


# the sweep's own options, applied in order under the argument
SPACE_OPTIONS = (
    click.option("--grid", "grids", multiple=True, required=True, metavar="NAME=VALUES",
                 help="A variable's values: a list (C=32,48,64), a range with both ends "
                      "(width=0.5:2:0.25), a geometric range (batch=1:4096:*2). "
                      "Repeatable: the points are the product of the grids. NAME is a "
                      "variable of the spec, batch, or one read by --link/--input."),
    click.option("--link", "links", multiple=True, metavar="NAME=EXPR",
                 help="A variable computed from the grids, e.g. \"depth=1.2**phi\" "
                      "(repeatable, in order; the specs' safe evaluator)."),
    click.option("--where", "where", multiple=True, metavar="EXPR",
                 help="A constraint over the totals and variables, e.g. \"params <= 10e6\", "
                      "\"train_memory(batch=64, dtype=bf16) <= 40e9\", \"predicted_ms <= 20\" "
                      "(repeatable; all must hold)."),
    click.option("--objectives", default="params,macs", show_default=True,
                 metavar="NAME,NAME...",
                 help="The totals (or variables) of the Pareto front: minimised, or "
                      "maximised with a leading + (+width)."),
    click.option("--fit", default=None, metavar="EXPR",
                 help="A budget for --maximize/--minimize: e.g. \"params <= 25e6\"."),
    click.option("--maximize", default=None, metavar="VAR",
                 help="With --fit: the largest value of this --grid variable that fits."),
    click.option("--minimize", default=None, metavar="VAR",
                 help="With --fit: the smallest value of this --grid variable that fits."),
    click.option("--profile", "profile_name", default=None, metavar="FILE|NAME",
                 help="A device profile (archcalc calibrate): gives predicted_ms."),
    click.option("--batch", "-b", type=click.IntRange(min=1), default=1, show_default=True,
                 help="The batch of the memory totals and of predicted_ms."),
    click.option("--mode", type=click.Choice(("inference", "train")), default="inference",
                 show_default=True, help="The step predicted_ms times."),
    click.option("--amp", type=click.Choice(("bf16", "fp16")), default=None,
                 help="predicted_ms under autocast to this dtype."),
)


def space_options(f):
    for option in reversed(SPACE_OPTIONS):
        f = option(f)
    return f


@click.command("sweep")
@click.argument("spec", type=SPEC)
@space_options
@dtype_option
@click.option("--optimizer", type=click.Choice(("sgd", "momentum", "adam")),
              default="adam", show_default=True,
              help="Optimizer whose state the training memory counts.")
@click.option("--input", "input_shape", metavar="CxHxW|C,H,W", default=None,
              help="The input: CxHxW, or C,H,W with expressions of the sweep's "
                   "variables (3,res,res).")
@set_option
@format_option()
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Also write: a scatter plot of two objectives with the front (.png, "
                   ".svg, .pdf), a self-contained page (.html), or every point (.json, "
                   ".csv).")
def sweep(spec, grids, links, where, objectives, fit, maximize, minimize, profile_name,
          batch, mode, amp, dtype, optimizer, input_shape, sets, fmt, output):
    """Explore a design space from the spec: every combination of the grids,
    analysed as `archcalc table` would (no model is built), constraints,
    and the Pareto front of the objectives; or, with --fit, the largest
    value of one variable under a budget (bisection where the totals are
    monotone in it, every grid value otherwise).

    \b
    Examples:
      archcalc sweep specs/resnet50.toml --grid batch=1:4096 --dtype bf16 \\
          --fit "train_memory <= 16e9" --maximize batch
      archcalc sweep specs/efficientnet_b0.toml --grid phi=0:7 \\
          --link "depth=1.2**phi" --link "width=1.1**phi" \\
          --link "res=round(224*1.15**phi)" --input 3,res,res -o front.html
      archcalc sweep specs/tricks/7x7-vs-3x3/three_3x3.toml \\
          --grid C=16,64,256 --grid H=7:56:7 --link W=H --where "params <= 1e6" --format csv
    """
    from ..sweep import sweep as run
    if output:
        _check_output(output)
    profile = load_device_profile(profile_name) if profile_name or "predicted_ms" in \
        " ".join([*where, objectives or "", fit or ""]) else None
    result = run(spec, grids, links=links, where=where, objectives=objectives,
                 input=input_shape, sets=parse_sets(sets), batch=batch, dtype=dtype,
                 optimizer=optimizer, profile=profile, mode=mode, amp=amp, fit=fit,
                 maximize=maximize, minimize=minimize, progress=_progress())
    show(result, fmt)
    if output:
        _write(result, output)


def _progress():
    """A counter on stderr while a long sweep runs, on a terminal only (a pipe
    or a log gets the result alone)."""
    import sys
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        click.echo(f"\r{done:,} / {total:,} points", err=True, nl=False)
        click.echo(end, err=True, nl=False)
    return show


def _check_output(output: str) -> None:
    from ..output import check_output_path, shown
    if not output.lower().endswith(OUTPUT_SUFFIXES):
        raise SpecError(f"-o {shown(output)}: the suffix says what to write: "
                        f"{', '.join(OUTPUT_SUFFIXES)}")
    check_output_path(output, "-o")


def _write(result, output: str) -> None:
    from ..output import shown, write_atomic
    from ..render import render
    suffix = output.lower().rsplit(".", 1)[-1]
    if suffix in ("png", "svg", "pdf"):
        from ..render.sweep_plot import plot
        plot(result, output)
    elif suffix in ("html", "htm"):
        write_atomic(output, html_page(result))
    else:
        write_atomic(output, render(result, suffix))
    click.echo(f"wrote {shown(output)}", err=True)


def html_page(result) -> str:
    """The page, with the per-layer tables of the front's first points."""
    from ..render.sweep import front_rows
    from ..render.sweep_html import FRONT_TABLES, page
    spec, evaluator, opts = result.evaluator.spec, result.evaluator, result.options
    reports = {}
    for p in front_rows(result, FRONT_TABLES):
        variables = {**(opts.get("set") or {}),
                     **{k: v for k, v in p.variables.items() if k in spec.vars}}
        reports[p.index] = evaluator.report(variables, p.input, p.batch)
    return page(result, reports)
