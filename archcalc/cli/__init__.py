"""The command line: thin click commands over the library.

Each command imports what it needs inside its body, so `archcalc table`
never loads torch, pandas or sympy. Bad input ends in one line on stderr and
exit status 2; a failed run in exit status 1.
"""
from __future__ import annotations

import os
import re
import sys

import click

from ..errors import MissingExtra, RunError, SpecError, printable

FORMATS = ("rich", "json", "csv", "markdown")
DTYPE_NAMES = ("fp32", "fp16", "bf16", "int8")


# Options that mean the same on every command, declared once.
def input_option(f):
    return click.option("--input", "input_shape", metavar="CxHxW",
                        help="Override the spec's input shape, e.g. 3x299x299.")(f)


def set_option(f):
    return click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
                        help="Bind a variable (repeatable); unbound variables give formulas.")(f)


def dtype_option(f):
    return click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32",
                        show_default=True, help="Element type of activations and weights.")(f)


def format_option(choices=FORMATS):
    return click.option("--format", "fmt", type=click.Choice(choices), default="rich",
                        show_default=True, help="rich (a terminal table) or a machine format.")


def threads_option(help_text="CPU threads."):
    """--threads, spelled alike wherever a command runs the model on the CPU."""
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        metavar="N", help=help_text)


def step_options(amp: str, compile_: str):
    """--batch (a sweep), --mode, --amp, --channels-last, --compile: what `bench`
    measures and `predict` predicts, spelled alike."""
    options = (
        click.option("--batch", "-b", "batch_text", default="1", show_default=True,
                     metavar="N[,N...]", help="One batch size or a sweep: 1,8,32."),
        click.option("--mode", type=click.Choice(("inference", "train")), default="inference",
                     show_default=True, help="train: forward + backward + SGD-momentum step."),
        click.option("--amp", type=click.Choice(("bf16", "fp16")), default=None, help=amp),
        click.option("--channels-last", is_flag=True, help="NHWC memory format."),
        click.option("--compile", "compile_", is_flag=True, help=compile_),
    )

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


MEMORY_CHECK_HELP = ("Go on even when the estimated peak memory (an upper bound, computed "
                     "before anything is allocated) exceeds what is available.")


class FiniteFloat(click.FloatRange):
    """A float option: NaN and infinity are refused like any other bad value."""

    name = "finite float"

    def convert(self, value, param, ctx):
        import math
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class BatchSize(click.IntRange):
    """--batch N: a positive integer of at most ARCHCALC_MAX_VALUE_DIGITS digits
    (a 4,000-digit batch is refused, not multiplied into every figure)."""

    name = "batch size"

    def __init__(self):
        super().__init__(min=1)

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            from ..limits import parse_int
            try:
                value = parse_int(value, "--batch")
            except SpecError as e:
                self.fail(str(e), param, ctx)
            except ValueError:
                self.fail(f"{value[:40]!r} is not a valid integer.", param, ctx)
        return super().convert(value, param, ctx)


BATCH = BatchSize()


class _Group(click.Group):
    """Turns every bad-input error into one line and exit 2 (no usage dump, no traceback)."""

    def main(self, args=None, prog_name=None, **extra):
        _tolerant_streams()
        try:
            return super().main(args=args, prog_name=prog_name or "archcalc",
                                standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # bare `archcalc`: its usage
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx else "archcalc"
            fail(f"{cmd}: {e.format_message()} (see {cmd} --help)", 2)
        except click.exceptions.Abort:
            fail("aborted", 1)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code)
        except SpecError as e:
            fail(str(e), 2)
        except MissingExtra as e:  # the install lacks an extra: say which, exit 2
            fail(str(e), 2)
        except RunError as e:  # a run that failed: its one line, exit 1
            fail(str(e), 1)
        except BrokenPipeError:  # `archcalc table ... | head`
            sys.exit(0)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (MemoryError, RecursionError) as e:
            fail(f"out of {'memory' if isinstance(e, MemoryError) else 'stack'}: lower the "
                 "batch or the model's size", 1)
        except Exception as e:  # a failed run, never a traceback (ARCHCALC_DEBUG=1 shows it)
            if os.environ.get("ARCHCALC_DEBUG"):
                raise
            if _out_of_memory(e):
                fail(f"out of memory: {_first_line(e)}", 1)
            if isinstance(e, OSError):
                fail(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""), 1)
            fail(f"{type(e).__name__}: {_first_line(e)} (ARCHCALC_DEBUG=1 shows the traceback)",
                 1)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [""])[0][:300]


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in text \
        or "out of memory" in text.lower()


def _tolerant_streams():
    """Under an encoding that cannot write every character (PYTHONIOENCODING=ascii,
    a C locale), print a '?' for it instead of dying with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if not encoding.startswith("utf") and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):  # pragma: no cover - a detached stream
                pass


class SpecPath(click.Path):
    """A spec file; a name that is not a file here falls back to the specs that
    ship with archcalc (`specs/vgg16.toml` outside a clone, or `vgg16`)."""

    def __init__(self):
        super().__init__(dir_okay=True)

    def convert(self, value, param, ctx):
        from .. import bundled
        return bundled.resolve(super().convert(value, param, ctx))


SPEC = SpecPath()


def fail(message: str, code: int):
    """One line on stderr, control characters made visible, then exit."""
    click.echo(f"error: {printable(message)}", err=True)
    sys.exit(code)


UNLIMITED = 100_000  # piped output with no COLUMNS: every column at full width


def output_width() -> int:
    """COLUMNS when set; the terminal's width on a terminal; unlimited in a pipe."""
    import os
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if sys.stdout.isatty():
        import shutil
        return shutil.get_terminal_size().columns
    return UNLIMITED


def console():
    from rich.console import Console
    # emoji=False: a name holding :warning: is text, not a picture
    return Console(width=output_width(), soft_wrap=False, emoji=False)


def parse_sets(values) -> dict:
    """--set NAME=VALUE: an integer (0 and up: a size, a count, a 0/1 switch for
    `when`), or a finite positive float (a width multiplier such as 1.1)."""
    import math

    from ..limits import parse_int
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.isidentifier():
            raise SpecError(f"--set takes NAME=VALUE, e.g. --set C=256. Received: {item[:60]!r}")
        from ..spec.expr import check_identifier
        check_identifier(name, "--set: the name")
        try:
            number = parse_int(value, f"--set {name}") if re.fullmatch(r"[+-]?\d+", value) \
                else float(value)
        except ValueError:
            raise SpecError(f"--set {name}: the value must be a number. "
                            f"Received: {value[:60]!r}") from None
        if isinstance(number, float) and not (math.isfinite(number) and number > 0):
            raise SpecError(f"--set {name}: a float must be finite and positive. "
                            f"Received: {value[:60]!r}")
        if number < 0:
            raise SpecError(f"--set {name}: the value must not be negative. Received: {number}")
        out[name] = number
    return out


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archcalc")
def main():
    """archcalc: shape, params, memory, FLOPs and receptive field of a CNN
    from a TOML spec, computed without running anything.

    \b
    Examples:
      archcalc table specs/vgg16.toml
      archcalc table specs/vgg16.toml --batch 64 --dtype bf16 --format json
      archcalc kinds
    """


def _report(spec_path, batch, dtype, input_shape, sets, strict, optimizer="adam"):
    return _load_report(spec_path, batch, dtype, input_shape, sets, strict, optimizer)[1]


def _load_report(spec_path, batch, dtype, input_shape, sets, strict, optimizer="adam"):
    """(spec, report): the spec too, to tell whether its notes apply. A
    MODULE:FACTORY in place of a spec is imported in memory, at --input."""
    from ..analysis import analyze
    from ..spec.loader import load
    if is_import_target(spec_path):
        spec = _import_spec(spec_path, input_shape, None, False)
        input_shape = None
    else:
        spec = load(spec_path)
    return spec, analyze(spec, batch=batch, dtype=dtype, optimizer=optimizer, strict=strict,
                         variables=parse_sets(sets), input=input_shape)


def is_import_target(text: str) -> bool:
    """MODULE:FACTORY or FILE.py:NAME (not a spec file that exists)."""
    if not isinstance(text, str) or ":" not in text or os.path.exists(text):
        return False
    where, _, attr = text.rpartition(":")
    return bool(where) and bool(re.fullmatch(r"[A-Za-z_][\w.]*", attr)) and (
        where.endswith(".py") or bool(re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*", where)))


def _import_spec(target, input_shape, kwargs_json, allow_opaque, name=None, text=False,
                 timeout=None):
    """Import MODULE:FACTORY: the Spec (or its TOML text with text=True); the
    user's code raising, or operations without a kind, exit 1 in one line;
    its code exiting, or running past --timeout, exit 2 in one line."""
    from ..errors import require
    from ..usercode import parse_timeout, running_user_code
    seconds = parse_timeout(timeout)
    require("torch", "torch", "archcalc import")
    from ..torch import import_targets, importer
    try:
        with running_user_code(printable(target)[:80], seconds):
            built = import_targets.load(target, kwargs_json)
            model, label = built.model, built.label
            done = importer.import_module(model, input_shape or built.default_input, name=name,
                                          allow_opaque=allow_opaque, label=label)
    except (importer.ImportFailure, importer.Unsupported) as e:
        fail(str(e), 1)
    from ..render.safe import clean  # the model's own names and messages: data
    if done.tracer != "torch.fx":
        click.echo(clean(f"note: traced with {done.tracer}: torch.fx cannot trace {label} "
                         f"({done.fx_error})"), err=True)
    if done.unused:
        click.echo(f"note: left out {clean(', '.join(done.unused))} "
                   f"({sum(done.unused.values()):,} params): not used by the forward at "
                   "inference", err=True)
    if done.opaque:
        click.echo(f"note: {len(done.opaque)} opaque row(s): their MACs are unknown (the "
                   f"variables {clean(', '.join(done.opaque[:5]))}"
                   f"{', ...' if len(done.opaque) > 5 else ''}"
                   "); every total that includes them is a formula", err=True)
    if text:
        return done
    from ..spec.loader import loads
    return loads(done.text, file=f"<import {label}>")


def _warn(report):
    if report.free_symbols:
        click.echo(f"note: {printable(report.model.file)}: unbound variable(s) "
                   f"{', '.join(report.free_symbols)}: the "
                   "figures are formulas; bind them with --set NAME=VALUE", err=True)
    for w in report.findings:
        click.echo(f"warning: {printable(report.model.file)}: {w} (--strict makes this an error)",
                   err=True)


@main.command()
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
    loaded, report = _load_report(spec, batch, dtype, input_shape, sets, strict, optimizer)
    _warn(report)
    own = render.own_settings(loaded, report)
    if depth:
        from dataclasses import replace
        from ..analysis import fold
        report = replace(report, rows=fold(report.rows, depth))
    if fmt == "rich":
        render.render_rich(report, console(), keys, own=own)
    elif fmt == "markdown":
        click.echo(render.render_markdown(report, keys, own=own).rstrip("\n"))
    else:
        text = {"json": render.render_json, "csv": render.render_csv}[fmt](report)
        click.echo(text.rstrip("\n"))


@main.command("import")
@click.argument("target", metavar="MODULE:FACTORY")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The TOML file to write [stdout].")
@click.option("--input", "input_shape", metavar="CxHxW", default=None,
              help="The input the model is traced at (the spec's input) [a timm model's "
                   "pretrained input_size; 3x224x224 otherwise].")
@click.option("--kwargs", "kwargs_json", metavar="JSON",
              help="Keyword arguments for the factory (timm: for create_model), a JSON object (never evaluated as "
                   "code), e.g. '{\"num_classes\": 10}'.")
@click.option("--allow-opaque", is_flag=True,
              help="Keep operations without a kind as opaque rows (shape and params "
                   "measured, MACs an unbound variable: totals become formulas) instead of "
                   "failing.")
@click.option("--name", help="The spec's model name [the factory's].")
@click.option("--timeout", metavar="SECONDS",
              help="Stop an import whose module, factory or forward runs longer "
                   "[120, or ARCHCALC_IMPORT_TIMEOUT_S].")
def import_(target, output, input_shape, kwargs_json, allow_opaque, name, timeout):
    """Import a PyTorch model as a spec: trace it (torch.fx), map each call to a
    kind, fold the dataflow into residuals, concats and splits, and repeated
    modules into blocks. Rows are named by module paths, so the spec's built
    model loads the original's state_dict. Importing runs the Python module you
    name (it imports it and calls the factory); the spec it writes never runs
    anything. Operations without a kind fail the import, each listed with its
    module path and count (exit 1), unless --allow-opaque.

    \b
    Examples:
      archcalc import torchvision.models:resnet50 -o resnet50.toml
      archcalc import timm:resnet50 -o resnet50.toml    # timm's create_model, never pretrained
      archcalc import torchvision.models:resnet18 --kwargs '{"num_classes": 10}' --input 3x32x32
      archcalc import path/to/net.py:Net -o net.toml
      archcalc import mypkg.nets:build_net --allow-opaque -o net.toml
      archcalc table torchvision.models:mobilenet_v3_small    # imported in memory
    """
    from ..output import check_output_path, shown, write_atomic
    if output is not None:
        check_output_path(output, "-o", [target.rpartition(":")[0]])
    done = _import_spec(target, input_shape, kwargs_json, allow_opaque, name, text=True,
                        timeout=timeout)
    if output is not None:
        write_atomic(output, done.text)
        click.echo(f"wrote {shown(output)} ({done.text.count(chr(10))} lines, "
                   f"{done.params:,} params)", err=True)
    else:
        click.echo(done.text, nl=False)


@main.command()
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
        from ..render.records import render
        click.echo(render(records, fmt).rstrip("\n"))
        return
    t = Table(title="Layer kinds", header_style="bold")
    for col in ("kind", "aliases", "arguments (default)", "FLOPs rule"):
        t.add_column(col, overflow="fold")
    for r in records:
        t.add_row(r["kind"], r["aliases"], r["arguments"], r["flops_rule"])
    c = console()
    c.print(t)
    c.print("* the primary argument: {conv = 64} sets out = 64.", style="dim")


@main.command()
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
    _require_device(device)
    from ..render.check import render_check
    from ..spec.loader import load
    from ..torch.check import run_check
    result = run_check(load(spec), batch=batch, device=device, variables=parse_sets(sets),
                       input=input_shape, force_meta=meta, memory_check=not no_memory_check)
    if fmt == "rich":
        render_check(result, console(), all_rows=all_rows)
    else:
        from ..render.check import check_records
        from ..render.records import render
        rows, extra = check_records(result)
        click.echo(render(rows, fmt, extra).rstrip("\n"))
    sys.exit(0 if result.ok else 1)


def _require_device(device: str):
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SpecError("--device cuda: no CUDA device is available here "
                            "(torch.cuda.is_available() is False); use --device cpu")


@main.command()
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


def parse_batches(text: str) -> list[int]:
    """--batch 1,8,32: at most ARCHCALC_MAX_BATCHES sizes of bounded digits,
    counted before any is converted."""
    from ..limits import MAX_BATCHES, parse_int
    items = [b for b in text.split(",") if b.strip()]
    MAX_BATCHES.check(len(items), f"--batch lists {len(items):,} sizes")
    try:
        batches = [parse_int(b, "--batch") for b in items]
    except ValueError:
        raise SpecError(f"--batch takes a number or a list such as 1,8,32. "
                        f"Received: {text[:60]!r}") from None
    if not batches or any(b < 1 for b in batches):
        raise SpecError(f"--batch values must be positive integers. Received: {text[:60]!r}")
    return batches


@main.command()
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
    _require_device(device)
    import torch
    if device == "cpu" and amp == "fp16":
        raise SpecError("--amp fp16 needs a GPU; on the CPU use --amp bf16")
    if threads:
        torch.set_num_threads(cap_threads(threads))
    from ..graph import build_graph
    from ..render import bench as render
    from ..spec.loader import load
    from ..torch import bench as runner
    graph = build_graph(load(spec), variables=parse_sets(sets))
    _no_symbols(graph)
    profile = _profile(predict_profile, device) if predict_profile else None
    if profile is not None and device == "cpu" and \
            profile.data.get("threads") not in (None, torch.get_num_threads()):
        click.echo(f"note: the profile was measured with {profile.data['threads']} threads, "
                   f"this run uses {torch.get_num_threads()} (--threads)", err=True)
    if profile is not None:   # what predict would warn about this profile, before the run
        from ..predict import predict as predict_steps
        _profile_warnings(predict_steps(graph, profile, batches=batches, mode=mode, amp=amp,
                                        channels_last=channels_last), strict=False)
    if max_batch:
        predicted, verified = runner.max_batch(graph, device=device, mode=mode, amp=amp,
                                               channels_last=channels_last)
        click.echo(f"largest batch: predicted {predicted}, verified by a run: {verified}")
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    with Progress(TextColumn("[bold]batch {task.fields[batch]}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("steps (warm-up included)"),
                  console=_stderr_console(), transient=True,
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
    text = {"json": lambda: render.to_json(graph.name, results, peak_source),
            "csv": lambda: render.to_csv(results),
            "markdown": lambda: render.to_markdown(results)}
    if fmt == "rich":
        render.render_rich(graph.name, results, peak_source, console())
    else:
        click.echo(text[fmt]().rstrip("\n"))
    if output is not None:
        from ..output import shown, write_atomic
        write_atomic(output, text.get(fmt, text["json"])())
        click.echo(f"wrote {shown(output)}", err=True)


def cap_threads(threads: int) -> int:
    """--threads above 4 per CPU (at most 1024) only slows a run down, and a
    huge number makes OpenMP try to start that many threads: cap it, and say so."""
    import os
    cpus = os.cpu_count() or 1
    limit = min(1024, 4 * cpus)
    if threads > limit:
        click.echo(f"note: --threads {threads:,} capped at {limit} (4 per CPU, {cpus} CPUs "
                   "here, at most 1024)", err=True)
        return limit
    return threads


def _stderr_console():
    from rich.console import Console
    return Console(stderr=True, emoji=False)


def _no_symbols(graph):
    from ..analysis import analyze
    report = analyze(graph)
    if report.symbolic:
        raise SpecError(f"the spec has unbound variables ({', '.join(report.free_symbols)}): "
                        "a real model needs numbers; bind them with --set NAME=VALUE",
                        file=graph.file)


@main.command()
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
    _require_device(device)
    import torch
    if threads:
        torch.set_num_threads(threads)
    if clock == "cpu" and (device != "cpu" or torch.get_num_threads() != 1):
        raise SpecError("--clock cpu measures one CPU thread: use it with --device cpu "
                        "--threads 1")
    names = None
    if tables:
        # each table once: a repeated name would time it twice into one table
        names = list(dict.fromkeys(t.strip() for t in tables.split(",") if t.strip()))
        bad = [t for t in names if t.split("-")[0] not in ("fp32", "bf16", "fp16")
               or t.count("-") > 1 or (t.count("-") == 1 and not t.endswith("-cl"))]
        if bad or not names:
            raise SpecError(f"--tables takes dtypes fp32, bf16, fp16, each optionally with "
                            f"-cl (channels-last). Received: {tables!r}")
        if device == "cpu" and any(t.startswith("fp16") for t in names):
            raise SpecError("--tables fp16 needs a GPU; on the CPU use bf16")
    from ..render.predict import render_profile
    from ..render.safe import json_text
    from ..torch.calibrate import calibrate as run
    from ..render.predict import CalibrateProgress
    with CalibrateProgress(_stderr_console()) as progress:
        profile = run(device, quick=quick, budget_s=budget_s, tables=names, compile=compile_,
                      timer=clock, progress=progress)
    write_atomic(output, json_text(profile, indent=1) + "\n")
    render_profile(profile, output, console())


def _profile_warnings(results, strict: bool) -> None:
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


def _profile(name, device="cpu"):
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


@main.command()
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
    from ..predict import predict as run, to_json
    from ..render.predict import render_rich
    from ..spec.loader import load
    from ..output import check_output_path, shown, write_atomic
    batches = parse_batches(batch_text)
    if output is not None:
        check_output_path(output, "-o", [spec, profile_name])
    profile = _profile(profile_name)
    if amp == "fp16" and profile.device == "cpu":
        raise SpecError("--amp fp16 needs a GPU profile; on the CPU use --amp bf16")
    results = run(load(spec), profile, batches=batches, mode=mode, amp=amp,
                  channels_last=channels_last, compile=compile_, variables=parse_sets(sets),
                  input=input_shape)
    _profile_warnings(results, strict)
    if fmt == "json":
        click.echo(to_json(results, profile, layers=not summary))
    elif fmt in ("csv", "markdown"):
        from ..render.predict import records
        from ..render.records import render
        rows, extra = records(results, profile, layers=not summary)
        click.echo(render(rows, fmt, extra).rstrip("\n"))
    else:
        render_rich(results, profile, console(), layers=not summary)
    if output is not None:
        write_atomic(output, to_json(results, profile, layers=not summary))
        click.echo(f"wrote {shown(output)}", err=True)


@main.command()
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
    _require_device(device)
    kinds = tuple(a for a in augment.split(",") if a)
    bad = [a for a in kinds if a not in ("crop", "flip")]
    if bad:
        raise SpecError(f"--augment takes crop and/or flip, e.g. crop,flip. Received: {augment!r}")
    import os
    from ..graph import build_graph
    from ..spec.loader import load
    from ..torch.train import TrainConfig, train as run_train
    graph = build_graph(load(spec), variables=parse_sets(sets))
    _no_symbols(graph)
    out_dir = out_dir or os.path.join("runs", os.path.splitext(os.path.basename(spec))[0])
    config = TrainConfig(data=os.path.expanduser(data) if ":" in data else data, epochs=epochs,
                         batch=batch, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         schedule=schedule, label_smoothing=label_smoothing, augment=kinds,
                         seed=seed, device=device, out=out_dir, plot=plot, resume=resume,
                         force=force, threads=cap_threads(threads) if threads else None,
                         memory_check=not no_memory_check)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)
    from ..render.safe import markup
    from ..sym import human_bytes
    out = console()
    main_rank = int(os.environ.get("RANK", "0")) == 0
    interactive = sys.stderr.isatty()
    # on one terminal the lines and the bar go through one console, whose live
    # display clears the bar's line before a line is printed (two consoles
    # would print "0:00:00epoch 1/2 ..." onto the bar's line)
    bar_console = out if interactive and sys.stdout.isatty() else _stderr_console()
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
            rate = (step - first) * batch / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=step, epoch=epoch, rate=f"{rate:,.0f} samples/s")
            # piped: a line at each quarter of the epoch instead of a bar
            if not interactive and main_rank and total >= 4 and step % (total // 4) == 0 \
                    and step < total:
                left = (total - step) * batch / max(rate, 1e-9)
                click.echo(f"epoch {epoch}: step {step}/{total}, {rate:,.0f} samples/s, "
                           f"about {left:,.0f} s left in the epoch", err=True)

        def report(m):
            if isinstance(m, str):
                out.print(markup(m), highlight=False)
                return
            out.print(f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f}  test loss "
                      f"{m.test_loss:.4f}  accuracy {100 * m.test_accuracy:.1f}%  "
                      f"{m.time_s:.1f} s  {m.samples_per_s:,.0f} samples/s  memory "
                      f"{human_bytes(m.peak_memory_bytes)} measured / "
                      f"{human_bytes(m.predicted_memory_bytes)} predicted", highlight=False)
        try:
            run_train(graph, config, report=report, progress=progress)
        except KeyboardInterrupt:
            sys.exit(130)
    if int(os.environ.get("RANK", "0")) == 0:
        shown_dir = markup(out_dir)  # a folder name is data, not rich markup
        out.print(f"metrics: {shown_dir}/metrics.csv, {shown_dir}/metrics.json; checkpoint: "
                  f"{shown_dir}/checkpoint.pt"
                  + (f"; curves: {shown_dir}/curves.png" if plot else ""),
                  style="dim", highlight=False)


def _render_comparison(comparison, fmt, title):
    from ..render import compare as render
    if fmt == "rich":
        render.render_rich(comparison, console(), title)
    else:
        text = {"json": render.render_json, "csv": render.render_csv,
                "markdown": render.render_markdown}[fmt](comparison)
        click.echo(text.rstrip("\n"))


@main.command()
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
    _render_comparison(comparison, fmt, "Comparison")


@main.command()
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
    _render_comparison(comparison, fmt, f"{t.name}: {t.summary}")
    if channels or size:
        bound = {k: v for k, v in (("C", channels), ("H", size), ("W", size)) if v}
        numeric = run(specs, variables=bound)
        what = ", ".join(f"{k} = {v}" for k, v in bound.items())
        _render_comparison(numeric, fmt, f"{t.name} with {what}")
    if fmt == "rich":
        console().print(t.lesson, highlight=False)
        for n in {n for s in specs for n in ([s.extra["notes"]] if "notes" in s.extra else [])}:
            from rich.markup import escape
            console().print(escape(f"Note: {n}"), style="italic", highlight=False)


@main.command()
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
    from ..explain import explain as run, find_row
    report = _report(spec, batch, dtype, input_shape, sets, False)
    lines = run(report, layer)
    from ..render.safe import clean, json_text, md_cell
    if fmt == "json":
        row = find_row(report, layer)
        click.echo(json_text({"layer": row.name, "row": row.as_json(), "steps": lines},
                             indent=2))
    elif fmt == "markdown":
        body = [clean(line) for line in lines[1:]]
        # a fence longer than any run of backticks in the text: a name cannot close it
        fence = "`" * max(3, 1 + max((len(r) for b in body for r in re.findall("`+", b)),
                                     default=0))
        click.echo(f"### {md_cell(lines[0])}\n\n{fence}\n" + "\n".join(body) + f"\n{fence}")
    else:
        for line in lines:
            click.echo(clean(line))


@main.command()
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
    reports = [_report(s, 1, "fp32", None, sets, False) for s in specs]
    used = draw(reports, output, depth)
    if used and not depth:
        click.echo(f"note: more than {ROW_LIMIT} layers: one bar per block at depth {used} "
                   "(--depth N to choose)", err=True)
    click.echo(f"wrote {shown(output)}", err=True)


@main.command()
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
        _, report = _load_report(spec, 1, "fp32", input_shape, sets, False)
        results.append((report, rules.lint(report)))
    if fmt == "json":
        from ..render.safe import json_text
        data = [rules.to_json(r, found) for r, found in results]
        click.echo(json_text(data[0] if len(data) == 1 else data, indent=2))
    else:
        out = console()
        for report, found in results:
            rules.render_rich(report, found, out)
    if strict and any(found for _, found in results):
        sys.exit(1)


@main.command()
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
def report(specs, output, batch, dtype, optimizer, input_shape, sets, title):
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
        _warn(r)
        items.append((r, own_settings(spec, r)))
    text = html.page(items, title)
    if output == "-":
        click.echo(text, nl=False)
        return
    write_atomic(output, text)
    click.echo(f"wrote {shown(output)} ({len(text.encode()) / 1e3:,.0f} KB)", err=True)


# `archcalc sweep` lives in its own package; only click is imported here
from ..sweep.command import register as _register_sweep  # noqa: E402

_register_sweep(main, SPEC, dtype_option, input_option, set_option, format_option)
