"""The analysis commands, pure Python (torch is never imported): table,
kinds, explain, compare, trick, lint."""
from __future__ import annotations

import sys

import click

from ..errors import SpecError
from ..options import parse_sets
from .loading import analyzed_report, load_and_analyze, warn_about
from .options import (BATCH, SPEC, console, dtype_option, format_option, input_option, set_option,
                      show)


@click.command()
@click.argument("spec", type=SPEC)
@click.option("--batch", "-b", type=BATCH, default=1, show_default=True,
              help="Batch size: multiplies the bytes, never the shapes.")
@dtype_option
@input_option
@set_option
@click.option("--optimizer", type=click.Choice(("sgd", "momentum", "adam")), default="adam",
              show_default=True, help="Optimizer whose state the training memory counts.")
@click.option("--strict", is_flag=True, help="Make a warning an error: a layer that does not "
              "tile its input, or one that grows its map (unless it says grows = true).")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="Fold everything below this depth into one row per block (sums).")
@click.option("--columns", metavar="COL,COL...",
              help="Columns of the rich and markdown tables, in order: index, layer, kind, "
                   "input, output, activations, params, params%, macs, flops, rf. Default: "
                   "index,layer,kind,output,activations,params,macs,rf, fitted to the "
                   "terminal's width (COLUMNS); a narrow one drops detail, never digits "
                   "of a number.")
@format_option()
def table(spec, batch, dtype, input_shape, sets, optimizer, strict, depth, columns, fmt):
    """Per-layer table of a spec: output shape, activations, params (with the
    arithmetic), MACs and receptive field, with totals under it.

    \b
    Examples:
      archcalc table specs/vgg16.toml
      archcalc table specs/alexnet.toml --batch 128 --dtype bf16
      archcalc table specs/vgg16.toml --input 3x32x32 --strict
      archcalc table specs/vgg16.toml --format json > vgg16.json
      archcalc table specs/googlenet.toml --depth 1     # one row per Inception module
      archcalc table specs/resnet50.toml --columns layer,output,params,params%,macs
      archcalc table torchvision.models:resnet50     # a PyTorch model, imported in memory
    """
    from ..render import table as render
    keys = render.parse_columns(columns)
    if keys and fmt in ("json", "csv"):
        raise SpecError(f"--columns applies to --format rich or markdown; {fmt} keeps its "
                        "fixed fields")
    loaded, report = load_and_analyze(spec, batch, dtype, input_shape, sets, strict, optimizer)
    warn_about(report)
    own = render.own_settings(loaded, report)
    if depth:
        from dataclasses import replace
        from ..analysis import fold
        report = replace(report, rows=fold(report.rows, depth))
    show(report, fmt, columns=keys, own=own)


@click.command()
@format_option()
def kinds(fmt):
    """List the layer kinds a spec can use, with their arguments and FLOP rules.

    \b
    Examples:
      archcalc kinds
      archcalc kinds --format json
    """
    from rich.table import Table
    from ..layers import kinds as all_kinds
    from ..layers.base import REQUIRED
    records = []
    for name, kind in all_kinds().items():
        args = ", ".join(
            (f"{k}*" if k == kind.primary else k)
            + ("" if a.default is REQUIRED or a.default is None else f"={a.default}")
            for k, a in kind.args.items())
        if kind.fusable:
            args += ", batch_norm, activation"
        records.append({"kind": name, "aliases": ", ".join(kind.aliases), "arguments": args,
                        "flops_rule": kind.flops_rule, "summary": kind.summary})
    if fmt != "rich":
        from ..render import Records
        show(Records(records), fmt)
        return
    t = Table(title="Layer kinds", header_style="bold")
    for col in ("kind", "aliases", "arguments (default)", "FLOPs rule"):
        t.add_column(col, overflow="fold")
    for r in records:
        t.add_row(r["kind"], r["aliases"], r["arguments"], r["flops_rule"])
    c = console()
    c.print(t)
    c.print("* the primary argument: {conv = 64} sets out = 64.", style="dim")


@click.command()
@click.argument("spec", type=SPEC)
@click.argument("layer")
@click.option("--batch", "-b", type=BATCH, default=1, show_default=True)
@dtype_option
@input_option
@set_option
@format_option(("rich", "json", "markdown"))
def explain(spec, layer, batch, dtype, input_shape, sets, fmt):
    """The arithmetic of one layer, step by step, as a lecture writes it:
    output size with the numbers put in, params, MACs, memory, receptive field.

    \b
    Examples:
      archcalc explain specs/vgg16.toml conv3_1
      archcalc explain specs/googlenet.toml inception_3a.b2.3x3
      archcalc explain specs/vgg16.toml conv1_1 --input 3x227x227 --format json
    """
    from ..explain import explain as run
    from ..render import Explanation
    report = analyzed_report(spec, batch, dtype, input_shape, sets, False)
    show(Explanation(report, layer, run(report, layer)), fmt)


@click.command()
@click.argument("specs", nargs=-1, required=True, type=SPEC)
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Bind a variable in every spec that has it.")
@click.option("--batch", "-b", type=BATCH, default=1, show_default=True)
@dtype_option
@input_option
@format_option()
def compare(specs, sets, batch, dtype, input_shape, fmt):
    """Designs side by side: params, MACs, FLOPs, activations, training memory,
    receptive field, depth and nonlinearities, each with its ratio to the first.
    Unbound variables give formulas and exact ratios (27/49).

    \b
    Examples:
      archcalc compare specs/resnet50.toml specs/resnet50_v1.toml
      archcalc compare specs/vgg16.toml specs/vgg19.toml specs/googlenet.toml
      archcalc compare specs/tricks/7x7-vs-3x3/one_7x7.toml specs/tricks/7x7-vs-3x3/three_3x3.toml
    """
    if len(specs) < 2:
        raise SpecError("compare needs at least two specs")
    from ..compare import compare as run
    from ..spec.loader import load
    comparison = run([load(s) for s in specs], variables=parse_sets(sets), batch=batch,
                     input=input_shape,
                     dtype=dtype)
    show(comparison, fmt, title="Comparison")


@click.command()
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the tricks.")
@click.option("--channels", "-c", type=click.IntRange(min=1), default=None,
              help="Put numbers in for C (channels).")
@click.option("--size", "-s", type=click.IntRange(min=1), default=None,
              help="Put numbers in for H and W.")
@format_option()
def trick(name, list_, channels, size, fmt):
    """The lectures' factorization tricks, as formulas in C (channels) and
    H, W, and as numbers with --channels and --size. Each design is a real
    spec in specs/tricks/NAME/ to open and edit.

    \b
    Examples:
      archcalc trick --list
      archcalc trick 7x7-vs-3x3
      archcalc trick 7x7-vs-3x3 --channels 64 --size 56
      archcalc trick nxn-vs-asym
    """
    from .. import tricks
    if list_ or not name:
        width = max(len(n) for n in tricks.TRICKS)
        for t in tricks.TRICKS.values():
            click.echo(f"{t.name:<{width}}  {t.summary}")
        return
    t = tricks.lookup(name)
    from ..compare import compare as run
    from ..spec.loader import load
    specs = [load(f) for f in tricks.spec_files(t)]
    comparison = run(specs)
    show(comparison, fmt, title=f"{t.name}: {t.summary}")
    if channels or size:
        bound = {k: v for k, v in (("C", channels), ("H", size), ("W", size)) if v}
        numeric = run(specs, variables=bound)
        what = ", ".join(f"{k} = {v}" for k, v in bound.items())
        show(numeric, fmt, title=f"{t.name} with {what}")
    if fmt == "rich":
        console().print(t.lesson, highlight=False)
        for n in {n for s in specs for n in ([s.extra["notes"]] if "notes" in s.extra else [])}:
            from rich.markup import escape
            console().print(escape(f"Note: {n}"), style="italic", highlight=False)


@click.command()
@click.argument("specs", nargs=-1, required=True, type=SPEC)
@input_option
@set_option
@click.option("--strict", is_flag=True, help="Exit 1 when there is any finding.")
@format_option(("rich", "json"))
def lint(specs, input_shape, sets, strict, fmt):
    """The design smells the lectures teach, each with its arithmetic: a conv
    bias right before batch norm (redundant params), a representational
    bottleneck (a sharp early drop in activations per sample, Inception-v3),
    input rows a non-tiling layer drops, a 1x1 conv that adds channels right
    before a reduction, fc layers holding most of the params (VGG).
    Exit 0 with the findings listed; 1 with --strict when there are any.

    \b
    Examples:
      archcalc lint specs/vgg16.toml
      archcalc lint specs/vgg16.toml --input 3x225x225 --strict
      archcalc lint specs/alexnet.toml specs/resnet50.toml --format json
    """
    from .. import lint as rules
    results = []
    for spec in specs:
        _, report = load_and_analyze(spec, 1, "fp32", input_shape, sets, False)
        results.append((report, rules.lint(report)))
    from ..render import LintResults
    show(LintResults(results), fmt)
    if strict and any(found for _, found in results):
        sys.exit(1)
