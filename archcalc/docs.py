"""The generated pages of the docs site: the CLI reference (from the click
commands) and the layer-kinds reference (from the kinds registry).

They are built from the code each time the site is built (docs/hooks.py), so
they cannot go stale. `python -m archcalc.docs DIR` writes them as files too,
to read them without MkDocs; `python -m archcalc.docs --limits` prints the
limits table of the README's Trust section.
"""
from __future__ import annotations

import inspect
import os
import sys

import click

# Options that mean the same wherever they appear; the matrix on the CLI page
# shows which command takes which, read from the commands themselves.
SHARED_OPTIONS = ("--format", "--input", "--set", "--dtype", "--batch", "-o")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (one line, no column breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _help_parts(command: click.Command) -> tuple[str, list[str]]:
    """A command's help split into its prose and its example lines (the lines
    after "Examples:"); click's \\b markers are dropped."""
    prose, examples, in_examples = [], [], False
    for line in (command.help or "").splitlines():
        stripped = line.strip()
        if stripped == "\b":
            continue
        if stripped.rstrip(":") == "Examples":
            in_examples = True
            continue
        (examples if in_examples else prose).append(stripped if in_examples else line)
    return inspect.cleandoc("\n".join(prose)), [e for e in examples if e]


def _option_row(param: click.Parameter) -> str:
    names = ", ".join(f"`{o}`" for o in (*param.opts, *param.secondary_opts))
    if isinstance(param.type, click.Choice):
        value = ", ".join(f"`{c}`" for c in param.type.choices)
    elif getattr(param, "is_flag", False):
        value = "flag"
    elif param.metavar:
        value = f"`{param.metavar}`"
    elif hasattr(param.type, "_describe_range"):
        # click's own wording of the range, as --help prints it ("x>=1")
        value = f"{param.type.name.split()[0]}, {param.type._describe_range()}"
    else:
        value = param.type.name
    default = ""
    if getattr(param, "show_default", False) and param.default not in (None, False, ()):
        default = f"`{param.default}`"
    return f"| {names} | {_cell(value)} | {default} | {_cell(getattr(param, 'help', '') or '')} |"


def _command_section(name: str, command: click.Command) -> list[str]:
    prose, examples = _help_parts(command)
    arguments = " ".join(p.make_metavar(click.Context(command))
                         for p in command.params if isinstance(p, click.Argument))
    lines = [f"## archcalc {name}", "", "```text", f"archcalc {name} [OPTIONS] {arguments}".rstrip(),
             "```", "", prose, ""]
    if examples:
        lines += ["Examples (from `--help`):", "", "```text", *examples, "```", ""]
    options = [p for p in command.params if isinstance(p, click.Option)]
    if options:
        lines += ["| option | value | default | meaning |", "|---|---|---|---|"]
        lines += [_option_row(p) for p in options]
        lines.append("")
    return lines


def _option_names(command: click.Command) -> set[str]:
    return {o for p in command.params if isinstance(p, click.Option) for o in p.opts}


def shared_option_matrix(group: click.Group) -> list[str]:
    """Which command takes which of the shared options (with --format's choices)."""
    lines = ["| command | " + " | ".join(f"`{o}`" for o in SHARED_OPTIONS) + " |",
             "|---|" + "---|" * len(SHARED_OPTIONS)]
    for name, command in sorted(group.commands.items()):
        cells = []
        for option in SHARED_OPTIONS:
            param = next((p for p in command.params if isinstance(p, click.Option)
                          and option in p.opts), None)
            if param is None:
                cells.append("")
            elif option == "--format" and isinstance(param.type, click.Choice):
                cells.append(", ".join(param.type.choices))
            else:
                cells.append("yes")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def cli_markdown() -> str:
    """The CLI reference: every command, its arguments, options and examples."""
    from .cli import main
    commands = sorted(main.commands.items())
    lines = [
        "# CLI reference",
        "",
        "Generated from the commands themselves each time the site is built;",
        "`archcalc COMMAND --help` prints the same.",
        "",
        "Exit status: 0 on success, 2 on bad input (one line on stderr naming",
        "the file, the layer or option, and what is wrong), 1 when a run fails.",
        "",
        "## Shared options",
        "",
        "An option means the same on every command that takes it; this table",
        "shows which command takes which (for `--format`, its choices).",
        "",
        *shared_option_matrix(main),
        "",
        "Commands: " + ", ".join(f"[`{n}`](#archcalc-{n})" for n, _ in commands) + ".",
        "",
    ]
    for name, command in commands:
        lines += _command_section(name, command)
    return "\n".join(lines).rstrip("\n") + "\n"


def kinds_markdown() -> str:
    """The kinds reference: exactly what `archcalc kinds --format markdown` prints."""
    from click.testing import CliRunner
    from .cli import main
    result = CliRunner().invoke(main, ["kinds", "--format", "markdown"])
    if result.exit_code != 0:
        raise RuntimeError(f"archcalc kinds failed: {result.output.strip()}")
    return "\n".join([
        "# Layer kinds",
        "",
        "Every kind a spec can use, generated from the kinds registry each time",
        "the site is built (`archcalc kinds` prints the same). In *arguments*,",
        "`*` marks the primary argument (`{conv = 64}` sets `out = 64`) and",
        "`=x` a default; `batch_norm, activation` means the row can fuse them.",
        "",
        result.output.rstrip("\n"),
        "",
    ])


def limits_markdown() -> str:
    """The table of every limit in archcalc/limits.py: how to raise it, its
    default and what it bounds (the README's Trust section holds a copy, which
    tests/test_readme.py compares with this)."""
    from . import limits
    rows = ["| raise with | default | bounds |", "|---|---|---|"]
    for limit in vars(limits).values():
        if isinstance(limit, limits.Limit):
            rows.append(f"| `{limit.env}=N` | {limit.default:,} | {_cell(limit.what)} |")
    return "\n".join(rows) + "\n"


GENERATED = {"cli.md": cli_markdown, "kinds.md": kinds_markdown}


def write(directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, make in GENERATED.items():
        path = os.path.join(directory, name)
        from .output import write_atomic  # the one writer: a failed write keeps the old page
        write_atomic(path, make())
        written.append(path)
    return written


if __name__ == "__main__":
    if sys.argv[1:] == ["--limits"]:   # the table to paste into the README's Trust section
        print(limits_markdown(), end="")
        sys.exit(0)
    for written_path in write(sys.argv[1] if len(sys.argv) > 1 else "site-generated"):
        print(written_path)
