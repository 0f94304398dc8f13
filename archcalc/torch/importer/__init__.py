"""Import a PyTorch model as a spec: `archcalc import MODULE:FACTORY`.

The model is traced with torch.fx (symbolic trace: known modules stay
leaves, the rest is traced through) and run once on the meta device to
measure every tensor's shape (a forward fx cannot trace, one that loops or
branches on a shape, is exported with torch.export instead and its graph
regrouped into the same calls: archcalc.torch.importer.export_trace). Each call is
mapped to a kind through one of two registries (leaf modules by type,
functions and methods by target); reshapes are evaluated on an index tensor
and recognized as what they do (flatten, tokens, to_map, channel_shuffle, a
token pick), whatever chain of view/permute/transpose writes them. An
operation with no mapping is never counted as zero, nor guessed: it becomes an
`opaque` row whose output shape, parameters and MACs are measured on the module
(FlopCounterMode on the meta device, that call alone; archcalc.torch.importer.
measuring), marked "measured, not derived"; an op that reads several tensors or
only parameters keeps the module that calls it whole, as one such row. With
``strict`` the import fails instead, naming each one with its module path and
count.

The dataflow graph is folded back into the spec's structures: a fork and
the node where its paths meet become a residual (add), a gate (mul), a concat
or a dense merge (DenseNet's running concatenation), a split/cat pair
becomes a split; a max pool's indices are followed into the max unpools that
read them (each unpool's `of` names the pool's row). Rows are named and
nested by the module paths, so the spec's built model has the original's
state_dict keys; rows of stateless modules (a ReLU called three times) get
unique names of their own. The writer (archcalc.spec.writer) then folds
repeated structure into blocks.

Importing runs the user's Python (the module they name); the spec it writes
never runs anything.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...errors import SpecError
from .emit import _Emitter, _annotate_classes, _resolve_names
from .failures import ImportFailure, Unsupported, _first_line
from .fusion import _fuse_levels, _fused_defaults
from .graph_builder import _GraphBuilder
from .probing import PROBE_BATCH, Probed, probe
from .structure import _Recover, _normalize_cats
from .tracing import _Tracing
from .wiring import wire

# the public names (the CLI, archcalc.from_module, benchmarks and tests use them)
from .failures import TraceFailure
from .targets import empty_weights, load_target, parse_kwargs
from .tracing import trace

__all__ = ["Imported", "ImportFailure", "TraceFailure", "Unsupported", "empty_weights",
           "from_module", "import_module", "load_target", "parse_kwargs", "trace"]


# --------------------------------------------------------------------------
# the import


# traces of one import: each keeps whole the modules of the calls the last one
# could not make rows of (one level of nesting per pass)
PASSES = 8


@dataclass
class Imported:
    text: str                     # the spec's TOML
    name: str
    params: int                   # the module's parameters the forward uses
    unused: dict                  # module path -> parameters the forward never reaches
    opaque: list                  # what each opaque row stands for (measured, not derived)
    tracer: str = "torch.fx"      # or "torch.export", where fx cannot trace the forward
    fx_error: str | None = None   # why fx could not
    whole: bool = False           # the model's forward is its one opaque row


def from_module(module: nn.Module, input=(3, 224, 224), *, name: str | None = None,
                source: str | None = None, strict: bool = False,
                allow_opaque: bool | None = None):
    """The spec of a PyTorch module: ``archcalc.from_module(model, input=(3, 224, 224))``.
    ``strict``: refuse operations without a kind (Unsupported) rather than keep
    them as measured opaque rows; ``allow_opaque``: accepted, no effect (the default)."""
    from ...spec.loader import loads
    done = import_module(module, input, name=name, source=source, strict=strict)
    return loads(done.text, file=f"<import {done.name}>")


def import_module(module: nn.Module, input=(3, 224, 224), *, name: str | None = None,
                  source: str | None = None, strict: bool = False,
                  allow_opaque: bool | None = None, label: str | None = None) -> Imported:
    """``allow_opaque`` is what older callers passed to keep opaque rows, now the
    default: accepted and ignored."""
    from ...spec import writer
    if not isinstance(module, nn.Module):
        raise SpecError(f"from_module takes a torch.nn.Module. Received: "
                        f"{type(module).__name__}")
    input_shape = _input_shape(input)
    label = label or type(module).__name__
    name = name or label.rpartition(":")[2] or type(module).__name__
    training = module.training
    module.eval()
    try:
        tracing, builder, found = _build(module, input_shape, label, strict)
    finally:
        module.train(training)
    if builder.unsupported and strict:
        raise Unsupported(builder.unsupported, f"cannot import {label}", strict)
    if builder.unsupported:   # at the model's own forward: no module to keep whole
        return _whole_model(module, input_shape, name, label, source, found.meta,
                            Unsupported(builder.unsupported, "", strict))
    nodes, output = builder.nodes, builder.output
    _normalize_cats(nodes, output)
    recover = _Recover(nodes, output, builder.outputs)
    items = recover.run()
    reached = {nodes[i] for i in recover.seen}
    fused = _fused_defaults(reached)
    bn_default = fused.get("batch_norm", {})
    classes = {tuple(p.split(".")) if p else (): type(m).__name__
               for p, m in module.named_modules()}
    entries = _resolve_names(_Emitter(bn_default, recover.shared()).level(items, ()))
    outputs = wire(entries, [n.index for n in builder.outputs] if recover.sink else None)
    entries = _fuse_levels(entries, fused)
    _annotate_classes(entries, (), classes)
    params, unused = _parameters(module, reached, builder.reads)
    notes = [f"Imported by archcalc from {label} at input {'x'.join(map(str, input_shape))}: "
             f"every row is a call of the module's forward, named by its module path "
             f"(its state_dict keys)."]
    if tracing.untraced and tracing.fx_error is None:
        first = next(iter(tracing.untraced.items()))
        notes.append(f"Kept whole, as torch.fx cannot trace their forward: the modules of the "
                     f"class(es) of {', '.join(tracing.untraced)} ({first[0]}: {first[1]}).")
    if tracing.fx_error is not None:
        notes.append(f"Traced with torch.export at that input, since torch.fx cannot trace "
                     f"the forward ({tracing.fx_error}): what the forward decides from "
                     "shapes is fixed to that input's.")
    if unused:
        total = sum(unused.values())
        notes.append(f"Left out: {', '.join(unused)} ({total:,} params) are not used by the "
                     "forward at inference (e.g. auxiliary classifiers used in training).")
    opaque = [n.what for n in builder.opaque_rows if n in reached]
    notes += _opaque_notes(opaque, [n for n in builder.unscaled if n in reached])
    header = {"name": name, "input": list(input_shape),
              "source": source or f"{label}, imported by archcalc", "notes": notes}
    if outputs:
        header["outputs"] = outputs
    text = writer.write(header, entries, {}, fused=fused)
    return Imported(text, name, params, unused, opaque, tracing.tracer, tracing.fx_error)


def _build(module, input_shape, label, strict) -> tuple:
    """(tracing, graph builder, probe) of the last pass: each pass keeps whole
    the modules of the calls the last one could not make rows of."""
    opaque: set = set()
    tracing = _Tracing(module, input_shape, label)
    for _ in range(PASSES):
        gm = tracing.graph(opaque)
        try:
            found = _probe_or_fail(gm, input_shape, label, module)
        except ImportFailure as e:
            if not tracing.untraced or tracing.fx_error is not None:
                raise
            # a module fx could not trace runs wrong as a leaf (it reads what
            # its caller passes untraced): the whole forward by torch.export
            tracing.without_fx(f"{next(iter(tracing.untraced.values()))}; kept whole "
                               f"at {', '.join(tracing.untraced)}, {e}")
            gm = tracing.graph(opaque)
            found = _probe_or_fail(gm, input_shape, label, module)
        builder = _GraphBuilder(gm, found, input_shape, not strict, opaque)
        builder.run()
        # an op that cannot be a row of its own (it computes on parameters, or
        # on several tensors): its module is kept whole, as one opaque row
        wider = {p for p in builder.widen if p not in opaque}
        if strict or not wider:
            break
        opaque |= wider
    else:   # each pass keeps the modules of every failing call whole: a deeper nest
        raise ImportFailure(f"cannot import {label}: after {PASSES} passes, calls "
                            f"without a kind still need their modules kept whole "
                            f"({', '.join(sorted(wider)[:3])})")
    return tracing, builder, found


def _whole_model(module, input_shape, name, label, source, meta, why) -> Imported:
    """The spec of a model whose own forward computes, on several tensors, what
    no row can: its whole forward as one opaque row, measured. (A row that
    reads several tensors needs the general graph's from = [...] on it.)"""
    from ...spec import writer
    from .measuring import measure_module
    try:
        measured, shape = measure_module(module, input_shape, meta)
    except Exception as e:  # noqa: BLE001 - the user's forward
        raise ImportFailure(f"cannot import {label}:{str(why).partition(':')[2]}; nor "
                            f"measure its forward whole: {type(e).__name__}: "
                            f"{_first_line(e)}") from None
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers())
    cls = type(module)
    what = f"{cls.__module__}.{cls.__qualname__}"
    entry = {"name": "model", "opaque": what, "input": list(input_shape),
             "output": list(shape) or [1],
             "params": params, "buffers": buffers, "macs": measured.macs}
    notes = [f"Imported by archcalc from {label} at input {'x'.join(map(str, input_shape))} "
             f"as one opaque row, the whole forward, measured, not derived: its params are "
             f"the module's, its MACs FlopCounterMode's on the meta device, per sample "
             f"(batch 1). No part of it is a row of its own, since its own forward "
             f"computes what no row can:{str(why).partition(':')[2]}"]
    header = {"name": name, "input": list(input_shape),
              "source": source or f"{label}, imported by archcalc", "notes": notes}
    return Imported(writer.write(header, [entry], {}), name, params, {}, [what],
                    whole=True)


def _opaque_notes(opaque: list, unscaled: list) -> list:
    """The header's word on the opaque rows: what they stand for, and that their
    figures are measured, not derived."""
    if not opaque:
        return []
    counts: dict = {}
    for what in opaque:
        counts[what] = counts.get(what, 0) + 1
    listed = ", ".join(f"{w}" + (f" (x{k})" if k > 1 else "") for w, k in
                       sorted(counts.items(), key=lambda wk: -wk[1])[:6])
    more = f" and {len(counts) - 6} more" if len(counts) > 6 else ""
    notes = [f"Measured, not derived: {len(opaque)} opaque row(s) stand for operations "
             f"archcalc has no kind for ({listed}{more}); their output shapes and params "
             "are the module's, their MACs FlopCounterMode's on the meta device for that "
             "call alone at this input, per sample (batch 1). The totals are exact; those "
             "rows hold at this input alone and cannot be built."]
    if unscaled:
        notes.append(f"{len(unscaled)} of them do not scale with the batch (they compute on "
                     "parameters too): their MACs are those of batch 1.")
    return notes


def _input_shape(input) -> tuple:
    if isinstance(input, str):
        from ...graph import parse_shape
        input = parse_shape(input)
    if isinstance(input, int):
        input = (input,)
    shape = tuple(input)
    if not shape or len(shape) not in (1, 3) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise SpecError(f"input takes (C, H, W) or (F,) with positive sizes. "
                        f"Received: {input!r}")
    return shape


def _probe_or_fail(gm, input_shape, label, module) -> Probed:
    shape = "x".join(map(str, (PROBE_BATCH, *input_shape)))
    try:
        return probe(gm, input_shape, meta=True)
    except Exception as meta_error:  # noqa: BLE001 - retried on real tensors
        on_meta = any(p.device.type == "meta" for p in module.parameters())
        if on_meta:
            raise ImportFailure(f"running {label} on a {shape} input raised "
                                f"{type(meta_error).__name__}: {_first_line(meta_error)}") \
                from None
    try:
        return probe(gm, input_shape, meta=False)
    except Exception as e:  # noqa: BLE001 - the user's forward
        raise ImportFailure(f"running {label} on a {shape} input raised "
                            f"{type(e).__name__}: {_first_line(e)}") from None


def _parameters(module: nn.Module, reached, reads) -> tuple:
    """(parameters the spec holds, {module path: parameters left out});
    ``reads``: row index -> the parameters an opaque function row reads."""
    used = set()
    for n in reached:
        if n.stateful:
            used.add(".".join(n.path))
        used.update(reads.get(n.index, ()))
    total, unused = 0, {}
    for pname, p in module.named_parameters():
        owner = pname.rpartition(".")[0]
        if pname in used or any(owner == u or owner.startswith(u + ".") for u in used):
            total += p.numel()
        else:
            top = _top_unused(pname, used)
            unused[top] = unused.get(top, 0) + p.numel()
    return total, unused


def _top_unused(pname: str, used: set) -> str:
    parts = pname.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if not any(u == prefix or u.startswith(prefix + ".") for u in used):
            return prefix
    return pname
