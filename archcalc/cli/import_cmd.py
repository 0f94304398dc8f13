"""`archcalc import MODULE:FACTORY`: a PyTorch model written out as a spec."""
from __future__ import annotations

import click

from .loading import import_spec


@click.command("import")
@click.argument("target", metavar="MODULE:FACTORY")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The TOML file to write [stdout].")
@click.option("--input", "input_shape", metavar="CxHxW", default=None,
              help="The input the model is traced at (the spec's input) [a timm model's "
                   "pretrained input_size; 3x224x224 otherwise].")
@click.option("--kwargs", "kwargs_json", metavar="JSON",
              help="Keyword arguments for the factory (timm: for create_model), a JSON object (never evaluated as "
                   "code), e.g. '{\"num_classes\": 10}'.")
@click.option("--strict", is_flag=True,
              help="Fail on operations without a kind (each listed with its module path "
                   "and count, exit 1) instead of importing them as opaque rows.")
# the default since opaque rows are measured: accepted for older scripts, no effect
@click.option("--allow-opaque", is_flag=True, hidden=True)
@click.option("--name", help="The spec's model name [the factory's].")
@click.option("--timeout", metavar="SECONDS",
              help="Stop an import whose module, factory or forward runs longer "
                   "[120, or ARCHCALC_IMPORT_TIMEOUT_S].")
def import_(target, output, input_shape, kwargs_json, strict, allow_opaque, name, timeout):
    """Import a PyTorch model as a spec: trace it (torch.fx), map each call to a
    kind, fold the dataflow into residuals, concats and splits, and repeated
    modules into blocks. Rows are named by module paths, so the spec's built
    model loads the original's state_dict. Importing runs the Python module you
    name (it imports it and calls the factory); the spec it writes never runs
    anything. An operation without a kind becomes an opaque row: its output
    shape, params and MACs measured on the module (FlopCounterMode on the meta
    device, that call alone), marked "measured, not derived" in the table, so
    the totals stay exact; --strict refuses them instead (exit 1).

    \b
    Examples:
      archcalc import torchvision.models:resnet50 -o resnet50.toml
      archcalc import timm:resnet50 -o resnet50.toml    # timm's create_model, never pretrained
      archcalc import torchvision.models:resnet18 --kwargs '{"num_classes": 10}' --input 3x32x32
      archcalc import path/to/net.py:Net -o net.toml
      archcalc import mypkg.nets:build_net --strict -o net.toml   # no opaque rows
      archcalc table torchvision.models:mobilenet_v3_small    # imported in memory
    """
    from ..output import check_output_path, shown, write_atomic
    if output is not None:
        check_output_path(output, "-o", [target.rpartition(":")[0]])
    done = import_spec(target, input_shape, kwargs_json, strict, name, text=True,
                       timeout=timeout)
    if output is not None:
        write_atomic(output, done.text)
        click.echo(f"wrote {shown(output)} ({done.text.count(chr(10))} lines, "
                   f"{done.params:,} params)", err=True)
    else:
        click.echo(done.text, nl=False)
