"""User strings (a spec's names, notes, source, file names, a profile's device
name, an import target) are data, never markup, formulas or terminal codes:
specs come from strangers. One function per output format, used by every
renderer:

    clean       terminal, SVG/XML text: one line, control characters shown
                escaped (\\x1b), no lone surrogates, nothing XML 1.0 forbids
    markup      a rich string parsed as markup: clean, then rich's escape
    md_cell     a markdown table cell: clean, then \\ | * ` [ ] < > & escaped
    csv_cell    a CSV cell: clean, and a formula-looking text neutralised (OWASP)
    json_text   JSON: no lone surrogates, no NaN/Infinity (null instead)
"""
from __future__ import annotations

import json
import math
import re

# C0 (tab and newline become spaces first), DEL and C1: never reach a terminal raw
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# what XML 1.0 forbids besides C0 (and a UTF-8 terminal cannot encode): lone
# surrogates, U+FFFE, U+FFFF; the bidi overrides that reorder what a terminal shows
_INVALID = re.compile("[\ud800-\udfff\ufffe\uffff\u202a-\u202e\u2066-\u2069]")
REPLACEMENT = "\ufffd"


def clean(text) -> str:
    """The text on one line: tabs and newlines become spaces, other control
    characters show as escapes (ESC as \\x1b, BEL as \\x07), and lone
    surrogates, U+FFFE/U+FFFF and bidi overrides become U+FFFD."""
    text = str(text).replace("\t", " ").replace("\r\n", " ").replace("\n", " ")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return _INVALID.sub(REPLACEMENT, text)


def markup(text) -> str:
    """For a rich string that is parsed as markup: cleaned and escaped."""
    from rich.markup import escape
    return escape(clean(text))


def rich_text(text, style: str = ""):
    """A rich Text (never parsed as markup) of cleaned text."""
    from rich.text import Text
    return Text(clean(text), style=style)


_MD_SPECIAL = re.compile(r"([\\|*`\[\]])")  # '_' inside a word is no emphasis


def md_cell(value) -> str:
    """Text for a markdown table cell or list item: one line (a newline would
    end the row), backslashes and pipes escaped (an escaped '\\|' in a name
    stays two characters, never a column break), emphasis and code marks
    escaped, and HTML escaped so a note's <script> stays text."""
    text = clean(value)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# OWASP CSV injection: a cell beginning with one of these is a formula to a spreadsheet
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value):
    """A CSV cell: numbers stay numbers (-1.5 too); text is cleaned of control
    characters and, when it begins like a formula (= + - @ TAB CR), prefixed
    with a single quote, as OWASP recommends, so a spreadsheet shows it as text."""
    if value is None:
        return ""
    if isinstance(value, (bool, int)) or isinstance(value, float) and math.isfinite(value):
        return value
    raw = str(value)
    if _PLAIN_NUMBER.fullmatch(raw):
        return raw
    text = clean(raw)
    if raw.startswith(_FORMULA_START) or text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_row(values) -> list:
    return [csv_cell(v) for v in values]


def json_safe(value):
    """``value`` with every string's lone surrogates replaced by U+FFFD and
    every NaN or infinite float as None (JSON has neither)."""
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {json_safe(k) if isinstance(k, str) else k: json_safe(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(value, **options) -> str:
    """json.dumps for every JSON archcalc prints or writes: valid JSON by
    construction (allow_nan=False holds). Other objects go through
    ``default`` (str unless given) and are made safe too."""
    default = options.pop("default", str)
    value, default = _json_ready(value, default)
    return json.dumps(value, allow_nan=False, default=default, **options)


def json_document(value: dict, rows: str) -> str:
    """``value`` as indented JSON whose ``rows`` list holds one item per line:
    a per-layer table reads (and greps) one layer a line, and the C encoder
    writes each row (indent= falls back to the pure-Python encoder: a
    100,000-row table took 3 s more)."""
    value, default = _json_ready(value, str)
    parts = []
    for key, item in value.items():
        name = json.dumps(key)
        if key == rows and isinstance(item, list) and item:
            lines = ",\n".join("    " + json.dumps(row, allow_nan=False, default=default)
                                for row in item)
            parts.append(f"  {name}: [\n{lines}\n  ]")
        else:
            text = json.dumps(item, allow_nan=False, default=default, indent=2)
            parts.append(f"  {name}: " + text.replace("\n", "\n  "))
    return "{\n" + ",\n".join(parts) + "\n}"


def _json_ready(value, default):
    """``value`` and ``default`` made safe for JSON. Most values are clean: one
    pass of the C encoder proves it, and only a value holding NaN or a lone
    surrogate pays for json_safe's walk."""
    try:
        probe = json.dumps(value, allow_nan=False, ensure_ascii=False, default=default)
    except ValueError:
        probe = None
    if probe is not None and not _SURROGATE.search(probe):
        return value, default
    return json_safe(value), (lambda o: json_safe(default(o)))


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(value, **options) -> str:
    """json.dumps for every JSON archcalc prints or writes: valid JSON by
    construction (allow_nan=False holds). Other objects go through
    ``default`` (str unless given) and are made safe too."""
    default = options.pop("default", str)
    # Most values are clean: one pass of the C encoder (compact, fast) proves it,
    # and only a value holding NaN or a lone surrogate pays for json_safe's walk
    # (a 100,000-row table: 2 s less).
    try:
        probe = json.dumps(value, allow_nan=False, ensure_ascii=False, default=default)
    except ValueError:
        probe = None
    if probe is not None and not _SURROGATE.search(probe):
        return json.dumps(value, allow_nan=False, default=default, **options)
    return json.dumps(json_safe(value), allow_nan=False,
                      default=lambda o: json_safe(default(o)), **options)
