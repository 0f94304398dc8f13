"""Render a Report: a rich table with the lecture's summary lines, or plain
JSON, CSV and markdown. Rendering only reads the Report.

The table fits the terminal: when it is too wide it gives up detail step by
step (the params formula and the (3.2M) shorthands first, then the kind
column, the box, the receptive field, and at last exact digits for 3.2M-style
numbers), and never breaks a number across lines. ``--columns`` chooses the
columns (as torchinfo's col_names); piped output, with no COLUMNS set, keeps
every column at full width.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from .. import sym
from ..analysis import DTYPES, Report
from ..errors import SpecError
from ..layers.base import fmt_shape
from .safe import clean, csv_row, markup, md_cell, rich_text

CONVENTIONS = (
    "Conventions: shapes per sample (C x H x W); params = weights + biases (+ BN affine); "
    "MACs = multiply-accumulates of conv and fc (fvcore's 'flops'); FLOPs = 2 x MACs + "
    "elementwise work; RF = receptive field in input pixels. Units: K = 10^3, M = 10^6, "
    "G = 10^9; MB = 10^6 bytes.")

VIEWS = "* a view or in place: no memory of its own"
MEASURED = ("† measured on the PyTorch module (FlopCounterMode on the meta device), not "
            "derived from a formula: an opaque row, an operation archcalc has no kind for")
NOTES_OMITTED = ("(spec notes omitted: they describe the spec at its own input and variables, "
                 "not at the --input or --set asked for)")


# -- the columns ---------------------------------------------------------------

def _f(x) -> str:
    return sym.fmt_int(x)


def _human(x) -> str:
    return sym.human(x) if not sym.is_symbolic(x) else _f(x)


def _layer(report, row):
    """The row's one name: its module path (layer1.0.conv1)."""
    return "input" if row.index == 0 else clean(row.name)


def _layer_reads(report, row):
    """The name, and what the row reads where that is not the row above it
    (from, a merge entry): "up2 <- lat2"."""
    return _layer(report, row) + (f" <- {clean(', '.join(row.inputs))}" if row.inputs else "")


def _view(row, compact: bool = False) -> str:
    return "" if row.allocates else ("*" if compact else ", view")


def _act_full(report, row):
    x = row.activations
    text = _f(x) if sym.is_symbolic(x) else f"{_f(x)} ({sym.human(x)})"
    return text + _view(row)


def _params_full(report, row):
    text = _f(row.params)
    if row.params_formula and row.params:
        text = f"{row.params_formula} = {text}"
    return text


def _rf(report, row):
    rh, rw = row.receptive_field
    return _f(rh) if rh == rw else f"{_f(rh)}x{_f(rw)}"


def _share(report, row):
    total = report.totals["params"]
    if sym.is_symbolic(total) or sym.is_symbolic(row.params) or not total:
        return "-"
    return f"{100 * row.params / total:.1f}%"


def _measured(row) -> str:
    """The mark of a row whose figures were measured, not derived."""
    return "" if row.derived else "†"


def _shape_compact(shape) -> str:
    return "x".join(_f(d) for d in shape)


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    right: bool
    variants: tuple          # functions (report, row) -> str, the richest first
    short: str = ""          # the header in a compact table


COLUMN_DEFS = {c.key: c for c in (
    Column("index", "#", True, (lambda r, row: str(row.index),)),
    Column("layer", "layer", False, (_layer_reads, _layer)),
    Column("kind", "kind", False, (lambda r, row: clean(row.type),)),
    Column("input", "input", False,
           (lambda r, row: fmt_shape(row.input_shape) if row.input_shape else "",
            lambda r, row: _shape_compact(row.input_shape) if row.input_shape else "")),
    Column("output", "output (C x H x W)", False,
           (lambda r, row: fmt_shape(row.output_shape),
            lambda r, row: _shape_compact(row.output_shape)), "output"),
    Column("activations", "activations", True,
           (_act_full, lambda r, row: _f(row.activations) + _view(row, True),
            lambda r, row: _human(row.activations) + _view(row, True))),
    Column("params", "params", True,
           (_params_full, lambda r, row: _f(row.params), lambda r, row: _human(row.params))),
    Column("params%", "% params", True, (_share,)),
    Column("macs", "MACs", True, (lambda r, row: _f(row.macs) + _measured(row),
                                  lambda r, row: _human(row.macs) + _measured(row))),
    Column("flops", "FLOPs", True,
           (lambda r, row: _f(row.flops), lambda r, row: _human(row.flops))),
    Column("rf", "RF", True, (_rf,)),
)}

DEFAULT_COLUMNS = ("index", "layer", "kind", "output", "activations", "params", "macs", "rf")
ALIASES = {"#": "index", "name": "layer", "path": "layer", "type": "kind", "output_shape": "output",
           "output_size": "output", "shape": "output", "input_size": "input",
           "num_params": "params", "params_percent": "params%", "mult_adds": "macs",
           "receptive_field": "rf"}
COLUMNS = tuple(COLUMN_DEFS[k].header for k in DEFAULT_COLUMNS)

# What a too-wide table gives up, in order: (step, column key, variant index).
# "drop" removes a column the user did not ask for by name; "compact" drops the box.
DEGRADE = (
    ("variant", "params", 1), ("variant", "activations", 1), ("variant", "output", 1),
    ("variant", "input", 1), ("variant", "layer", 1), ("drop", "kind", None),
    ("compact", None, None), ("drop", "rf", None), ("drop", "params%", None),
    ("drop", "input", None), ("drop", "index", None), ("variant", "macs", 1),
    ("variant", "flops", 1), ("variant", "activations", 2), ("variant", "params", 2),
    ("drop", "flops", None),
)


def parse_columns(text: str | None) -> tuple[str, ...] | None:
    """'layer,output,params,macs' -> column keys; None for the default set."""
    if text is None:
        return None
    keys = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        key = ALIASES.get(name, name)
        if key not in COLUMN_DEFS:
            raise SpecError(f"--columns: unknown column {part.strip()!r}; the columns: "
                            f"{', '.join(COLUMN_DEFS)}")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise SpecError(f"--columns takes a comma-separated list, e.g. layer,output,params,macs; "
                        f"the columns: {', '.join(COLUMN_DEFS)}")
    return tuple(keys)


class Layout:
    """The columns shown and the variant of each, chosen to fit a width."""

    def __init__(self, report: Report, rows, keys=None):
        self.report = report
        self.rows = rows
        self.requested = keys is not None
        self.keys = list(keys or DEFAULT_COLUMNS)
        self.level = {k: 0 for k in self.keys}
        self.compact = False
        self._cache: dict = {}

    def texts(self, key: str) -> list[str]:
        level = self.level[key]
        if (key, level) not in self._cache:
            fn = COLUMN_DEFS[key].variants[level]
            self._cache[key, level] = [fn(self.report, row) for row in self.rows]
        return self._cache[key, level]

    def header(self, key: str) -> str:
        col = COLUMN_DEFS[key]
        return (col.short or col.header) if self.compact else col.header

    def widths(self) -> list[int]:
        from rich.cells import cell_len
        return [max([cell_len(self.header(k))] + [cell_len(t) for t in self.texts(k)])
                for k in self.keys]

    @property
    def marks_views(self) -> bool:
        """Whether the activations column marks views with '*' (compact variants)."""
        return "activations" in self.keys and self.level["activations"] > 0 \
            and any(not row.allocates for row in self.rows)

    def steps(self):
        """Apply the next degradation step; yield after each that changed something."""
        for step, key, level in DEGRADE:
            if step == "compact":
                if not self.compact:
                    self.compact = True
                    yield
            elif key in self.keys:
                if step == "drop" and not self.requested and len(self.keys) > 2:
                    self.keys.remove(key)
                    del self.level[key]
                    yield
                elif step == "variant" and level < len(COLUMN_DEFS[key].variants) \
                        and self.level[key] < level:
                    self.level[key] = level
                    yield

    def fit(self, width: int | None, overhead) -> "Layout":
        """Degrade until ``sum(widths) + overhead(n, compact)`` fits ``width``."""
        def total():
            return sum(self.widths()) + overhead(len(self.keys), self.compact)
        if width is None or total() <= width:
            return self
        for _ in self.steps():
            if total() <= width:
                break
        return self

    def cells(self) -> list[list[str]]:
        columns = [self.texts(k) for k in self.keys]
        return [list(r) for r in zip(*columns)]


def _rich_overhead(n: int, compact: bool) -> int:
    # heavy box: padding 1 each side + n + 1 rules; compact: two spaces
    # between columns (collapsed padding and a blank rule), no outer edge
    return 3 * n + 1 if not compact else 2 * n - 2


def _plain_overhead(n: int, compact: bool) -> int:
    return 2 * (n - 1)


# -- text shared by the renderers ----------------------------------------------

def cells(report: Report, row) -> list[str]:
    """The default columns of one row at full detail (markdown and tests)."""
    return [COLUMN_DEFS[k].variants[0](report, row) for k in DEFAULT_COLUMNS]


def both(x) -> str:
    """138M (138,357,544); a formula once."""
    return sym.fmt_int(x) if sym.is_symbolic(x) else f"{sym.human(x)} ({sym.fmt_int(x)})"


def summary_lines(report: Report) -> list[str]:
    t = report.totals
    dsize = DTYPES[report.dtype]
    per = "image" if report.batch == 1 else f"batch of {report.batch}"
    h, hb = sym.human, sym.human_bytes
    return [
        f"TOTAL memory: {h(t['activations'])} activations x {dsize} bytes ({report.dtype})"
        + (f" x batch {report.batch}" if report.batch > 1 else "")
        + f" = {hb(t['activation_bytes'])} / {per} (forward only; about x2 for backward)",
        f"TOTAL params: {both(t['params'])}, "
        f"{hb(t['param_bytes'])} of weights in {report.dtype}",
        f"TOTAL MACs: {both(t['macs'])} multiply-accumulates per sample; "
        f"FLOPs: {h(t['flops'])} (2 x MACs + elementwise)",
        f"Training step (batch {report.batch}, {report.dtype}, {report.optimizer}): weights "
        f"{hb(t['param_bytes'])} + gradients {hb(t['gradient_bytes'])} + optimizer state "
        f"{hb(t['optimizer_state_bytes'])} + saved for backward "
        f"{hb(t['saved_activation_bytes'])} = {hb(t['train_memory_bytes'])}",
    ] + output_lines(report)


def output_lines(report: Report) -> list[str]:
    """A model with heads: each output's shape with its head's params and MACs,
    each head that holds heads of its own with its totals."""
    if not report.multi_output:
        return []
    shapes = dict(report.outputs)
    lines = [f"OUTPUTS ({len(report.outputs)}, a dict by name): " + ", ".join(
        f"{name} {fmt_shape(shape)}" for name, shape in report.outputs)]
    for head in report.heads:
        figures = f"params {both(head['params'])}, MACs {both(head['macs'])}"
        if head["name"] in shapes:
            lines.append(f"OUTPUT {head['name']} ({fmt_shape(shapes[head['name']])}): "
                         f"{figures}")
        else:
            lines.append(f"HEAD {head['name']} (outputs {', '.join(head['outputs'])}): "
                         f"{figures}")
    return lines


def spec_notes(report: Report) -> list[str]:
    notes = report.model.extra.get("notes", [])
    return [clean(n) for n in ([notes] if isinstance(notes, str) else list(notes))]


def own_settings(spec, report: Report) -> bool:
    """Whether the report shows the spec at its own input and variables, where
    the notes its author wrote about the figures hold. Binding a variable the
    spec leaves unbound ("?") keeps them; another --input or --set (an integer
    or a float such as a width multiplier) does not."""
    from ..graph import resolve_env
    from ..layers.base import Arg
    env = report.model.env
    try:
        own = resolve_env(spec, None)
        if tuple(Arg("int", min=1).read("model", "input", v, env) for v in spec.input) \
                != tuple(report.model.input):
            return False
    except SpecError:
        return False
    # numbers only: a variable the spec leaves as a formula has no figures to keep;
    # floats too (--set width=0.5 changes MobileNet's counts as much as C=32 does)
    return all(env.get(name) == value for name, value in own.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool))


# -- rich ------------------------------------------------------------------------

RICH_ROW_LIMIT = 300  # above this, rich's layout costs seconds: plain columns instead


def render_rich(report: Report, console, columns=None, own: bool = True) -> None:
    """``columns``: keys from --columns (None: the default set, degraded to fit);
    ``own``: the report is at the spec's own input and variables (notes apply)."""
    if len(report.rows) > RICH_ROW_LIMIT:
        render_plain_columns(report, console, columns)
        _footer(report, console, own)
        return
    from rich import box
    from rich.table import Table
    m = report.model
    width = console.width
    layout = Layout(report, report.rows, columns).fit(width, _rich_overhead)
    title = rich_text(f"{m.name}  (input {fmt_shape(m.input)})")
    caption = rich_text(m.source) if m.source else None
    options = dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                   collapse_padding=True) if layout.compact else {}
    table = Table(title=title, caption=caption, show_lines=False, header_style="bold", **options)
    for key in layout.keys:
        col = COLUMN_DEFS[key]
        # numbers never wrap; only the layer path may fold, as a last resort
        table.add_column(layout.header(key), justify="right" if col.right else "left",
                         no_wrap=key != "layer", overflow="fold")
    from rich.text import Text
    for values in layout.cells():
        table.add_row(*(Text(v) for v in values))
    widths = layout.widths()
    need = sum(widths) + _rich_overhead(len(layout.keys), layout.compact)
    if "layer" in layout.keys:  # the layer path may fold down to 12 characters
        need -= max(widths[layout.keys.index("layer")] - 12, 0)
    if need > width:  # not even that fits: overflow the width rather than fold a number
        console.width = need
        try:
            console.print(table)
        finally:
            console.width = width
    else:
        console.print(table)
    if layout.marks_views:
        console.print(VIEWS, style="dim", highlight=False)
    if "macs" in layout.keys and _any_measured(report):
        console.print(MEASURED, style="dim", highlight=False)
    _footer(report, console, own)


def render_plain_columns(report: Report, console, columns=None) -> None:
    """The same cells in fixed-width columns, linear in the rows."""
    layout = Layout(report, report.rows, columns)
    width = console.width
    layout.compact = True
    layout.fit(width, _plain_overhead)
    body = layout.cells()
    widths = layout.widths()
    keys = layout.keys
    fold = None
    if "layer" in keys and width is not None:
        i = keys.index("layer")
        room = width - (sum(widths) - widths[i]) - _plain_overhead(len(keys), True)
        if room < widths[i]:  # fold long paths at their "/" onto continuation lines
            fold = i
            widths[i] = max(room, 12)

    def line(values):
        return "  ".join(v.rjust(w) if COLUMN_DEFS[k].right else v.ljust(w)
                         for v, w, k in zip(values, widths, keys)).rstrip()

    def lines(values):
        if fold is None or len(values[fold]) <= widths[fold]:
            return [line(values)]
        parts = _fold_path(values[fold], widths[fold])
        first = list(values)
        first[fold] = parts[0]
        rest = [[p if j == fold else "" for j in range(len(values))] for p in parts[1:]]
        return [line(first)] + [line(r) for r in rest]
    m = report.model
    head = f"{clean(m.name)}  (input {fmt_shape(m.input)}, {len(report.rows)} rows; " \
           "--depth N folds blocks)"
    if width is not None and len(head) > width:
        import textwrap
        head = "\n".join(textwrap.wrap(head, width, break_long_words=False))
    out = [head, line([layout.header(k) for k in keys]), line(["-" * w for w in widths])]
    for r in body:
        out += lines(r)
    if layout.marks_views:
        out.append(VIEWS)
    if "macs" in keys and _any_measured(report):
        out.append(MEASURED)
    console.file.write("\n".join(out) + "\n")


def _any_measured(report: Report) -> bool:
    return not all(row.derived for row in report.rows)


def _fold_path(text: str, width: int) -> list[str]:
    """'a.b.c' in pieces of at most ``width``, cut after a '.' where one is."""
    out = []
    while len(text) > width:
        cut = text.rfind(".", 0, width)
        cut = cut + 1 if cut > 0 else width
        out.append(text[:cut])
        text = text[cut:]
    return out + [text] if text else out


def _footer(report: Report, console, own: bool = True) -> None:
    for line in summary_lines(report):
        console.print(line, highlight=False)
    notes = spec_notes(report)
    if own:
        for note in notes:
            console.print(markup(f"Note: {note}"), style="italic", highlight=False)
    elif notes:
        console.print(NOTES_OMITTED, style="italic", highlight=False)
    console.print(CONVENTIONS, style="dim", highlight=False)


# -- json, csv, markdown -------------------------------------------------------------

def render_json(report: Report) -> str:
    return report.to_json()


CSV_FIELDS = ("index", "name", "type", "output_shape", "params", "macs", "flops",
              "activations", "receptive_field")


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    data = report.to_dict()
    for row in data["layers"]:
        writer.writerow(csv_row("x".join(map(str, row[k])) if k == "output_shape" else row[k]
                                for k in CSV_FIELDS))
    # the totals as a last row (a spreadsheet sums nothing by itself: views and
    # in-place rows allocate no activations, so a column sum would be wrong)
    t = data["totals"]
    writer.writerow(csv_row(["total", "TOTAL", "", "", t["params"], t["macs"], t["flops"],
                             t["activations"], t.get("receptive_field", "")]))
    return out.getvalue()


def _md(text: str) -> str:
    return md_cell(text)


def render_markdown(report: Report, columns=None, own: bool = True) -> str:
    keys = list(columns or DEFAULT_COLUMNS)
    lines = [f"## {_md(report.model.name)}", ""]
    if report.model.source:
        lines += [f"Source: {_md(report.model.source)}", ""]
    lines.append("| " + " | ".join(COLUMN_DEFS[k].header for k in keys) + " |")
    lines.append("|" + "|".join("---:" if COLUMN_DEFS[k].right else "---" for k in keys) + "|")
    for row in report.rows:
        lines.append("| " + " | ".join(_md(COLUMN_DEFS[k].variants[0](report, row))
                                       for k in keys) + " |")
    lines.append("")
    if "macs" in keys and _any_measured(report):
        lines += [_md(MEASURED), ""]
    lines += [f"- {s}" for s in summary_lines(report)]
    if own:
        lines += [f"- Note: {_md(n)}" for n in spec_notes(report)]
    elif spec_notes(report):
        lines.append(f"- {NOTES_OMITTED}")
    lines += ["", CONVENTIONS]
    return "\n".join(lines) + "\n"
