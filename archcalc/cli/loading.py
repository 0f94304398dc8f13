"""From a SPEC argument to an analysis: load the spec (or import a
MODULE:FACTORY in memory), bind --set, analyze, and say on stderr what the
figures rest on (unbound variables, warnings)."""
from __future__ import annotations

import click

from ..errors import SpecError, printable
from ..options import is_import_target, parse_sets
from .options import fail


def analyzed_report(spec_path, batch, dtype, input_shape, sets, strict, optimizer="adam"):
    return load_and_analyze(spec_path, batch, dtype, input_shape, sets, strict, optimizer)[1]


def load_and_analyze(spec_path, batch, dtype, input_shape, sets, strict, optimizer="adam"):
    """(spec, report): the spec too, to tell whether its notes apply. A
    MODULE:FACTORY in place of a spec is imported in memory, at --input."""
    from ..analysis import analyze
    from ..spec.loader import load
    if is_import_target(spec_path):
        spec = import_spec(spec_path, input_shape, None, False)
        input_shape = None
    else:
        spec = load(spec_path)
    return spec, analyze(spec, batch=batch, dtype=dtype, optimizer=optimizer, strict=strict,
                         variables=parse_sets(sets), input=input_shape)


def import_spec(target, input_shape, kwargs_json, strict=False, name=None, text=False,
                timeout=None):
    """Import MODULE:FACTORY: the Spec (or its TOML text with text=True); the
    user's code raising, or operations without a kind under ``strict``, exit 1
    in one line; its code exiting, or running past --timeout, exit 2 in one line."""
    from ..errors import require
    from ..usercode import parse_timeout, running_user_code
    seconds = parse_timeout(timeout)
    require("torch", "torch", "archcalc import")
    from ..torch import importer
    from ..torch.importer import targets as import_targets
    try:
        with running_user_code(printable(target)[:80], seconds):
            built = import_targets.load(target, kwargs_json)
            model, label = built.model, built.label
            done = importer.import_module(model, input_shape or built.default_input, name=name,
                                          strict=strict, label=label)
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
    if done.whole:
        click.echo(clean(f"note: {label} is one opaque row, its whole forward, measured, not "
                         "derived: its own forward computes on several tensors what no row "
                         "can (the spec's notes say which); --strict refuses it"), err=True)
    elif done.opaque:
        kinds = sorted(set(done.opaque))
        click.echo(f"note: {len(done.opaque)} opaque row(s), measured, not derived (no kind "
                   f"for {clean(', '.join(kinds[:3]))}{', ...' if len(kinds) > 3 else ''}): "
                   "their MACs are FlopCounterMode's on the meta device; --strict refuses "
                   "them", err=True)
    if text:
        return done
    from ..spec.loader import loads
    return loads(done.text, file=f"<import {label}>")


def warn_about(report):
    if report.free_symbols:
        click.echo(f"note: {printable(report.model.file)}: unbound variable(s) "
                   f"{', '.join(report.free_symbols)}: the "
                   "figures are formulas; bind them with --set NAME=VALUE", err=True)
    for w in report.findings:
        click.echo(f"warning: {printable(report.model.file)}: {w} (--strict makes this an error)",
                   err=True)


def require_numbers(graph):
    from ..analysis import analyze
    report = analyze(graph)
    if report.symbolic:
        raise SpecError(f"the spec has unbound variables ({', '.join(report.free_symbols)}): "
                        "a real model needs numbers; bind them with --set NAME=VALUE",
                        file=graph.file)
