"""What every command shares: the options spelled alike everywhere, the SPEC
and --batch types, the console, and the group that turns any error into one
line on stderr with exit 2 (bad input) or 1 (a failed run), never a traceback."""
from __future__ import annotations

import os
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


class SpecPath(click.Path):
    """A spec file; a name that is not a file here falls back to the specs that
    ship with archcalc (`specs/vgg16.toml` outside a clone, or `vgg16`)."""

    def __init__(self):
        super().__init__(dir_okay=True)

    def convert(self, value, param, ctx):
        from .. import bundled
        return bundled.resolve(super().convert(value, param, ctx))


SPEC = SpecPath()


class ErrorHandlingGroup(click.Group):
    """Turns every bad-input error into one line and exit 2 (no usage dump, no traceback)."""

    def main(self, args=None, prog_name=None, **extra):
        tolerant_streams()
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
            if is_out_of_memory(e):
                fail(f"out of memory: {first_line(e)}", 1)
            if isinstance(e, OSError):
                fail(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""), 1)
            fail(f"{type(e).__name__}: {first_line(e)} (ARCHCALC_DEBUG=1 shows the traceback)",
                 1)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [""])[0][:300]


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in text \
        or "out of memory" in text.lower()


def tolerant_streams():
    """Under an encoding that cannot write every character (PYTHONIOENCODING=ascii,
    a C locale), print a '?' for it instead of dying with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if not encoding.startswith("utf") and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):  # pragma: no cover - a detached stream
                pass


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


def show(result, fmt: str, **options) -> None:
    """Print a command's result in its --format: "rich" on the console, the
    other formats as text on stdout (archcalc.render.render chooses how)."""
    from ..render import render
    text = render(result, fmt, console() if fmt == "rich" else None, **options)
    if text is not None:
        click.echo(text.rstrip("\n"))


def stderr_console():
    from rich.console import Console
    return Console(stderr=True, emoji=False)


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


def require_device(device: str):
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SpecError("--device cuda: no CUDA device is available here "
                            "(torch.cuda.is_available() is False); use --device cpu")
