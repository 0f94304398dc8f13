"""Hypothesis strategies for whole spec documents, valid and corrupted, for the
fuzz property (a report or a SpecError, nothing else). Apart from the
assertions; every example is a TOML text that reproduces it when saved.

The corruptions come in the families a hostile user tries: structure (keys
dropped, renamed, put in the wrong table), types (strings for numbers, lists
for tables), sizes (zero, negative, huge, thousands of repeats), nesting
(deep arrays, blocks calling blocks), expressions (nested powers, long
chains, calls, attribute access, unbound names) and raw text (bytes cut,
brackets and quotes inserted).
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

KINDS = ["conv", "maxpool", "avgpool", "relu", "fc", "batch_norm", "dropout", "flatten",
         "global_avgpool", "lrn", "se", "conv_transpose", "upsample", "tanh", "softmax",
         "max_unpool", "conv_table", "adaptive_avgpool", "local", "maxout", "prelu", "convv"]
ARGS = ["kernel", "stride", "padding", "dilation", "groups", "bias", "out", "p", "size",
        "ceil_mode", "depthwise", "activation", "batch_norm", "repeat", "name", "of",
        "reduction", "hidden", "mode", "scale", "connections", "when", "kind", "bogus"]

HOSTILE_STRINGS = [
    "((10**64)**64)**64", "(C**64)**8", "9" * 30, "2**63", "10**18", "-1", "0", "C // 0",
    "ceil_div(3)", "ceil_div(3, 0)", "max()", "__import__('os').system('true')",
    "C.__class__", "open('x')", "lambda: 1", "[1] * 10**9", "1e999", "1.5", "nan",
    "'a' * 10", "C if C else 1", "not C", "C > 2 and C < 100", "make_divisible(C*1.1, 8)",
    "+".join(["1"] * 600), "(" * 40 + "1" + ")" * 40, "[/]", "[link=http://x]y[/link]",
    "\x1b[31mred", 'a"""\nimport os\n"""', "\\N{BULLET}", "a.b", "c/d", "", " ", "forward",
    "x" * 80, "é", "C", "2*C", "C//4", "?",
]

# integers as a hostile user writes them: small, boundary, negative, huge
integers = st.one_of(st.integers(-3, 70), st.sampled_from([0, 1, 2**31, 2**63 - 1, -2**63,
                                                           10**18, 10**19]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([0.0, 0.5, 1.1, -0.5, math.inf, math.nan]))
names = st.one_of(st.sampled_from(["a", "b", "c", "conv1", "relu1", "add", "shortcut", "b1",
                                   "concat", "x_1", "1x1"]),
                  st.sampled_from(HOSTILE_STRINGS))
expressions = st.one_of(st.sampled_from(HOSTILE_STRINGS),
                        st.builds(lambda a, op, b: f"{a}{op}{b}",
                                  st.sampled_from(["C", "2", "C*C", "(C+1)", "10**9", "D"]),
                                  st.sampled_from(["+", "-", "*", "//", "/", "%", "**", " if 1 else ",
                                                   " and ", " < "]),
                                  st.sampled_from(["C", "2", "0", "64", "3", "D"])))
scalars = st.one_of(integers, floats, st.booleans(), expressions, names)


def values(depth: int = 2):
    if depth <= 0:
        return scalars
    return st.one_of(scalars, st.lists(values(depth - 1), max_size=4),
                     st.dictionaries(st.sampled_from(ARGS), values(depth - 1), max_size=3))


@st.composite
def layers(draw, depth: int = 0):
    """A layer table: a known or misspelled kind with random arguments, or
    (less often) a structure or block call nesting more layers."""
    roll = draw(st.integers(0, 9))
    if roll == 0 and depth < 3:
        key = draw(st.sampled_from(["residual", "concat", "scale", "dense", "layers"]))
        if key == "concat":
            body = draw(st.lists(st.lists(layers(depth + 1), max_size=3), max_size=3))
        else:
            body = draw(st.lists(layers(depth + 1), max_size=3))
        table = {key: body}
        if draw(st.booleans()):
            table["shortcut"] = draw(st.one_of(st.sampled_from(["auto", "identity", "pad",
                                                                "projection", "bad"]),
                                               st.lists(layers(depth + 1), max_size=2)))
    elif roll == 1:
        table = {"block": draw(st.sampled_from(["unit", "loop", "nope", 3])),
                 "with": draw(st.dictionaries(st.sampled_from(["C", "S", "Z"]), scalars,
                                              max_size=2))}
    else:
        kind = draw(st.sampled_from(KINDS))
        table = {kind: draw(st.one_of(st.just(True), scalars, st.integers(1, 16)))}
        table.update(draw(st.dictionaries(st.sampled_from(ARGS), values(1), max_size=3)))
    if draw(st.integers(0, 4)) == 0:
        table["repeat"] = draw(st.one_of(integers, expressions))
    if draw(st.integers(0, 3)) == 0:
        table["name"] = draw(names)
    return table


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
            .replace("\x1b", "\\u001b") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(i)}" for k, i in v.items()) + "}"
    raise TypeError(type(v))


def _key(k) -> str:
    k = str(k)
    return k if k.replace("_", "").isalnum() and k.isascii() else toml_value(k)


@st.composite
def valid_layers(draw, depth: int = 0):
    """Layers that keep a 3 x 16 x 16 input analyzable (shape-preserving convs
    and activations, a residual or a concat now and then)."""
    roll = draw(st.integers(0, 7))
    if roll == 0 and depth < 2:
        return {"residual": draw(st.lists(valid_layers(depth + 1), min_size=1, max_size=2))}
    if roll == 1 and depth < 2:
        return {"concat": draw(st.lists(st.lists(valid_layers(depth + 1), min_size=1,
                                                 max_size=2), min_size=2, max_size=3))}
    if roll <= 4:
        return {"conv": draw(st.one_of(st.integers(1, 8), st.just("C"))), "kernel": 3,
                "padding": 1, **draw(st.fixed_dictionaries({}, optional={
                    "activation": st.sampled_from(["relu", "tanh"]),
                    "batch_norm": st.booleans(), "repeat": st.integers(0, 3),
                    "when": st.sampled_from(["C > 2", "true", "C < 2"])}))}
    return {draw(st.sampled_from(["relu", "sigmoid", "dropout", "batch_norm"])): True}


@st.composite
def documents(draw):
    """A valid spec, a hostile one, or a valid one with one part made hostile."""
    how = draw(st.integers(0, 2))
    if how == 2:
        return draw(hostile_documents())
    doc = {"model": {"name": "fuzz", "input": [3, 16, 16]},
           "vars": {"C": draw(st.sampled_from([4, "?", "2*2", 1.5, 0]))},
           "layers": draw(st.lists(valid_layers(), min_size=1, max_size=5))}
    if how == 1:  # one place made hostile
        target = draw(st.sampled_from(["model", "vars", "layer", "arg"]))
        if target == "model":
            doc["model"][draw(st.sampled_from(["name", "input", "notes", "source"]))] = \
                draw(values(1))
        elif target == "vars":
            doc["vars"][draw(st.sampled_from(["C", "D"]))] = draw(scalars)
        elif target == "layer":
            doc["layers"].insert(draw(st.integers(0, len(doc["layers"]))), draw(layers()))
        else:
            layer = doc["layers"][draw(st.integers(0, len(doc["layers"]) - 1))]
            layer[draw(st.sampled_from(ARGS))] = draw(values(1))
    return render(doc)


@st.composite
def hostile_documents(draw):
    """A spec as a dict of top-level tables, every part drawn from hostile values."""
    model = {"name": draw(st.one_of(names, st.integers())),
             "input": draw(st.one_of(st.just([3, 16, 16]), st.just([8]),
                                     st.lists(st.one_of(integers, expressions), max_size=4),
                                     scalars))}
    if draw(st.booleans()):
        model["notes"] = draw(st.one_of(names, st.lists(names, max_size=2), integers))
    if draw(st.integers(0, 5)) == 0:
        model["source"] = draw(scalars)
    doc = {"model": model}
    if draw(st.booleans()):
        doc["vars"] = draw(st.dictionaries(st.sampled_from(["C", "D", "S", "Z", "bad name"]),
                                           st.one_of(integers, floats, expressions,
                                                     st.just("?")), max_size=3))
    if draw(st.integers(0, 3)) == 0:
        doc["blocks"] = draw(st.dictionaries(
            st.sampled_from(["unit", "loop"]),
            st.one_of(st.fixed_dictionaries({"args": st.just(["C", "S=1"]),
                                             "residual": st.lists(layers(1), max_size=3)}),
                      st.fixed_dictionaries({"layers": st.just([{"block": "loop"}])}),
                      scalars), max_size=2))
    if draw(st.integers(0, 5)) == 0:
        doc["defaults"] = draw(st.dictionaries(st.sampled_from(["conv", "relu", "nope"]),
                                               st.dictionaries(st.sampled_from(ARGS), scalars,
                                                               max_size=2), max_size=2))
    doc["layers"] = draw(st.lists(layers(), min_size=0, max_size=6))
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["extra", "include", "layers"]))] = draw(values(1))
    return render(doc)


def render(doc: dict) -> str:
    lines = []
    for key, value in doc.items():
        if key in ("model", "vars") and isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{_key(k)} = {toml_value(v)}" for k, v in value.items()]
        elif key in ("blocks", "defaults") and isinstance(value, dict):
            for name, table in value.items():
                if isinstance(table, dict):
                    lines.append(f"[{key}.{_key(name)}]")
                    lines += [f"{_key(k)} = {toml_value(v)}" for k, v in table.items()]
                else:
                    lines += [f"[{key}]", f"{_key(name)} = {toml_value(table)}"]
    # top-level keys must come before any [table] header
    top = [f"{_key(k)} = {toml_value(v)}" for k, v in doc.items()
           if k not in ("model", "vars", "blocks", "defaults")]
    return "\n".join(top + lines) + "\n"


@st.composite
def corrupted_texts(draw):
    """A document's text with raw damage: a cut, an inserted fragment, a
    deep nesting, or a fragment repeated."""
    text = draw(documents())
    how = draw(st.integers(0, 3))
    at = draw(st.integers(0, len(text)))
    if how == 0:
        return text[:at]
    if how == 1:
        piece = draw(st.sampled_from(["[", "]", "{", "}", '"', "'", "\n[[layers]]\n", "=", "#",
                                      '"""', "\\u0000", "\x00", "\x1b", "[" * 300,
                                      "a = [" * 50]))
        return text[:at] + piece + text[at:]
    if how == 2:
        depth = draw(st.sampled_from([10, 33, 100, 1000]))
        return text + "\n[vars]\nZ = " + "[" * depth + "]" * depth + "\n"
    return text[:at] + text[at:at + 20] * draw(st.integers(2, 50)) + text[at:]
