"""The command line: thin click commands over the library, one module per
group of commands (analysis, outputs, measure, import_cmd, predict,
sweep_cmd), the shared options in options.py.

Each command imports what it needs inside its body, so `archcalc table`
never loads torch, pandas or sympy. Bad input ends in one line on stderr and
exit status 2; a failed run in exit status 1.
"""
from __future__ import annotations

import click

from . import analysis, import_cmd, measure, outputs, predict, sweep_cmd
from ..options import is_import_target, parse_sets  # noqa: F401 (re-exported: tests import them here)
from .options import ErrorHandlingGroup


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


# click lists the commands sorted by name: the order they are added in is free
for command in (analysis.table, analysis.kinds, analysis.explain, analysis.compare,
                analysis.trick, analysis.lint, outputs.html_report, outputs.plot, outputs.export,
                measure.check, measure.bench, measure.train, import_cmd.import_,
                predict.calibrate, predict.predict, sweep_cmd.sweep):
    main.add_command(command)
