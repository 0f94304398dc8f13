"""`archcalc sweep -o front.html`: one self-contained page (the report's style
and Content-Security-Policy: nothing is fetched).

The scatter of two objectives is inline SVG drawn here: every evaluated point
a circle (grey when a constraint cut it), the Pareto front highlighted and
joined. Hovering a point shows its variables and the two values; clicking it
opens the design: its totals, the `archcalc table` command of the bound
spec, and for points on the front the per-layer table itself (the report's).
Every string from the spec or the command line is escaped (report.esc,
report.script_json).
"""
from __future__ import annotations

import math

from .. import __version__
from .report import CSP, CSS, _table, esc, script_json
from .sweep import columns, number, summary_lines
from .sweep_plot import axes_of

FRONT_TABLES = 12      # per-layer tables embedded (the front's first points)
DRAWN = 20_000         # circles drawn at most: past this the page gets slow

SWEEP_CSS = """
.sw-svg{background:#fff;border:1px solid #ddd;max-width:960px}
.sw-point{fill:#9bb3d6;stroke:#3b6fb6;stroke-width:.5;cursor:pointer}
.sw-cut{fill:#ddd;stroke:#aaa}
.sw-front{fill:#e07b39;stroke:#8a4210;stroke-width:1}
.sw-point.sw-picked{stroke:#000;stroke-width:2.5}
.sw-frontline{fill:none;stroke:#e07b39;stroke-width:1.5}
#sw-tip{position:fixed;display:none;background:#222;color:#fff;padding:4px 8px;
 border-radius:4px;font:12px/1.4 monospace;pointer-events:none;z-index:10;white-space:pre}
.sw-detail{border:1px solid #ddd;padding:8px 12px;margin:12px 0;max-width:960px}
.sw-detail table td{padding:1px 10px 1px 0}
"""

SWEEP_JS = r"""
(function(){
  var data = JSON.parse(document.getElementById("sw-data").textContent);
  var byIndex = {}; data.points.forEach(function(p){ byIndex[p.index] = p; });
  var tip = document.getElementById("sw-tip");
  function vars(p){ return Object.keys(p.variables).map(function(k){
    return k + " = " + p.variables[k]; }).join("\n"); }
  document.querySelectorAll(".sw-point").forEach(function(c){
    var p = byIndex[c.getAttribute("data-index")];
    c.addEventListener("mouseenter", function(e){
      tip.textContent = vars(p) + "\n" + data.x + ": " + p.totals_text[data.x] + "\n" +
        data.y + ": " + p.totals_text[data.y] + (p.front ? "\n(on the front)" :
        p.cut_by ? "\ncut by " + p.cut_by : "");
      tip.style.display = "block";
      tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px";
    });
    c.addEventListener("mouseleave", function(){ tip.style.display = "none"; });
    c.addEventListener("click", function(){ show(p, c); });
  });
  function show(p, c){
    document.querySelectorAll(".sw-picked").forEach(function(e){ e.classList.remove("sw-picked"); });
    c.classList.add("sw-picked");
    var d = document.getElementById("sw-detail");
    d.hidden = false;
    d.querySelector(".sw-title").textContent = "point " + p.index + ": " +
      vars(p).split("\n").join(", ");
    var rows = d.querySelector(".sw-totals"); rows.textContent = "";
    Object.keys(p.totals_text).forEach(function(k){
      var tr = document.createElement("tr");
      var a = document.createElement("td"); a.textContent = k;
      var b = document.createElement("td"); b.textContent = p.totals_text[k];
      tr.appendChild(a); tr.appendChild(b); rows.appendChild(tr);
    });
    d.querySelector(".sw-command").textContent = p.command;
    document.querySelectorAll(".sw-layers").forEach(function(t){
      t.hidden = t.getAttribute("data-index") !== String(p.index); });
    var has = document.querySelector('.sw-layers[data-index="' + p.index + '"]');
    d.querySelector(".sw-nolayers").hidden = !!has;
  }
})();
"""


def _scale(values, lo_px, hi_px):
    """Linear, or log10 when all are positive and span more than 100x."""
    lo, hi = min(values), max(values)
    use_log = lo > 0 and hi / lo > 100
    f = math.log10 if use_log else (lambda v: v)
    a, b = f(lo), f(hi)
    if a == b:
        a, b = a - 1, b + 1

    def to_px(v):
        return lo_px + (f(v) - a) / (b - a) * (hi_px - lo_px)
    return to_px, use_log, (lo, hi)


def drawn(result) -> list:
    """The points on the page: the front first, then the others, DRAWN at most."""
    ok = [p for p in result.points if not p.error]
    if len(ok) <= DRAWN:
        return ok
    return sorted(ok, key=lambda p: not p.front)[:DRAWN]


def scatter(result, x_name, y_name, width=900, height=460) -> str:
    shown = drawn(result)
    if not shown:
        return '<p class="ac-dim">no point could be analysed</p>'
    left, right, top, bottom = 80, 20, 20, 50
    sx, xlog, (x0, x1) = _scale([p.value(x_name) for p in shown], left, width - right)
    sy, ylog, (y0, y1) = _scale([p.value(y_name) for p in shown], height - bottom, top)
    parts = [f'<svg class="sw-svg" id="sw-plot" viewBox="0 0 {width} {height}" width="100%" '
             f'role="img" aria-label="{esc(x_name)} against {esc(y_name)}">',
             f'<line class="ac-axis" x1="{left}" y1="{height - bottom}" x2="{width - right}" '
             f'y2="{height - bottom}" stroke="#888"/><line class="ac-axis" x1="{left}" '
             f'y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>']
    for v, anchor in ((x0, "start"), (x1, "end")):
        parts.append(f'<text class="ac-tick" x="{sx(v):.1f}" y="{height - bottom + 16}" '
                     f'text-anchor="{anchor}">{esc(number(v))}</text>')
    for v in (y0, y1):
        parts.append(f'<text class="ac-tick" x="{left - 4}" y="{sy(v) + 4:.1f}" '
                     f'text-anchor="end">{esc(number(v))}</text>')
    parts.append(f'<text x="{(left + width) / 2:.0f}" y="{height - 8}" text-anchor="middle">'
                 f'{esc(x_name)}{" (log)" if xlog else ""}</text>'
                 f'<text x="14" y="{(top + height) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(top + height) / 2:.0f})">{esc(y_name)}'
                 f'{" (log)" if ylog else ""}</text>')
    front = sorted((p for p in shown if p.front), key=lambda p: (p.value(x_name), p.value(y_name)))
    if len(front) > 1:
        line = " ".join(f"{sx(p.value(x_name)):.1f},{sy(p.value(y_name)):.1f}" for p in front)
        parts.append(f'<polyline class="sw-frontline" points="{line}"/>')
    # the front last, so that it is drawn over the other points
    for p in sorted(shown, key=lambda p: (p.front, p.feasible)):
        cls = "sw-point" + (" sw-front" if p.front else "") + ("" if p.feasible else " sw-cut")
        r = 5 if p.front else 3.5
        parts.append(f'<circle class="{cls}" data-index="{p.index}" '
                     f'cx="{sx(p.value(x_name)):.1f}" cy="{sy(p.value(y_name)):.1f}" r="{r}"/>')
    parts.append("</svg>")
    return "".join(parts)


def command(result, p) -> str:
    """The `archcalc table` line of a point's bound spec."""
    parts = ["archcalc", "table", result.spec_file]
    for name, value in {**result.options.get("set", {}), **p.variables}.items():
        if name in result.spec_vars:
            parts += ["--set", f"{name}={value}"]
    parts += ["--input", "x".join(map(str, p.input))]
    if p.batch != 1:
        parts += ["--batch", str(p.batch)]
    if result.options.get("dtype", "fp32") != "fp32":
        parts += ["--dtype", result.options["dtype"]]
    return " ".join(parts)


def _point_data(result, keys) -> list:
    out = []
    for p in drawn(result):
        out.append({"index": p.index, "variables": {k: number(v) for k, v in p.variables.items()},
                    "totals_text": {k: number(v) for k, v in p.metrics.items()
                                    if k in keys or k in ("params", "macs")},
                    "front": p.front, "feasible": p.feasible, "cut_by": p.cut_by,
                    "command": command(result, p)})
    return out


def page(result, reports: dict) -> str:
    """``reports``: point index -> the point's Report (the front's first points)."""
    x_name, y_name = axes_of(result)
    keys = set(columns(result)) | {x_name, y_name}
    data = {"x": x_name, "y": y_name, "points": _point_data(result, keys)}
    for p in data["points"]:   # a variable on an axis: hover shows it like a total
        for name in (x_name, y_name):
            p["totals_text"].setdefault(name, p["variables"].get(name, ""))
    lines = summary_lines(result)
    if len(data["points"]) < len(result.points) - sum(result.errors.values()):
        lines.append(f"drawn: {len(data['points']):,} points (the front first; all of them "
                     "are in --format json or csv)")
    summary = "".join(f"<li>{esc(line)}</li>" for line in lines)
    tables = "".join(f'<div class="sw-layers" data-index="{i}" hidden>{_table(r, f"sw-{i}")}'
                     f'</div>' for i, r in reports.items())
    title = f"{result.model}: design sweep"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<title>{esc(title)} - archcalc</title></head><body style=\"margin:0\">"
            f'<div class="archcalc-report"><style>{CSS}{SWEEP_CSS}</style>'
            f"<h1>{esc(title)}</h1><ul class=\"sw-summary\">{summary}</ul>"
            f'<p class="ac-dim">Hover a point for its variables; click it for its totals and '
            f'its table. Orange: the Pareto front; grey: cut by a constraint.</p>'
            f"{scatter(result, x_name, y_name)}<div id=\"sw-tip\"></div>"
            f'<div class="sw-detail" id="sw-detail" hidden><h3 class="sw-title"></h3>'
            f'<table><tbody class="sw-totals"></tbody></table>'
            f'<p>The same design: <code class="sw-command"></code></p>'
            f'<p class="sw-nolayers ac-dim">Its per-layer table: run the command above (the '
            f'page embeds the tables of the first {FRONT_TABLES} front points).</p>'
            f"{tables}</div>"
            f'<p class="ac-dim">archcalc {esc(__version__)}; the figures are '
            f'<code>archcalc table</code>\'s for each bound spec.</p>'
            f'<script type="application/json" id="sw-data">{script_json(data)}</script>'
            f"<script>{SWEEP_JS}</script></div></body></html>\n")
