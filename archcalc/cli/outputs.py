"""The commands that write a file: report (the HTML page), plot, export."""
from __future__ import annotations

import click

from ..errors import SpecError
from ..options import parse_sets
from .loading import analyzed_report, warn_about
from .options import BATCH, SPEC, dtype_option, input_option, set_option


@click.command("report")
@click.argument("specs", nargs=-1, required=True, type=SPEC)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The HTML file to write [SPEC_NAME.html]; - for stdout.")
@click.option("--batch", "-b", type=BATCH, default=1, show_default=True)
@dtype_option
@click.option("--optimizer", type=click.Choice(("sgd", "momentum", "adam")), default="adam",
              show_default=True, help="Optimizer whose state the training memory counts.")
@input_option
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Bind a variable in every spec that has it.")
@click.option("--title", default=None, help="The page's heading [the specs' names].")
def html_report(specs, output, batch, dtype, optimizer, input_shape, sets, title):
    """One self-contained HTML page: the graph (blocks fold, branches and merges
    side by side, shapes on the edges), the per-layer table (sortable,
    filterable, arithmetic on hover), charts (activations, params, MACs per
    layer; training memory), totals, notes and lint findings; with several
    specs a side-by-side comparison. Styles, script and data are inline: the
    page loads nothing from the network. Pure analysis: torch is not needed.

    \b
    Examples:
      archcalc report specs/googlenet.toml -o googlenet.html
      archcalc report specs/vgg16.toml specs/resnet50.toml -o vgg-vs-resnet.html
      archcalc report specs/resnet50.toml --batch 64 --dtype bf16 -o r50.html
    """
    import os
    from ..analysis import analyze
    from ..render import report as html
    from ..render.table import own_settings
    from ..spec.loader import load
    from ..output import check_output_path, default_output, shown, write_atomic
    if output != "-":
        output = default_output(specs[0], ".html") if output is None else output
        if not output.lower().endswith((".html", ".htm")):
            raise SpecError(f"-o takes an .html file (or - for stdout). "
                            f"Received: {shown(output)!r}")
        check_output_path(output, "-o", specs)
    values = parse_sets(sets)
    loaded = [load(s) for s in specs]
    for name in values:
        if not any(name in s.vars for s in loaded):
            raise SpecError(f"--set {name}: no spec has a variable {name!r}")
    items = []
    for spec in loaded:
        known = {k: v for k, v in values.items() if k in spec.vars}
        r = analyze(spec, batch=batch, dtype=dtype, optimizer=optimizer, variables=known,
                    input=input_shape)
        warn_about(r)
        items.append((r, own_settings(spec, r)))
    text = html.page(items, title)
    if output == "-":
        click.echo(text, nl=False)
        return
    write_atomic(output, text)
    click.echo(f"wrote {shown(output)} ({len(text.encode()) / 1e3:,.0f} KB)", err=True)


@click.command()
@click.argument("specs", nargs=-1, required=True, type=SPEC)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="PNG or SVG file [SPEC_NAME.png].")
@click.option("--depth", type=click.IntRange(min=1), default=None, help="One bar per block.")
@set_option
def plot(specs, output, depth, sets):
    """Per-layer bars of activations and params (log scale) and MACs, with the
    spec's name and totals; several specs stand side by side, one column each
    under its own layer names (scales shared). Past 60 layers, blocks
    fold into one bar each (the deepest level that fits; --depth to choose).
    The file type follows the suffix: .png, .svg or .pdf.

    \b
    Examples:
      archcalc plot specs/vgg16.toml -o vgg16.png
      archcalc plot specs/googlenet.toml --depth 1 -o googlenet.svg
      archcalc plot specs/vgg16.toml specs/vgg19.toml -o vgg.png
    """
    import os
    from ..output import check_output_path, default_output, shown
    from ..render.plot import ROW_LIMIT, plot as draw
    output = default_output(specs[0], ".png") if output is None else output
    if not output.lower().endswith((".png", ".svg", ".pdf")):
        raise SpecError(f"-o takes a .png, .svg or .pdf file. Received: {shown(output)!r}")
    check_output_path(output, "-o", specs)
    reports = [analyzed_report(s, 1, "fp32", None, sets, False) for s in specs]
    used = draw(reports, output, depth)
    if used and not depth:
        click.echo(f"note: more than {ROW_LIMIT} layers: one bar per block at depth {used} "
                   "(--depth N to choose)", err=True)
    click.echo(f"wrote {shown(output)}", err=True)


@click.command()
@click.argument("spec", type=SPEC)
@click.option("--to", "target", type=click.Choice(("python", "onnx")), default="python",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="File to write (python: stdout when left out; onnx: SPEC_NAME.onnx).")
@set_option
@click.option("--no-memory-check", "no_memory_check", is_flag=True,
              help="onnx: build and trace the model even when its estimated memory exceeds "
                   "what is available (python needs no memory: the model is built on the "
                   "meta device).")
def export(spec, target, output, sets, no_memory_check):
    """Write the compiled model as a readable PyTorch source file (a class with
    named layers and a forward written out), or as ONNX. Spec strings (names,
    source, notes) are written as literals or sanitized identifiers: nothing
    in a spec becomes code.

    \b
    Examples:
      archcalc export specs/resnet18.toml --to python > resnet18.py
      python resnet18.py                      # builds it, prints 11689512
      archcalc export specs/vgg16.toml --to onnx -o vgg16.onnx
    """
    from ..errors import require
    from ..output import check_output_path, default_output, shown, write_atomic
    if target == "onnx":
        output = default_output(spec, ".onnx") if output is None else output
    if output is not None:
        check_output_path(output, "-o", [spec])
    require("torch", "torch", "archcalc export")
    import os
    import torch
    from ..graph import build_graph
    from ..spec.loader import load
    from ..torch.build import build_model
    from ..torch import export as exporter
    graph = build_graph(load(spec), variables=parse_sets(sets))
    if target == "python":
        with torch.device("meta"):  # the file needs the structure, not the weights
            model = build_model(graph)
        text = exporter.to_python(model, source=os.path.basename(spec), cite=str(graph.source),
                                  notes=str(graph.extra.get("notes", "")))
        if output is not None:
            write_atomic(output, text)
            click.echo(f"wrote {shown(output)}", err=True)
        else:
            click.echo(text, nl=False)
        return
    require("onnx", "onnx", "archcalc export --to onnx")
    if not no_memory_check:
        from ..torch import memory
        memory.guard(memory.for_export(graph), command="export")
    model = build_model(graph)
    write_atomic(output, lambda tmp: exporter.to_onnx(model, graph.input, tmp), by_path=True)
    click.echo(f"wrote {shown(output)}", err=True)
