"""Hypothesis strategies for random layer configurations, apart from the
assertions (array-api-tests style). Each config renders to a spec text that
reproduces it: a failing example prints it, ready to paste into a file."""
from __future__ import annotations

from hypothesis import strategies as st

sizes = st.integers(1, 40)
pairs = lambda lo, hi: st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi),  # noqa: E731
                                                                st.integers(lo, hi)))


def as_pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(toml_value(i) for i in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def spec_text(input_shape, layers) -> str:
    """A complete spec, one inline table per layer."""
    rows = ",\n".join("  {" + ", ".join(f"{k} = {toml_value(v)}" for k, v in layer.items()) + "}"
                      for layer in layers)
    return (f'[model]\nname = "hypothesis"\ninput = {toml_value(list(input_shape))}\n'
            f"layers = [\n{rows},\n]\n")


@st.composite
def conv_layers(draw):
    """A conv layer and its input: groups, dilation, asymmetric kernels, padding modes."""
    groups = draw(st.integers(1, 4))
    cin = groups * draw(st.integers(1, 3))
    layer = {"conv": groups * draw(st.integers(1, 3)), "kernel": draw(pairs(1, 7))}
    padding = draw(st.one_of(pairs(0, 3), st.sampled_from(["same", "valid"])))
    if padding != "same":
        layer["stride"] = draw(pairs(1, 4))
    layer["padding"] = padding
    layer["dilation"] = draw(pairs(1, 3))
    if groups > 1:
        layer["groups"] = groups
    layer["bias"] = draw(st.booleans())
    return (cin, draw(sizes), draw(sizes)), layer


@st.composite
def pool_layers(draw):
    kind = draw(st.sampled_from(["maxpool", "avgpool"]))
    layer = {kind: draw(pairs(1, 6))}
    if draw(st.booleans()):
        layer["stride"] = draw(pairs(1, 4))
    layer["padding"] = draw(pairs(0, 3))
    layer["ceil_mode"] = draw(st.booleans())
    return (draw(st.integers(1, 4)), draw(sizes), draw(sizes)), layer


@st.composite
def fc_layers(draw):
    shape = draw(st.one_of(st.tuples(st.integers(1, 64)),
                           st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 8))))
    return shape, {"fc": draw(st.integers(1, 64)), "bias": draw(st.booleans())}


@st.composite
def conv_transpose_layers(draw):
    groups = draw(st.integers(1, 3))
    layer = {"conv_transpose": groups * draw(st.integers(1, 3)), "kernel": draw(pairs(1, 6)),
             "stride": draw(pairs(1, 4)), "padding": draw(pairs(0, 3)),
             "dilation": draw(pairs(1, 3)), "output_padding": draw(pairs(0, 2)),
             "bias": draw(st.booleans())}
    if groups > 1:
        layer["groups"] = groups
    return (groups * draw(st.integers(1, 3)), draw(st.integers(1, 16)),
            draw(st.integers(1, 16))), layer


@st.composite
def adaptive_pool_layers(draw):
    return ((draw(st.integers(1, 4)), draw(sizes), draw(sizes)),
            {"adaptive_avgpool": draw(pairs(1, 12))})


# -- small random networks: stacks, and single residual or concat blocks ------

def _conv(draw, channels):
    k = draw(st.sampled_from([1, 3, 5]))
    return {"conv": channels, "kernel": k, "padding": k // 2,
            "batch_norm": draw(st.booleans()),
            "activation": draw(st.sampled_from(["relu", "tanh", "leaky_relu", "gelu"]))}


@st.composite
def small_networks(draw):
    """(input shape, layers): a conv stack with one structure in the middle."""
    c = draw(st.integers(1, 4))
    size = draw(st.integers(8, 20))
    layers = [_conv(draw, draw(st.integers(2, 8))) for _ in range(draw(st.integers(1, 3)))]
    kind = draw(st.sampled_from(["residual", "concat", "dense", "scale", "none"]))
    width = draw(st.integers(2, 8))
    if kind == "residual":
        body = [_conv(draw, width), {**_conv(draw, width), "activation": False}]
        layers.append({"name": "res", "residual": body,
                       "shortcut": draw(st.sampled_from(["auto", "projection"])),
                       "activation": "relu"})
    elif kind == "concat":
        layers.append({"name": "mix", "concat": [
            [_conv(draw, width)],
            [_conv(draw, width), _conv(draw, draw(st.integers(2, 8)))],
            [{"maxpool": 3, "stride": 1, "padding": 1}],
        ]})
    elif kind == "dense":
        layers.append({"name": "dense", "dense": [{"batch_norm": True}, {"relu": True},
                                                  _conv(draw, width)]})
    elif kind == "scale":
        layers.append({"name": "gate", "se": draw(st.integers(1, 2))})
    if draw(st.booleans()):
        layers.append({"maxpool": 2})
    layers.append({"global_avgpool": True})
    layers.append({"fc": draw(st.integers(2, 10))})
    return (c, size, size), layers


def toml_inline(v) -> str:
    """Like toml_value, for nested tables and arrays of tables."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_inline(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_inline(x) for x in v) + "]"
    return toml_value(v)


def network_text(shape, layers) -> str:
    rows = ",\n".join("  " + toml_inline(layer) for layer in layers)
    return (f'[model]\nname = "random"\ninput = {toml_value(list(shape))}\n'
            f"layers = [\n{rows},\n]\n")
