"""`archcalc report`: one self-contained HTML page per set of specs.

The page holds the graph (blocks collapsible, branches side by side, merges,
the shape on every edge), the per-layer table (sortable, filterable, the
arithmetic on hover), charts (activations, params and MACs per layer; the
training-memory breakdown) as inline SVG drawn here, the totals, notes and
lint findings, and with several specs a side-by-side comparison. Styles,
script and data are inline: the page loads nothing from the network (its
Content-Security-Policy forbids it), so it opens offline and can be mailed.

Specs come from strangers: every string from a spec goes through
html.escape, and the JSON embedded in <script> escapes <, > and & so that a
layer named ``</script><script>alert(1)`` stays text.

Pure Python: no torch, no matplotlib.
"""
from __future__ import annotations

import html
import itertools
import math

from .. import __version__, sym
from ..analysis import DTYPES, Report, fold
from ..layers.base import fmt_shape
from .safe import clean, json_text
from ..errors import path_text

_ids = itertools.count(1)


def esc(text) -> str:
    """A spec's string as HTML text or attribute value."""
    return html.escape(clean(text), quote=True)


def script_json(data) -> str:
    """JSON safe inside <script>: no '</script>', no '<!--', no line separators."""
    text = json_text(data, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _num(x) -> str:
    return sym.fmt_int(x)


def _value_attr(x) -> str:
    """data-value for sorting: the integer, or empty for a formula."""
    return str(x) if isinstance(x, int) else ""


def _shape(shape) -> str:
    return " &times; ".join(esc(sym.fmt_int(d)) for d in shape)


def _label(row) -> str:
    return "input" if row.index == 0 else row.name


# -- the parts of one spec's section ------------------------------------------------

TOTALS = (
    ("params", "params", False),
    ("macs", "MACs (multiply-accumulates)", False),
    ("flops", "FLOPs (2 x MACs + elementwise)", False),
    ("activations", "activations per sample", False),
    ("activation_bytes", "activation memory (forward)", True),
    ("param_bytes", "weights", True),
    ("saved_activation_bytes", "saved for backward", True),
    ("train_memory_bytes", "training step memory", True),
    ("inference_peak_bytes", "inference peak", True),
    ("weighted_layers", "weighted layers", False),
    ("receptive_field", "receptive field (pixels)", False),
)


def _totals(report: Report) -> str:
    t = report.totals
    items = []
    for key, label, is_bytes in TOTALS:
        if key not in t:
            continue
        v = t[key]
        short = sym.human_bytes(v) if is_bytes else sym.human(v)
        exact = _num(v)
        shown = esc(short) if short == exact else f"{esc(short)} <small>({esc(exact)})</small>"
        items.append(f'<div class="ac-total" data-key="{key}" data-value="{_value_attr(v)}">'
                     f'<dt>{esc(label)}</dt><dd>{shown}</dd></div>')
    per = "per image" if report.batch == 1 else f"batch {report.batch}"
    return (f'<dl class="ac-totals">{"".join(items)}</dl>'
            f'<p class="ac-dim">Bytes at {esc(report.dtype)} ({DTYPES[report.dtype]} bytes), '
            f'{esc(per)}; training memory with {esc(report.optimizer)}: weights + gradients + '
            f'optimizer state + saved for backward.</p>')


def _notes(report: Report, own: bool, findings) -> str:
    from .table import NOTES_OMITTED, spec_notes
    parts = []
    notes = spec_notes(report)
    if own:
        parts += [f'<li class="ac-note">{esc(n)}</li>' for n in notes]
    elif notes:
        parts.append(f'<li class="ac-note">{esc(NOTES_OMITTED)}</li>')
    parts += [f'<li class="ac-warning">warning: {esc(w)}</li>' for w in report.findings]
    if report.free_symbols:
        parts.append(f'<li class="ac-note">unbound variables {esc(", ".join(report.free_symbols))}: '
                     'the figures are formulas; bind them with --set NAME=VALUE</li>')
    out = f'<ul class="ac-notes">{"".join(parts)}</ul>' if parts else ""
    if findings:
        items = "".join(
            f'<li class="ac-finding" data-rule="{esc(f.rule)}"><b>{esc(f.rule)}</b>'
            + (f' <code>{esc(f.layer)}</code>' if f.layer else "")
            + f': {esc(f.message)}<div class="ac-arith">{esc(f.arithmetic)}</div></li>'
            for f in findings)
        out += f'<h3>Design smells (archcalc lint)</h3><ul class="ac-findings">{items}</ul>'
    return out


def _arithmetic(report: Report, row) -> str:
    if row.index == 0:
        return f"input: {fmt_shape(row.output_shape)}"
    try:
        from ..explain import explain_row
        return "\n".join(explain_row(report, row)[1:])
    except Exception:  # noqa: BLE001 - a tooltip is not worth failing the page for
        return ""


COLUMNS = (("index", "#", True), ("layer", "layer", False), ("kind", "kind", False),
           ("output", "output", False), ("activations", "activations", True),
           ("params", "params", True), ("macs", "MACs", True), ("flops", "FLOPs", True),
           ("rf", "RF", True))


def _table(report: Report, uid: str) -> str:
    head = "".join(f'<th data-col="{i}" data-numeric="{int(num)}" title="click to sort">'
                   f'{esc(label)}</th>' for i, (_, label, num) in enumerate(COLUMNS))
    body = []
    for row in report.rows:
        arith = _arithmetic(report, row)
        params_title = f"{row.params_formula} = {_num(row.params)}" \
            if row.params_formula and row.params else _num(row.params)
        rh, rw = row.receptive_field
        rf = _num(rh) if rh == rw else f"{_num(rh)}x{_num(rw)}"
        cells = (
            (row.index, str(row.index), ""),
            (None, _label(row), ""),
            (None, "input" if row.index == 0 else row.type, ""),
            (sym.prod(row.output_shape), None, ""),
            (row.activations, _num(row.activations) + ("" if row.allocates else " (view)"), ""),
            (row.params, _num(row.params), params_title),
            (row.macs, _num(row.macs), ""),
            (row.flops, _num(row.flops), ""),
            (sym.smax(rh, rw), rf, ""),
        )
        tds = []
        for (value, text, title), (key, _, _) in zip(cells, COLUMNS):
            shown = _shape(row.output_shape) if key == "output" else esc(text)
            attr = f' data-value="{_value_attr(value)}"' if value is not None else ""
            tip = f' title="{esc(title)}"' if title else ""
            tds.append(f'<td class="ac-{key}"{attr}{tip}>{shown}</td>')
        body.append(f'<tr data-row="{row.index}" data-path="{esc(_label(row))}" '
                    f'title="{html.escape(arith, quote=True)}">{"".join(tds)}</tr>')
    return (f'<div class="ac-tablebar"><input type="search" class="ac-filter" '
            f'placeholder="filter layers: name or kind" aria-label="filter layers"> '
            f'<span class="ac-count">{len(report.rows)} rows</span> '
            f'<span class="ac-dim">click a header to sort; hover a row for its arithmetic</span>'
            f'</div><div class="ac-scroll ac-tablescroll"><table class="ac-layers" id="{uid}-table">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


# -- the graph ------------------------------------------------------------------------

def _edge(shape) -> str:
    return f'<div class="ac-edge">{_shape(shape)}</div>'


def _node(row, cls="ac-layer") -> str:
    kind = "input" if row.index == 0 else row.type
    params = f' &middot; {esc(sym.human(row.params))} params' if row.params else ""
    return (f'<div class="ac-node {cls}" data-row="{row.index}" tabindex="0">'
            f'<span class="ac-name">{esc(row.path[-1] if row.path else row.name)}</span> '
            f'<span class="ac-kind">{esc(kind)}</span>{params}</div>')


def _block_summary(node) -> str:
    rows = list(node.rows())
    params = sym.total(r.params for r in rows)
    macs = sym.total(r.macs for r in rows)
    last = rows[-1].output_shape if rows else ()
    return (f'<span class="ac-name">{esc(node.name)}</span> '
            f'<span class="ac-dim">{len(rows)} rows &middot; {esc(sym.human(params))} params '
            f'&middot; {esc(sym.human(macs))} MACs &rarr; {_shape(last)}</span>')


def _graph_items(nodes, depth, open_depth) -> str:
    return "".join(_graph(n, depth, open_depth) for n in nodes)


def _graph(node, depth: int, open_depth: int) -> str:
    """One tree node's HTML, by its role (tree.ROLES); a node that reads
    named rows (from, a merge entry) says which, above it."""
    reads = f'<div class="ac-from">from {esc(", ".join(node.inputs))}</div>' \
        if node.inputs else ""
    return reads + _GRAPH_PARTS[node.role](node, depth, open_depth)


def _graph_layer(node, depth: int, open_depth: int) -> str:
    return _node(node.row) + _edge(node.row.output_shape)


def _graph_block(node, depth: int, open_depth: int) -> str:
    inner = _graph_items(node.children, depth + 1, open_depth)
    if not node.name:
        return inner
    is_open = " open" if depth < open_depth else ""
    return (f'<details class="ac-block" data-path="{esc(path_text(node.path))}"{is_open}>'
            f'<summary>{_block_summary(node)}</summary>'
            f'<div class="ac-inner">{inner}</div></details>')


def _side_by_side(nodes, depth: int, open_depth: int) -> str:
    """Branches or heads, each under its name."""
    return "".join(
        f'<div class="ac-branch"><div class="ac-branchname">{esc(b.name)}</div>'
        f'{_graph_items(b.children if b.role == "block" else [b], depth + 1, open_depth)}'
        f'</div>' for b in nodes)


def _graph_concat(node, depth: int, open_depth: int) -> str:
    branches = _side_by_side(node.children, depth, open_depth)
    return (f'<div class="ac-fork"><div class="ac-branches">{branches}</div>'
            f'{_node(node.row, "ac-merge")}{_edge(node.row.output_shape)}</div>')


def _graph_heads(node, depth: int, open_depth: int) -> str:
    # named outputs side by side; the main line goes on below
    heads = _side_by_side(node.children, depth, open_depth)
    return f'<div class="ac-fork"><div class="ac-branches">{heads}</div></div>'


def _graph_merge(node, depth: int, open_depth: int) -> str:
    body = _graph_items(node.body, depth + 1, open_depth)
    short = _graph_items(node.shortcut, depth + 1, open_depth) if node.shortcut else \
        '<div class="ac-identity">identity</div>'
    what = {"add": "shortcut", "mul": "x (gated)", "concat": "x (concatenated)"}[node.op] \
        if node.op in ("add", "mul", "concat") else "shortcut"
    return (f'<div class="ac-fork ac-residual"><div class="ac-branches">'
            f'<div class="ac-branch"><div class="ac-branchname">body</div>{body}</div>'
            f'<div class="ac-branch ac-short"><div class="ac-branchname">{esc(what)}</div>'
            f'{short}</div></div>{_node(node.row, "ac-merge")}'
            f'{_edge(node.row.output_shape)}</div>')


def _graph_join(node, depth: int, open_depth: int) -> str:
    # a merge entry: its inputs are rows drawn elsewhere, named above it
    return _node(node.row, "ac-merge") + _edge(node.row.output_shape)


_GRAPH_PARTS = {"layer": _graph_layer, "block": _graph_block, "concat": _graph_concat,
                "heads": _graph_heads, "merge": _graph_merge, "join": _graph_join}


def _graph_html(report: Report) -> str:
    root = report.row_tree
    if root is None:   # its rows are folded: they no longer hang on the graph
        return '<p class="ac-dim">(the graph view needs an unfolded report)</p>'
    # the page opens on the top level: blocks closed (ResNet-50's stages, GoogLeNet's
    # inception modules), open only when the whole net is a screen of nodes
    open_depth = 1 if len(report.rows) <= 40 else 0
    first = report.rows[0]
    return (f'<div class="ac-graph">{_node(first, "ac-input")}{_edge(first.output_shape)}'
            f'{_graph_items(root.children, 0, open_depth)}</div>')


# -- charts (inline SVG) -------------------------------------------------------------------

CHART_ROWS = 150   # more bars than this: one per block (the plot's folding)
COLORS = ("#3b6fb6", "#e07b39", "#4a9a5b", "#b5475b", "#7a5fb0", "#8c6d31")


def _ticks(lo: int, hi: int):
    step = max(1, (hi - lo + 5) // 6)
    return range(lo, hi + 1, step)


PANEL_HEIGHT = 120    # one figure's bars, in the SVG's units (960 wide)
LABEL_CHARS = 28      # longer layer names keep their end: "...layer4.bottleneck3.conv3"
LABEL_CHAR_WIDTH = 5.2   # at the 9px label font
LABEL_SPACING = 10    # the least room between two labels; denser ones label every k-th bar


def _axis_label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else "\u2026" + text[-(LABEL_CHARS - 1):]


def _log_panel(values, lo_hi, top: int, left: int, right: int, step: float, color: str,
               labels, rows) -> list:
    """One figure's bars on a log scale between y = top and top + PANEL_HEIGHT."""
    lo, hi = lo_hi
    bar = max(step * 0.8, 0.5)

    def y(v):
        return top + PANEL_HEIGHT * (1 - (math.log10(v) - lo) / (hi - lo))
    parts = []
    for e in _ticks(lo, hi):
        ty = y(10 ** e)
        parts.append(f'<line x1="{left}" x2="{right}" y1="{ty:.1f}" y2="{ty:.1f}" '
                     f'class="ac-grid"/><text x="{left - 4}" y="{ty + 3.5:.1f}" '
                     f'text-anchor="end" class="ac-tick">{esc(sym.human(10 ** e))}</text>')
    for i, v in enumerate(values):
        if not (isinstance(v, int) and v > 0):
            continue
        x, top_y = left + i * step + (step - bar) / 2, y(v)
        row = f' data-row="{rows[i]}"' if rows else ""
        parts.append(f'<rect x="{x:.2f}" y="{top_y:.2f}" width="{bar:.2f}" '
                     f'height="{top + PANEL_HEIGHT - top_y:.2f}" fill="{color}" '
                     f'data-i="{i}"{row}><title>{esc(labels[i])}: {esc(_num(v))}</title></rect>')
    bottom = top + PANEL_HEIGHT
    parts.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" class="ac-axis"/>')
    return parts


def layer_charts(labels, panels, rows=None, width: int = 960, unit: str = "layer") -> str:
    """Per-layer bars, one log-scale panel per (title, values, color), stacked
    over one x axis that names the layers (every k-th when they are dense), so
    that a printed page reads without hovering; each bar's <title> holds its
    layer and exact value. ``rows``: the table row of each bar, for a click;
    ``unit``: what a bar is (a layer, or a block when the rows are folded)."""
    n = len(labels)
    if not n:
        return ""
    left, right = 56, width - 8
    step = (right - left) / n
    every = max(1, math.ceil(LABEL_SPACING / step))
    longest = max(len(_axis_label(t)) for t in labels)
    label_room = int(longest * LABEL_CHAR_WIDTH) + 8
    title_room = 22   # the panel's title over its top tick
    height = len(panels) * (PANEL_HEIGHT + title_room + 6) + label_room
    parts, top = [], 0
    for title, values, color in panels:
        positive = [v for v in values if isinstance(v, int) and v > 0]
        parts.append(f'<text x="{left}" y="{top + 10}" class="ac-paneltitle">{esc(title)}'
                     f'{"" if positive else ": all zero"}</text>')
        top += title_room
        if positive:
            # half a decade below the smallest bar, so that it shows
            lo = math.floor(math.log10(min(positive) / 3))
            hi = max(math.ceil(math.log10(max(positive))), lo + 1)
            parts += _log_panel(values, (lo, hi), top, left, right, step, color, labels, rows)
        top += PANEL_HEIGHT + 6
    for i in range(0, n, every):
        x = left + i * step + step / 2
        parts.append(f'<text class="ac-xlabel" data-i="{i}" text-anchor="end" '
                     f'dominant-baseline="central" '
                     f'transform="translate({x:.2f},{top - 2}) rotate(-90)">'
                     f'{esc(_axis_label(labels[i]))}<title>{esc(labels[i])}</title></text>')
    what = unit if n == 1 else unit + "s"
    shown = f"one name in {every} shown" if every > 1 else "every name shown"
    click = ", click it for its row" if rows else ""
    caption = (f"Per {unit}: {n} {what} in table order ({shown}; log scales; hover a bar "
               f"for its value{click})")
    return (f'<figure class="ac-chart ac-perlayer"><figcaption>{esc(caption)}</figcaption>'
            f'<svg class="ac-svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="{esc(caption)}">{"".join(parts)}</svg></figure>')


def memory_chart(report: Report, width: int = 960) -> str:
    """The training step's memory as one stacked bar, with the forward-only figures."""
    t = report.totals
    parts = [("weights", t["param_bytes"]), ("gradients", t["gradient_bytes"]),
             ("optimizer state", t["optimizer_state_bytes"]),
             ("saved for backward", t["saved_activation_bytes"])]
    total = t["train_memory_bytes"]
    if not all(isinstance(v, int) for _, v in parts) or not total:
        return ""
    x, h, svg = 0.0, 34, []
    for (name, v), color in zip(parts, COLORS):
        w = (width - 2) * v / total
        svg.append(f'<rect x="{x + 1:.2f}" y="1" width="{w:.2f}" height="{h}" fill="{color}" '
                   f'data-part="{esc(name)}" data-value="{v}"><title>{esc(name)}: '
                   f'{esc(sym.human_bytes(v))} ({esc(_num(v))} bytes)</title></rect>')
        x += w
    legend = "".join(
        f'<span class="ac-key"><i style="background:{color}"></i>{esc(name)} '
        f'{esc(sym.human_bytes(v))} ({100 * v / total:.1f}%)</span>'
        for (name, v), color in zip(parts, COLORS))
    caption = (f"Training step memory: {sym.human_bytes(total)} at batch {report.batch}, "
               f"{report.dtype}, {report.optimizer}")
    extra = f"forward-only activations {sym.human_bytes(t['activation_bytes'])}"
    if "inference_peak_bytes" in t:
        extra += f"; inference peak {sym.human_bytes(t['inference_peak_bytes'])}"
    return (f'<figure class="ac-chart ac-memory"><figcaption>{esc(caption)}</figcaption>'
            f'<svg class="ac-svg" viewBox="0 0 {width} {h + 2}" width="100%" role="img" '
            f'aria-label="{esc(caption)}">{"".join(svg)}</svg>'
            f'<div class="ac-legend">{legend}</div><p class="ac-dim">{esc(extra)}</p></figure>')


def _charts(report: Report) -> str:
    if report.symbolic:
        return ('<p class="ac-dim">Charts need numbers: bind the unbound variables with '
                '--set NAME=VALUE.</p>')
    from .plot import auto_depth
    depth = auto_depth([report.rows], CHART_ROWS)
    rows = fold(report.rows, depth) if depth else report.rows
    note = (f'<p class="ac-dim">{len(report.rows)} rows: one bar per block at depth {depth}.</p>'
            if depth else "")
    panels = (("activations (elements per sample)", [r.activations for r in rows], COLORS[0]),
              ("params", [r.params for r in rows], COLORS[1]),
              ("MACs", [r.macs for r in rows], COLORS[2]))
    return note + memory_chart(report) + layer_charts(
        [_label(r) for r in rows], panels, None if depth else [r.index for r in rows],
        unit="block" if depth else "layer")


def _section(report: Report, own: bool, i: int, uid: str) -> str:
    from ..lint import lint
    try:
        findings = lint(report)
    except Exception:  # noqa: BLE001 - advice, not worth failing the page for
        findings = []
    m = report.model
    source = f'<p class="ac-source">{esc(m.source)}</p>' if m.source else ""
    return (f'<section class="ac-spec" id="{uid}-spec-{i}" data-spec="{i}">'
            f'<h2>{esc(m.name)}</h2>{source}'
            f'<p class="ac-dim">{esc(m.file)} &middot; input {_shape(m.input)} &middot; '
            f'batch {report.batch} &middot; {esc(report.dtype)} &middot; '
            f'{len(report.rows)} rows</p>'
            f'<h3>Totals</h3>{_totals(report)}{_notes(report, own, findings)}'
            f'<h3>Charts</h3>{_charts(report)}'
            f'<h3>Graph</h3><div class="ac-graphbar"><button type="button" data-act="open">'
            f'expand all</button> <button type="button" data-act="close">collapse all</button> '
            f'<span class="ac-dim">blocks fold and unfold on a click; the shape on each edge is '
            f'the tensor passed on, per sample</span></div>{_graph_html(report)}'
            f'<h3>Layers</h3>{_table(report, f"{uid}-{i}")}'
            f'<script type="application/json" class="ac-data">'
            f'{script_json(_data(report, findings))}</script></section>')


def _data(report: Report, findings) -> dict:
    data = report.to_dict()
    data["file"] = report.model.file
    data["lint"] = [f.as_json() for f in findings]
    return data


# -- several specs ---------------------------------------------------------------------------

def _compare(reports) -> str:
    from ..compare import FIGURES, Comparison, figure_values, ratio_text
    c = Comparison([r.model.name for r in reports], [r.model.file for r in reports],
                   figure_values(reports), reports)
    head = "".join(f"<th>{esc(n)}</th>" for n in c.names)
    rows = []
    for key, label, _ in FIGURES:
        cells = []
        for i, v in enumerate(c.values[key]):
            ratio = f' <small>[{esc(ratio_text(c.ratio(key, i)))}]</small>' if i else ""
            cells.append(f'<td data-value="{_value_attr(v)}">{esc(_num(v))}{ratio}</td>')
        rows.append(f'<tr data-key="{key}"><th>{esc(label)}</th>{"".join(cells)}</tr>')
    bars = []
    for key, label, _ in FIGURES[:5]:
        vals = c.values[key]
        if not all(isinstance(v, int) for v in vals) or not max(vals):
            continue
        top = max(vals)
        # one grid per figure: the names' column has one width, so every bar
        # starts at the same x and the bars' track is as wide on every row
        bars.append(f'<div class="ac-cmp" data-key="{key}"><b>{esc(label)}</b>' + "".join(
            f'<span class="ac-cmpname" title="{esc(n)}">{esc(n)}</span>'
            f'<span class="ac-cmptrack"><i style="width:{100 * v / top:.3f}%;'
            f'background:{COLORS[j % len(COLORS)]}" data-value="{v}" title="{esc(n)}: '
            f'{esc(_num(v))}"></i></span><em>{esc(sym.human(v))}</em>'
            for j, (n, v) in enumerate(zip(c.names, vals))) + "</div>")
    return (f'<section class="ac-compare"><h2>Side by side</h2><div class="ac-scroll">'
            f'<table class="ac-cmptable"><thead><tr><th>figure</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            f'<p class="ac-dim">[ratio to the first design]; MACs per sample.</p>'
            f'<div class="ac-cmpbars">{"".join(bars)}</div></section>')


# -- the page ----------------------------------------------------------------------------------

CSS = """
.archcalc-report{--fg:#1d2430;--dim:#5d6878;--line:#d5dae2;--bg:#fff;--soft:#f4f6f9;--hi:#fff3c4;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
 background:var(--bg);max-width:1200px;margin:0 auto;padding:12px 18px}
.archcalc-report h1{font-size:22px;margin:8px 0}.archcalc-report h2{font-size:19px;margin:22px 0 4px;
 border-bottom:2px solid var(--line)}.archcalc-report h3{font-size:15px;margin:16px 0 6px}
.archcalc-report .ac-dim{color:var(--dim);font-size:12px}.archcalc-report .ac-source{margin:2px 0;font-style:italic}
.archcalc-report nav a{margin-right:12px}
.ac-totals{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:6px;margin:0}
.ac-total{background:var(--soft);border-radius:6px;padding:6px 10px}.ac-total dt{color:var(--dim);font-size:12px}
.ac-total dd{margin:0;font-size:16px;font-weight:600}.ac-total small{font-weight:400;color:var(--dim);font-size:12px}
.ac-notes,.ac-findings{padding-left:18px}.ac-warning{color:#9a5b00}.ac-arith{font-family:ui-monospace,Menlo,Consolas,monospace;
 font-size:12px;color:var(--dim)}
.ac-chart{margin:8px 0 14px}.ac-chart figcaption{font-weight:600;font-size:13px}
.ac-svg{display:block;max-width:100%;height:auto}
.ac-grid{stroke:#e6e9ee}.ac-axis{stroke:#8892a0}.ac-tick{font-size:10px;fill:var(--dim)}
.ac-legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;margin-top:4px}
.ac-key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.ac-graph{font-size:12.5px;overflow-x:auto;padding:4px 0}
.ac-node{display:inline-block;border:1px solid var(--line);border-radius:6px;padding:2px 8px;background:#fff;
 cursor:pointer;white-space:nowrap}.ac-node:hover,.ac-node.ac-hit{background:var(--hi)}
.ac-node .ac-name{font-weight:600}.ac-node .ac-kind{color:var(--dim)}
.ac-merge{background:#eef4ff;border-color:#9db7e5}.ac-input{background:#eef8ef;border-color:#9cc9a3}
.ac-edge{color:var(--dim);font-size:11px;padding:1px 0 1px 14px;border-left:2px solid var(--line);margin-left:12px}
.ac-edge:before{content:"\\2193  "}
.ac-block{border-left:3px solid #c9d3e3;margin:3px 0 3px 4px;padding-left:8px}
.ac-block>summary{cursor:pointer;padding:2px 0}.ac-inner{padding-top:2px}
.ac-fork{margin:4px 0}.ac-branches{display:flex;gap:10px;align-items:flex-start}
.ac-branch{border:1px dashed var(--line);border-radius:6px;padding:4px 6px;min-width:90px}
.ac-short{background:var(--soft)}.ac-branchname{color:var(--dim);font-size:11px}
.ac-identity{color:var(--dim);font-style:italic}
.ac-from{color:var(--dim);font-size:.85em;padding-left:.5em}
.ac-tablebar{margin:4px 0}.ac-filter{padding:4px 8px;min-width:260px;border:1px solid var(--line);border-radius:4px}
.ac-scroll{overflow-x:auto}
.ac-layers,.ac-cmptable{border-collapse:collapse;font-size:12.5px;width:100%}
.ac-layers th,.ac-layers td,.ac-cmptable th,.ac-cmptable td{border-bottom:1px solid var(--line);padding:3px 8px;
 text-align:right;white-space:nowrap}
.ac-layers th{position:sticky;top:0;background:var(--soft);cursor:pointer;user-select:none}
.ac-layers th[data-sort=asc]:after{content:" \\25B2"}.ac-layers th[data-sort=desc]:after{content:" \\25BC"}
.ac-layers td.ac-layer,.ac-layers td.ac-kind,.ac-layers td.ac-output,.ac-layers th:nth-child(2),
.ac-layers th:nth-child(3),.ac-layers th:nth-child(4),.ac-cmptable th{text-align:left}
.ac-layers tr:hover td{background:var(--soft)}.ac-layers tr.ac-hit td{background:var(--hi)}
.ac-cmpbars{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px 18px}
.ac-cmp{display:grid;grid-template-columns:10em minmax(0,1fr) 4.5em;gap:3px 6px;align-items:center;font-size:12px}
.ac-cmp>b{grid-column:1/-1}.ac-cmpname{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.ac-cmptrack{display:block;height:10px}.ac-cmptrack i{display:block;height:100%;min-width:1px;border-radius:2px}
.ac-cmp em{font-style:normal;color:var(--dim);white-space:nowrap}
.ac-paneltitle{font-size:11px;font-weight:600;fill:var(--fg)}.ac-xlabel{font-size:9px;fill:var(--fg)}
.ac-perlayer rect,.ac-xlabel{cursor:pointer}.ac-perlayer .ac-hit{opacity:.55}.ac-xlabel.ac-hit{font-weight:700;opacity:1}
.ac-tablescroll{max-height:60vh;overflow:auto}
@media print{.ac-tablescroll{max-height:none;overflow:visible}.ac-tablebar,.ac-graphbar{display:none}}
"""

JS = r"""
(function(root){
  if(!root||root.dataset.ready)return;root.dataset.ready="1";
  function num(td){var v=td.getAttribute("data-value");return v===null||v===""?NaN:Number(v);}
  root.querySelectorAll("table.ac-layers").forEach(function(table){
    var tbody=table.tBodies[0];
    table.querySelectorAll("th").forEach(function(th,col){
      th.addEventListener("click",function(){
        var numeric=th.getAttribute("data-numeric")==="1";
        var dir=th.getAttribute("data-sort")==="asc"?"desc":"asc";
        table.querySelectorAll("th").forEach(function(h){h.removeAttribute("data-sort");});
        th.setAttribute("data-sort",dir);
        var rows=Array.prototype.slice.call(tbody.rows);
        rows.sort(function(a,b){
          var x=a.cells[col],y=b.cells[col],r;
          if(numeric){var p=num(x),q=num(y);
            if(isNaN(p)&&isNaN(q))r=0;else if(isNaN(p))r=1;else if(isNaN(q))r=-1;else r=p-q;}
          else r=x.textContent.localeCompare(y.textContent);
          if(r===0)r=Number(a.getAttribute("data-row"))-Number(b.getAttribute("data-row"));
          return dir==="asc"?r:-r;});
        rows.forEach(function(r){tbody.appendChild(r);});
      });
    });
  });
  root.querySelectorAll("section.ac-spec").forEach(function(sec){
    var filter=sec.querySelector(".ac-filter"),count=sec.querySelector(".ac-count");
    var table=sec.querySelector("table.ac-layers");
    if(filter&&table)filter.addEventListener("input",function(){
      var q=filter.value.trim().toLowerCase(),shown=0;
      Array.prototype.forEach.call(table.tBodies[0].rows,function(tr){
        var text=(tr.getAttribute("data-path")+" "+tr.cells[2].textContent).toLowerCase();
        var hit=!q||text.indexOf(q)>=0;tr.style.display=hit?"":"none";if(hit)shown++;});
      count.textContent=shown+" of "+table.tBodies[0].rows.length+" rows";
    });
    sec.querySelectorAll(".ac-graphbar button").forEach(function(b){
      b.addEventListener("click",function(){var open=b.getAttribute("data-act")==="open";
        sec.querySelectorAll("details.ac-block").forEach(function(d){d.open=open;});});
    });
    sec.querySelectorAll(".ac-node[data-row],.ac-perlayer rect[data-row]").forEach(function(node){
      node.addEventListener("click",function(){
        var tr=table&&table.querySelector('tr[data-row="'+node.getAttribute("data-row")+'"]');
        sec.querySelectorAll(".ac-hit").forEach(function(e){e.classList.remove("ac-hit");});
        node.classList.add("ac-hit");
        if(tr){tr.classList.add("ac-hit");tr.style.display="";tr.scrollIntoView({block:"center"});}
      });
    });
    // a bar or a name under the chart: the layer's bars in every panel, and its name
    sec.querySelectorAll(".ac-perlayer svg").forEach(function(svg){
      function mark(on){return function(ev){var i=ev.target.getAttribute&&ev.target.getAttribute("data-i");
        if(i===null)return;svg.querySelectorAll('[data-i="'+i+'"]').forEach(function(e){
          e.classList.toggle("ac-hit",on);});};}
      svg.addEventListener("mouseover",mark(true));svg.addEventListener("mouseout",mark(false));
    });
  });
  // printed, every block is open; the screen gets its own state back
  var closed=[];
  window.addEventListener("beforeprint",function(){closed=Array.prototype.filter.call(
    root.querySelectorAll("details.ac-block"),function(d){return !d.open;});
    closed.forEach(function(d){d.open=true;});});
  window.addEventListener("afterprint",function(){closed.forEach(function(d){d.open=false;});});
})(document.getElementById("%(uid)s"));
"""


def fragment(items, title: str | None = None) -> str:
    """The report as an HTML fragment (a notebook cell's output): a root <div>
    with its own styles and script. ``items``: reports, or (report, own) pairs,
    own meaning at the spec's own input and variables (its notes hold)."""
    pairs = [(it, True) if isinstance(it, Report) else tuple(it) for it in items]
    uid = f"archcalc-{next(_ids)}"
    names = ", ".join(r.model.name for r, _ in pairs)
    nav = ""
    if len(pairs) > 1:
        nav = "<nav>" + "".join(f'<a href="#{uid}-spec-{i}">{esc(r.model.name)}</a>'
                                for i, (r, _) in enumerate(pairs)) + "</nav>"
    body = [f'<h1>{esc(title or names)}</h1>{nav}'] if title or len(pairs) > 1 else []
    if len(pairs) > 1:
        body.append(_compare([r for r, _ in pairs]))
    body += [_section(r, own, i, uid) for i, (r, own) in enumerate(pairs)]
    body.append(f'<p class="ac-dim">archcalc {esc(__version__)}. Shapes per sample (C x H x W); '
                'params = weights + biases (+ BN affine); MACs = multiply-accumulates of conv '
                'and fc; FLOPs = 2 x MACs + elementwise work; RF = receptive field in input '
                'pixels. K = 10^3, M = 10^6, G = 10^9; MB = 10^6 bytes.</p>')
    return (f'<div class="archcalc-report" id="{uid}"><style>{CSS}</style>{"".join(body)}'
            f'<script>{JS % {"uid": uid}}</script></div>')


CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:; base-uri 'none'; form-action 'none'")


def page(items, title: str | None = None) -> str:
    """The whole self-contained page: nothing is fetched when it is opened."""
    pairs = [(it, True) if isinstance(it, Report) else tuple(it) for it in items]
    heading = title or ", ".join(r.model.name for r, _ in pairs)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(heading)} - archcalc report</title></head>"
            f"<body style=\"margin:0\">{fragment(pairs, title)}</body></html>\n")


def spec_html(spec) -> str:
    """A Spec in a notebook: its report at its own input, or the error, as text."""
    from ..errors import SpecError
    try:
        report = spec.analyze()
    except SpecError as e:
        return f'<pre class="archcalc-error">error: {esc(e)}</pre>'
    return fragment([(report, True)])
