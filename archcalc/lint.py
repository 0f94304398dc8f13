"""`archcalc lint`: the design smells the lectures teach, each with its arithmetic.

Rules (each finding names its layer and shows the numbers):

- ``bias-before-bn``: a conv or fc with a bias right before batch norm. BN
  subtracts the batch mean, which cancels the bias, and BN's own shift beta
  does its job: the biases are redundant parameters.
- ``representational-bottleneck``: Inception-v3's first principle. Early in
  the net (the first half of the main path), one step that reduces the grid
  shrinks the activations per sample by more than 4x (more than halving H and
  W at constant channels), and a later layer holds more again: the
  representation is squeezed, then expanded. A 1x1 that only cuts channels
  at the same grid is the lectures' bottleneck trick (ResNet, MobileNet-V2's
  linear bottleneck), not this smell. A step is measured against what it
  reads (its input, through ``from`` too), and a branch of a fork (HRNet's
  lower-resolution stream beside the full one) squeezes nothing.
- ``dropped-input``: a layer that does not tile its input leaves real input
  rows or columns that no window covers.
- ``grows-map``: a conv or pool whose output map is larger than its input
  (a padding beyond the kernel's reach, e.g. a 1x1 conv with padding 1),
  unless the layer says ``grows = true``.
- ``expand-before-reduce``: a 1x1 conv with more outputs than inputs right
  before a spatial reduction (half the grid or less left): it computes
  outputs the reduction throws away (the grid-reduction and stride-vs-pool
  lesson). Not before a depthwise conv (MobileNet-V2's inverted residual
  expands so that the depthwise filters see more channels; a strided 1x1
  would drop the pixels its 3x3 windows read) nor before a global pool (the
  head's features are made at full resolution on purpose).
- ``fc-heavy``: fully connected layers hold most of the parameters (VGG's
  lesson: a global average pool before one classifier removes them). Not
  fc layers on N x D tokens (N > 1): a transformer's per-token MLPs are its
  body, not a classifier.

The rules that look at two rows in a row (bias-before-bn,
expand-before-reduce) take the second only where it reads the first: not
across heads, not where it reads another row by name.

The analysis is pure Python: lint never imports torch.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from . import sym
from .layers.base import fmt_shape
from .errors import path_text

RULES = {
    "bias-before-bn": "a conv or fc bias right before batch norm (redundant params)",
    "representational-bottleneck": "a sharp early drop in activations per sample, "
                                   "expanded again later (Inception-v3, principle 1)",
    "dropped-input": "input rows or columns no window covers (a layer that does not tile)",
    "grows-map": "a conv or pool whose output map is larger than its input "
                 "(a padding beyond the kernel's reach)",
    "expand-before-reduce": "a 1x1 conv that adds channels right before a spatial reduction",
    "fc-heavy": "fully connected layers hold most of the parameters (VGG)",
}

BOTTLENECK_RATIO = 4      # a 2x2 grid halving at constant channels; sharper is a smell
FC_SHARE = 0.5            # fc layers holding more than half the params


@dataclass
class Finding:
    rule: str
    layer: str                     # the row's module path ("" for the whole net)
    message: str
    arithmetic: str
    numbers: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"rule": self.rule, "layer": self.layer, "message": self.message,
                "arithmetic": self.arithmetic,
                "numbers": {k: sym.to_json(v) for k, v in self.numbers.items()}}


def _name(row) -> str:
    return path_text(row.path) or row.name


def _f(x) -> str:
    return sym.fmt_int(x)


def _pct(part, whole) -> str:
    return f"{100 * part / whole:.1f}%"


def _main(row):
    return row.ops[0] if row.ops else None


def _kind(row) -> str:
    op = _main(row)
    return op.kind.name if op else ""


def lint(report) -> list[Finding]:
    """Every finding of every rule, in table order within each rule."""
    from .tree import carriers
    root = report.row_tree   # None for a folded report
    found = []
    found += _bias_before_bn(report, root)
    if root is not None:
        found += _bottleneck(report, [report.rows[0]] + carriers(root))
    found += _dropped_input(report)
    found += _grows_map(report)
    found += _expand_before_reduce(report, root)
    found += _fc_heavy(report)
    return found


# -- the rules -----------------------------------------------------------------

def _bias_count(row):
    """The biases of a conv/fc row's main op, or 0."""
    op = _main(row)
    if op is None or not op.kind.bias_redundant_before_norm \
            or not getattr(op.args, "bias", False):
        return 0
    return op.args.out


def _bias_before_bn(report, root) -> list[Finding]:
    """A bias cancelled by the batch norm fused in its row, or by the one the
    next row applies to its output (that row reads it: not another path's)."""
    out = []
    norm_next = {id(row): nxt for row, nxt in _layer_pairs(report, root, bodies=True)
                 if len(row.ops) == 1 and _main(nxt) is not None
                 and _main(nxt).kind.cancels_bias}
    for row in report.rows:
        biases = _bias_count(row)
        fused = any(op.kind.cancels_bias for op in row.ops[1:2])
        nxt = norm_next.get(id(row))
        if not biases or not (fused or nxt is not None):
            continue
        bn = "its fused batch norm" if fused else f"batch norm {_name(nxt)}"
        out.append(Finding(
            "bias-before-bn", _name(row),
            f"{_kind(row)} with bias = true right before {bn}: the mean subtraction "
            f"cancels the {_f(biases)} biases and batch norm's shift (beta) does their job; "
            "set bias = false",
            f"{_f(biases)} redundant params (one per output channel) of the row's "
            f"{_f(row.params)}" + (f": {row.params_formula}" if row.params_formula else ""),
            {"redundant_params": biases, "row_params": row.params}))
    return out


def _reads(nxt, row) -> bool:
    """Whether ``nxt`` reads ``row``'s output: a layer row that names no other
    row it reads (a ``from`` elsewhere lists it in ``inputs``)."""
    return bool(nxt.ops) and tuple(nxt.inputs) in ((), (row.name,))


def _layer_pairs(report, root, bodies: bool):
    """(row, the row that reads it next) for each two layer rows one after the
    other in a list of the graph (a block's items, a merge's body or
    shortcut), the second reading the first: not across heads, not where
    the second reads another row by name. ``bodies``: in merge bodies and
    shortcuts and in concat branches too, or only in blocks of the main
    structure. A folded report has no tree: its rows two at a time within
    one level."""
    if root is None:
        rows = report.rows
        for row, nxt in zip(rows, rows[1:]):
            if tuple(nxt.path[:-1]) == tuple(row.path[:-1]) and _reads(nxt, row):
                yield row, nxt
        return
    for items in _sibling_lists(root, bodies):
        for first, second in zip(items, items[1:]):
            if first.role == "layer" and second.role == "layer" \
                    and _reads(second.row, first.row):
                yield first.row, second.row


def _sibling_lists(node, bodies: bool):
    """Every list of tree nodes the walk reads in order, depth first: a
    block's items, and with ``bodies`` a merge's body and shortcut."""
    lists = [node.children if node.role == "block" else []]
    if bodies:
        lists += [node.body, node.shortcut]
    yield from (items for items in lists if items)
    for child in node.children + node.body + node.shortcut:
        yield from _sibling_lists(child, bodies)


def _spatial(shape) -> bool:
    return len(shape) == 3 and not (shape[1] == 1 and shape[2] == 1)


def _bottleneck(report, main) -> list[Finding]:
    """Each step compared with what it reads (its input shape), not with the
    row above it in the table: in a general graph (from) that is often
    another path. A merge row reduces no grid: it is skipped, and so is a
    row whose input another row reads too (a fork: HRNet's lower-resolution
    branch beside the full one, which still carries the representation)."""
    out = []
    early = len(main) // 2
    readers = _readers(report.rows)
    for i in range(1, early + 1):
        row = main[i]
        x = row.input_shape
        if readers[_source(report.rows, row)] > 1:
            continue
        a, b = sym.prod(x) if x else None, row.activations
        if not (isinstance(a, int) and isinstance(b, int)) or b <= 0:
            continue
        if not _spatial(row.output_shape) or a <= BOTTLENECK_RATIO * b \
                or not _grid_shrinks(x, row.output_shape):
            continue
        later = [r for r in main[i + 1:] if isinstance(r.activations, int)]
        peak = max(later, key=lambda r: r.activations, default=None)
        if peak is None or peak.activations <= b:
            continue
        out.append(Finding(
            "representational-bottleneck", _name(row),
            f"activations per sample drop {a / b:.2f}x in one step, early in the net, and "
            f"{_name(peak)} holds {peak.activations / b:.2f}x as many again: the "
            "representation is squeezed, then expanded (Inception-v3: shrink it gently; "
            "reduce the grid with a strided conv and a pool in parallel)",
            f"{fmt_shape(x)} = {_f(a)} -> {fmt_shape(row.output_shape)} = "
            f"{_f(b)} ({_f(a)}/{_f(b)} = {a / b:.2f} > {BOTTLENECK_RATIO}); later "
            f"{_name(peak)}: {fmt_shape(peak.output_shape)} = {_f(peak.activations)}",
            {"before": a, "after": b, "later": peak.activations}))
    return out


def _source(rows, row) -> str:
    """The row a layer row reads: the one it names (from), else the row above."""
    return row.inputs[0] if row.inputs else rows[row.index - 1].name


def _readers(rows) -> Counter:
    """How many rows read each row's output, by name."""
    count = Counter()
    for row in rows[1:]:
        count.update([m[0] for m in row.merged] if row.merge else [_source(rows, row)])
    return count


def _grid_shrinks(x, y) -> bool:
    """Whether H x W gets smaller from x to y (a channel-only squeeze does not)."""
    if len(x) != 3 or len(y) != 3 or not all(isinstance(v, int) for v in (*x[1:], *y[1:])):
        return False
    return y[1] * y[2] < x[1] * x[2]


def _dropped_input(report) -> list[Finding]:
    out = []
    rows = {tuple(r.path): r for r in report.rows}
    for w in report.findings:
        if getattr(w, "rule", "dropped-input") != "dropped-input":
            continue
        row = rows.get(tuple(w.path))
        shape = f" ({fmt_shape(row.input_shape)} in, {fmt_shape(row.output_shape)} out)" \
            if row is not None and row.input_shape else ""
        text = w.message
        head, _, arithmetic = text.partition(": ")
        out.append(Finding("dropped-input", path_text(w.path),
                           f"{head}{shape}: pad the input or change the kernel or stride so "
                           "that (N - F + 2P)/S + 1 is an integer",
                           arithmetic or text))
    return out


def _grows_map(report) -> list[Finding]:
    out = []
    for w in report.findings:
        if getattr(w, "rule", "") != "grows-map":
            continue
        head, _, arithmetic = w.message.partition(": ")
        out.append(Finding("grows-map", path_text(w.path),
                           f"{head}: its padding pads more than the kernel reaches; use "
                           "padding = \"same\" (or (F - 1)/2), or write grows = true "
                           "on the layer if the larger map is meant",
                           arithmetic.partition("; a padding")[0] or w.message))
    return out


def _depthwise(row) -> bool:
    """A conv with one group per input channel (MobileNet's depthwise 3x3)."""
    op = _main(row)
    return op is not None and op.kind.depthwise(op.args, row.input_shape)


def _reduces(row) -> bool:
    """A spatial reduction: at most half the grid left (a stride, a pool)."""
    x, y = row.input_shape, row.output_shape
    return (len(x) == 3 and len(y) == 3 and all(isinstance(v, int) for v in (*x[1:], *y[1:]))
            and 2 * y[1] * y[2] <= x[1] * x[2])


def _expand_before_reduce(report, root) -> list[Finding]:
    out = []
    for row, nxt in _layer_pairs(report, root, bodies=False):
        op = _main(row)
        if op is None or not op.kind.pointwise(op.args):
            continue
        c_in, c_out = row.input_shape[0], row.output_shape[0]
        if not (isinstance(c_in, int) and isinstance(c_out, int) and c_out > c_in) \
                or not _reduces(nxt) or _depthwise(nxt):
            continue
        x, y = nxt.input_shape, nxt.output_shape
        if y[1] == 1 and y[2] == 1:
            continue   # a global pool: the head's features, made at full grid on purpose
        keep = (y[1] * y[2]) / (x[1] * x[2])
        at_reduced = c_in * c_out * y[1] * y[2]
        out.append(Finding(
            "expand-before-reduce", _name(row),
            f"a 1x1 conv expands {_f(c_in)} -> {_f(c_out)} channels at {_f(x[1])}x{_f(x[2])}, "
            f"then {_name(nxt)} keeps {keep:.0%} of the grid ({_f(y[1])}x{_f(y[2])}): reduce "
            "first, or stride the 1x1, or reduce in parallel (Inception-v3, Figure 10)",
            f"{_f(c_in)}*{_f(c_out)}*{_f(x[1])}*{_f(x[2])} = {_f(row.macs)} MACs here; after "
            f"the reduction {_f(c_in)}*{_f(c_out)}*{_f(y[1])}*{_f(y[2])} = {_f(at_reduced)}",
            {"macs": row.macs, "macs_after_reduction": at_reduced}))
    return out


def _per_token(row) -> bool:
    """An fc on N x D tokens, N > 1 (a transformer's MLP, its QKV): one small
    matrix applied to every token, not a classifier over the whole map. A
    count the spec leaves open (Faster R-CNN's R regions, each a flattened
    7 x 7 map fc6 reads whole) is not taken for tokens."""
    x = row.input_shape
    return len(x) == 2 and isinstance(x[0], int) and x[0] > 1


def _fc_heavy(report) -> list[Finding]:
    """The classifier's fc layers (on a vector, or a flattened map) against all
    params: per-token fc layers are a transformer's body, not VGG's head."""
    total = report.totals["params"]
    fcs = [r for r in report.rows if _main(r) is not None and _main(r).kind.fully_connected
           and not _per_token(r)]
    if not fcs or not isinstance(total, int) or not total:
        return []
    held = sum(r.params for r in fcs)
    if not isinstance(held, int) or held <= FC_SHARE * total:
        return []
    big = max(fcs, key=lambda r: r.params)
    names = ", ".join(_name(r) for r in fcs)
    return [Finding(
        "fc-heavy", names,
        f"the fully connected layers hold {_pct(held, total)} of the params; {_name(big)} "
        f"alone {_pct(big.params, total)}. A global average pool before a single classifier "
        "(NIN, GoogLeNet, ResNet) removes most of them",
        f"{' + '.join(_f(r.params) for r in fcs)} = {_f(held)} of {_f(total)} params = "
        f"{_pct(held, total)}; {_name(big)}: "
        + (f"{big.params_formula} = " if big.params_formula else "") + f"{_f(big.params)}",
        {"fc_params": held, "params": total, "largest": big.params})]


# -- output ----------------------------------------------------------------------

def to_json(report, findings) -> dict:
    return {"model": report.model.name, "file": report.model.file,
            "findings": [f.as_json() for f in findings],
            "rules": RULES}


SHOWN_PER_RULE = 5  # the rich output lists this many per rule, then a count (json: all)


def render_rich(report, findings, console) -> None:
    from rich.markup import escape
    from .render.safe import clean
    name = escape(clean(report.model.name))
    if not findings:
        console.print(f"[bold]{name}[/]: no design smells found "
                      f"({len(RULES)} rules: {', '.join(RULES)})", highlight=False)
        return
    console.print(f"[bold]{name}[/]: {len(findings)} finding"
                  f"{'s' if len(findings) != 1 else ''}", highlight=False)
    shown: dict = {}
    for f in findings:
        shown[f.rule] = shown.get(f.rule, 0) + 1
        if shown[f.rule] > SHOWN_PER_RULE:
            continue
        layer = f" [bold]{escape(clean(f.layer))}[/]" if f.layer else ""
        console.print(f"[yellow]{f.rule}[/]{layer}: {escape(clean(f.message))}",
                      highlight=False)
        console.print(f"    {escape(clean(f.arithmetic))}", style="dim", highlight=False)
        if shown[f.rule] == SHOWN_PER_RULE:
            more = sum(1 for g in findings if g.rule == f.rule) - SHOWN_PER_RULE
            if more > 0:
                console.print(f"    ... and {more} more {f.rule} (--format json lists all)",
                              style="dim", highlight=False)
