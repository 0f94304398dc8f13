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


# -- issue 10: modern building blocks -------------------------------------------

chw_or_features = st.one_of(
    st.tuples(st.integers(1, 8), st.integers(1, 9), st.integers(1, 9)),
    st.tuples(st.integers(1, 16)))
MODERN_ACTIVATIONS = ("relu6", "hardswish", "hardsigmoid", "silu", "swish", "mish", "gelu")


@st.composite
def modern_activation_layers(draw):
    kind = draw(st.sampled_from(MODERN_ACTIVATIONS))
    layer = {kind: True}
    if kind == "gelu":
        layer["approximate"] = draw(st.sampled_from(["none", "tanh"]))
    return draw(chw_or_features), layer


@st.composite
def layer_norm_layers(draw):
    layer = {"layer_norm": True, "affine": draw(st.booleans())}
    if draw(st.booleans()):
        layer["bias"] = draw(st.booleans())
    if draw(st.booleans()):
        layer["eps"] = draw(st.sampled_from([1e-6, 1e-5, 1e-3]))
    return draw(chw_or_features), layer


@st.composite
def group_norm_layers(draw):
    groups = draw(st.integers(1, 6))
    # mostly a multiple of groups; sometimes not (PyTorch refuses)
    c = groups * draw(st.integers(1, 3)) + draw(st.sampled_from([0, 0, 0, 1]))
    shape = draw(st.one_of(st.tuples(st.just(c), st.integers(1, 6), st.integers(1, 6)),
                           st.tuples(st.just(c))))
    return shape, {"group_norm": groups, "affine": draw(st.booleans())}


@st.composite
def instance_norm_layers(draw):
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return shape, {"instance_norm": True, "affine": draw(st.booleans()),
                   "track_running_stats": draw(st.booleans())}


@st.composite
def layer_scale_layers(draw):
    return draw(chw_or_features), {"layer_scale": draw(st.sampled_from([1e-6, 0.1, 1.0]))}


@st.composite
def drop_path_layers(draw):
    return draw(chw_or_features), {"drop_path": draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
                                   "mode": draw(st.sampled_from(["row", "batch"]))}


@st.composite
def channel_shuffle_layers(draw):
    groups = draw(st.integers(1, 4))
    c = groups * draw(st.integers(1, 4)) + draw(st.sampled_from([0, 0, 0, 1]))
    return (c, draw(st.integers(1, 6)), draw(st.integers(1, 6))), {"channel_shuffle": groups}


SE_ACTIVATIONS = ("relu", "silu", "hardswish", "relu6", "gelu", "tanh")


@st.composite
def se_layers(draw):
    c = draw(st.integers(1, 48))
    layer = {"se": True}
    if draw(st.booleans()):
        layer["squeeze"] = draw(st.integers(1, 16))
    else:
        layer["reduction"] = draw(st.integers(1, 16))
    layer["activation"] = draw(st.sampled_from(SE_ACTIVATIONS))
    layer["gate"] = draw(st.sampled_from(["sigmoid", "hardsigmoid"]))
    return (c, draw(st.integers(1, 7)), draw(st.integers(1, 7))), layer


adaptive_size = st.one_of(st.integers(1, 8), st.just("none"),
                          st.tuples(st.one_of(st.integers(1, 8), st.just("none")),
                                    st.one_of(st.integers(1, 8), st.just("none"))))


@st.composite
def modern_pool_layers(draw):
    """max pool with dilation, avg pool with divisor_override, LP pool, adaptive
    average and max pools with "none" in their size."""
    kind = draw(st.sampled_from(["maxpool", "avgpool", "lp_pool", "adaptive_avgpool",
                                 "adaptive_maxpool"]))
    shape = (draw(st.integers(1, 4)), draw(sizes), draw(sizes))
    if kind.startswith("adaptive"):
        return shape, {kind: draw(adaptive_size)}
    layer = {kind: draw(pairs(1, 5))}
    if draw(st.booleans()):
        layer["stride"] = draw(pairs(1, 4))
    layer["ceil_mode"] = draw(st.booleans())
    if kind == "maxpool":
        layer["padding"] = draw(pairs(0, 2))
        layer["dilation"] = draw(pairs(1, 3))
    elif kind == "avgpool":
        layer["padding"] = draw(pairs(0, 2))
        layer["divisor_override"] = draw(st.integers(1, 9))
    else:
        layer["norm_type"] = draw(st.sampled_from([1.0, 2.0, 3.0, 0.5]))
    return shape, layer


@st.composite
def padded_conv_layers(draw):
    """A conv with a padding_mode other than zeros (small inputs: reflect and
    circular refuse paddings larger than the input)."""
    cin = draw(st.integers(1, 4))
    layer = {"conv": draw(st.integers(1, 4)), "kernel": draw(pairs(1, 5))}
    padding = draw(st.one_of(pairs(0, 4), st.sampled_from(["same", "valid"])))
    if padding != "same":
        layer["stride"] = draw(pairs(1, 3))
        layer["dilation"] = draw(pairs(1, 2))
    layer["padding"] = padding
    layer["padding_mode"] = draw(st.sampled_from(["zeros", "reflect", "replicate",
                                                  "circular"]))
    layer["bias"] = draw(st.booleans())
    return (cin, draw(st.integers(1, 8)), draw(st.integers(1, 8))), layer


@st.composite
def split_layers(draw):
    """(input shape, split layer, branch specs): each branch empty (identity), a
    1x1 conv, a relu, or conv 3x3 + batch norm + relu; sizes sometimes off."""
    n = draw(st.integers(2, 3))
    sizes_ = [draw(st.integers(1, 5)) for _ in range(n)]
    c = sum(sizes_)
    if draw(st.integers(0, 5)) == 0:  # sizes that do not add up to C: refused
        c += draw(st.sampled_from([-1, 1])) if c > 1 else 1
    branches = [draw(st.sampled_from(["empty", "conv1", "relu", "conv3"])) for _ in range(n)]
    outs = [draw(st.integers(1, 5)) for _ in range(n)]
    spec_branches = []
    for kind, out in zip(branches, outs):
        spec_branches.append({
            "empty": [], "relu": [{"relu": True}],
            "conv1": [{"conv": out, "kernel": 1}],
            "conv3": [{"conv": out, "kernel": 3, "padding": 1, "batch_norm": True,
                       "activation": "relu"}],
        }[kind])
    layer = {"name": "s", "split": spec_branches, "sizes": sizes_}
    return (c, draw(st.integers(2, 7)), draw(st.integers(2, 7))), layer, list(zip(branches, outs))


ALL_ACTIVATIONS = ("relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus", "gelu", "relu6",
                   "hardswish", "hardsigmoid", "silu", "mish")


@st.composite
def activation_chains(draw):
    """conv rows with fused activations, then bare activation rows, a residual
    with a post activation and a flatten, in random order: in-place ops next to
    ops that keep their output for backward."""
    act = lambda: draw(st.sampled_from(ALL_ACTIVATIONS))  # noqa: E731
    layers = [{"conv": 4, "kernel": 3, "padding": 1, "activation": act()}]
    for _ in range(draw(st.integers(1, 5))):
        choice = draw(st.sampled_from(["act", "act", "conv", "residual"]))
        if choice == "act":
            layers.append({act(): True})
        elif choice == "conv":
            layers.append({"conv": 4, "kernel": 1, "batch_norm": draw(st.booleans()),
                           "activation": act()})
        else:
            layers.append({"name": f"r{len(layers)}", "residual": [
                {"conv": 4, "kernel": 1, "activation": act()}, {act(): True}],
                "activation": act()})
    if draw(st.booleans()):
        layers += [{"flatten": True}, {act(): True}]
    layers.append({"fc": 3})
    return (3, 6, 6), layers
