"""The kinds the lectures' later systems need, against torch on random
configurations: `reshape` (YOLO's 7 x 7 x 30 output), `spp` (spatial pyramid
pooling, the PReLU-nets' head) and `multiply` (Inception-ResNet's residual
scaling, FractalNet's mean join). Each compares the output shape, the values
with an independent torch reference, params, FlopCounterMode on the meta
device (= 2 x MACs), the forward bytes and the bytes autograd saves (exactly,
as `check` measures them), and refusals (torch raises <=> the engine raises).
Every failure prints the spec that reproduces it."""
import math
from fractions import Fraction

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.graph import build_graph
from archcalc.spec.loader import loads
from strategies import network_text

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

EXAMPLES = 25


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def measured(text, batch):
    """Build the spec and measure it as `check` does: forward bytes of the
    rows' distinct storages, saved-for-backward bytes, FlopCounterMode on meta."""
    from archcalc.torch.measure import measure
    spec = loads(text)
    report = analyze(spec, batch=batch)
    model = spec.build()
    rows = dict(model.rows)
    m = measure(model, report, batch=batch)
    m.rows = rows
    return report, m


def agree(report, m, batch):
    t = report.totals
    assert m.total_params == t["params"]
    assert m.flop_counter_total == 2 * t["macs"] * batch
    assert m.forward_activation_bytes == t["activation_bytes"]
    assert m.saved_bytes == t["saved_activation_bytes"]
    for row in report.rows[1:]:
        if row.name in m.rows:
            assert m.shapes[m.rows[row.name]] == tuple(row.output_shape), row.name


def copy_conv(model, conv):
    """The spec's first conv (a 1x1 that puts the input in the autograd graph)."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.load_state_dict(conv.state_dict())


# -- reshape ------------------------------------------------------------------


def factorizations(n, parts):
    if parts == 1:
        return [(n,)]
    out = []
    for d in range(1, n + 1):
        if n % d == 0:
            out += [(d, *rest) for rest in factorizations(n // d, parts - 1)]
    return out


@st.composite
def reshapes(draw):
    c, h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    out = draw(st.integers(1, 8))
    total = out * h * w
    parts = draw(st.integers(1, 3))
    if draw(st.integers(0, 4)) == 0:   # a wrong count now and then
        shape = [draw(st.integers(1, 12)) for _ in range(parts)]
    else:
        shape = list(draw(st.sampled_from(factorizations(total, parts))))
    if draw(st.booleans()):
        shape[draw(st.integers(0, parts - 1))] = -1
    return (c, h, w), out, shape


@settings(max_examples=EXAMPLES, deadline=None)
@given(reshapes(), st.integers(1, 2))
def test_reshape_agrees_with_torch(case, batch):
    (c, h, w), out, shape = case
    text = network_text((c, h, w), [{"conv": out, "kernel": 1}, {"reshape": shape}])
    note("repro spec:\n" + text)
    conv = nn.Conv2d(c, out, 1)
    x = torch.randn(batch, c, h, w)
    try:
        expected = conv(x).reshape(batch, *shape)
        torch_error = None
    except RuntimeError as e:
        torch_error = str(e)
    try:
        report, m = measured(text, batch)
        engine_error = None
    except SpecError as e:
        engine_error = str(e)
    note(f"engine error: {engine_error}; torch error: {torch_error}")
    assert (engine_error is None) == (torch_error is None)
    if torch_error:
        return
    agree(report, m, batch)
    assert tuple(report.rows[-1].output_shape) == tuple(expected.shape[1:])
    assert report.rows[-1].allocates is False and report.rows[-1].flops == 0
    model = loads(text).build().eval()
    copy_conv(model, conv)
    with torch.no_grad():
        assert torch.equal(model(x), expected.detach())


def test_reshape_refuses_with_the_counts():
    text = network_text((4, 3, 3), [{"reshape": [5, 7]}])
    with pytest.raises(SpecError, match=r"36 elements\) to \[5, 7\] \(35 elements\)"):
        analyze(loads(text))
    with pytest.raises(SpecError, match="not a multiple of 5"):
        analyze(loads(network_text((4, 3, 3), [{"reshape": [5, -1]}])))
    with pytest.raises(SpecError, match="only one size may be -1"):
        build_graph(loads(network_text((4, 3, 3), [{"reshape": [-1, -1]}])))
    with pytest.raises(SpecError, match="one to three sizes"):
        build_graph(loads(network_text((4, 3, 3), [{"reshape": [1, 2, 2, 9]}])))


def test_yolo_head_is_a_view_of_the_last_fc():
    text = network_text((8, 2, 2), [{"fc": 1470}, {"reshape": [30, 7, 7]}])
    report = analyze(loads(text))
    assert report.rows[-1].output_shape == (30, 7, 7)
    model = loads(text).build().eval()
    x = torch.randn(2, 8, 2, 2)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 30, 7, 7)


# -- spatial pyramid pooling ----------------------------------------------------


def spp_reference(x, levels, mode):
    """Bins as PyTorch's adaptive windows [floor(i*N/n), ceil((i+1)*N/n)),
    pooled one by one: independent of the module under test."""
    b, c, h, w = x.shape
    feats = []
    for n in levels:
        rows = [(i * h // n, -(-(i + 1) * h // n)) for i in range(n)]
        cols = [(j * w // n, -(-(j + 1) * w // n)) for j in range(n)]
        grid = torch.empty(b, c, n, n)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                patch = x[:, :, r0:r1, c0:c1].reshape(b, c, -1)
                grid[:, :, i, j] = patch.amax(2) if mode == "max" else patch.mean(2)
        feats.append(grid.reshape(b, -1))
    return torch.cat(feats, 1)


@st.composite
def spps(draw):
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    out = draw(st.integers(1, 6))
    levels = draw(st.lists(st.integers(1, 8), min_size=1, max_size=4, unique=True))
    return (c, h, w), out, levels, draw(st.sampled_from(["max", "avg"]))


@settings(max_examples=EXAMPLES, deadline=None)
@given(spps(), st.integers(1, 2))
def test_spp_agrees_with_torch(case, batch):
    (c, h, w), out, levels, mode = case
    layers = [{"conv": out, "kernel": 1}, {"spp": levels, "mode": mode}]
    text = network_text((c, h, w), layers)
    note("repro spec:\n" + text)
    report, m = measured(text, batch)
    agree(report, m, batch)
    assert report.rows[-1].output_shape == (out * sum(n * n for n in levels),)
    # FLOPs: per level as the adaptive pool of that mode
    x = report.rows[1].output_shape
    covered = [out * sum(e - s for s, e in [(i * h // n, -(-(i + 1) * h // n)) for i in range(n)])
               * sum(e - s for s, e in [(j * w // n, -(-(j + 1) * w // n)) for j in range(n)])
               for n in levels]
    expected_flops = sum(cv - (out * n * n if mode == "max" else 0)
                         for cv, n in zip(covered, levels))
    assert report.rows[-1].flops == expected_flops and x == (out, h, w)
    conv = nn.Conv2d(c, out, 1)
    model = loads(text).build().eval()
    copy_conv(model, conv)
    inp = torch.randn(batch, c, h, w)
    with torch.no_grad():
        assert torch.allclose(model(inp), spp_reference(conv(inp), levels, mode), atol=1e-6)


def test_prelu_net_pyramid_63_bins():
    text = network_text((512, 14, 14), [{"spp": [7, 3, 2, 1]}])
    report = analyze(loads(text))
    assert report.rows[-1].output_shape == (512 * 63,)
    assert report.rows[-1].params == 0 and report.rows[-1].macs == 0
    # PyTorch's windows always cover the map; SPP-net's (ceil(14/3) = 5 at
    # stride floor(14/3) = 4) would stop at row 12
    from archcalc.layers.pool import adaptive_windows
    assert adaptive_windows(14, 3) == [(0, 5), (4, 10), (9, 14)]


def test_spp_warns_when_bins_outnumber_the_rows():
    report = analyze(loads(network_text((8, 4, 4), [{"spp": [7, 2, 1]}])))
    assert any("more bins per side" in str(f) for f in report.findings)


# -- multiply -----------------------------------------------------------------


@st.composite
def multiplies(draw):
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    by = draw(st.one_of(st.sampled_from([0.17, 0.1, 0.2, 2, -1.5]),
                        st.sampled_from(["1/2", "1/3", "2/7"])))
    before = draw(st.sampled_from(["conv", "relu", "sigmoid", "residual_first", "residual_last"]))
    inplace = draw(st.booleans())
    return (c, h, w), by, before, inplace


def multiply_layers(c, by, before, inplace):
    mul = {"multiply": by, "inplace": inplace}
    conv = {"conv": c, "kernel": 1}
    if before == "conv":
        return [conv, mul]
    if before in ("relu", "sigmoid"):
        return [conv, {before: True}, mul]
    if before == "residual_first":   # its input is the shortcut too: never in place
        return [conv, {"residual": [mul, {"conv": c, "kernel": 1}], "activation": "relu"}]
    return [conv, {"residual": [{"conv": c, "kernel": 1}, mul], "activation": "relu"}]


@settings(max_examples=EXAMPLES, deadline=None)
@given(multiplies(), st.integers(1, 2))
def test_multiply_agrees_with_torch(case, batch):
    (c, h, w), by, before, inplace = case
    text = network_text((c, h, w), multiply_layers(c, by, before, inplace))
    note("repro spec:\n" + text)
    report, m = measured(text, batch)
    agree(report, m, batch)
    factor = float(Fraction(by)) if isinstance(by, str) else float(by)
    row = next(r for r in report.rows if r.type == "multiply")
    assert row.params == 0 and row.macs == 0 and row.flops == math.prod(row.output_shape)
    model = loads(text).build().eval()
    x = torch.randn(batch, c, h, w)
    convs = [mod for mod in model.modules() if isinstance(mod, nn.Conv2d)]
    with torch.no_grad():
        y = convs[0](x)
        if before in ("relu", "sigmoid"):
            y = getattr(torch, before)(y)
        if before == "conv" or before in ("relu", "sigmoid"):
            expected = y * factor
        elif before == "residual_first":
            expected = torch.relu(convs[1](y * factor) + y)
        else:
            expected = torch.relu(convs[1](y) * factor + y)
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_multiply_reads_numbers_fractions_and_expressions():
    def factor(by, vars_=""):
        text = f'{vars_}[model]\nname = "m"\ninput = [2, 3, 3]\nlayers = [{{multiply = {by}}}]\n'
        return build_graph(loads(text)).body.items[0].ops[0].args.by
    assert factor("0.17") == 0.17
    assert factor('"1/3"') == 1 / 3
    assert factor('"1.0/C"', "[vars]\nC = 4\n") == 0.25
    for bad in ('"1/0"', "true", '"x"', '"nan"'):
        with pytest.raises(SpecError):
            factor(bad)


# -- export -------------------------------------------------------------------

EXPORTED = """
[model]
name = "lecture kinds"
input = [3, 12, 12]
layers = [
  {name = "conv1", conv = 8, kernel = 3, padding = 1, activation = "relu"},
  {name = "res", activation = "relu", residual = [
    {name = "conv", conv = 8, kernel = 1}, {name = "scale", multiply = 0.17}]},
  {name = "first", residual = [
    {name = "halve", multiply = "1/2"}, {name = "conv", conv = 8, kernel = 1}]},
  {name = "spp", spp = [3, 2, 1]},
  {name = "fc", fc = 30},
  {name = "grid", reshape = [30, 1, 1]},
]
"""


def test_export_python_writes_the_lecture_kinds(tmp_path):
    """The exported file rebuilds multiply (in place only where the build ran it
    in place), reshape and spp, and computes the same function."""
    import importlib.util

    from archcalc.torch.export import to_python
    compiled = loads(EXPORTED).build().eval()
    source = to_python(compiled)
    # after a conv it runs in place; as a residual body's first op, whose input
    # the shortcut still reads, it does not
    assert "Multiply(0.17, True)" in source and "Multiply(0.5, False)" in source
    path = tmp_path / "m.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("exported_lecture_kinds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.LectureKinds().eval()
    model.load_state_dict(compiled.state_dict(), strict=True)   # export keeps the keys
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(model(x), compiled(x), atol=1e-6)
    assert tuple(model(x).shape) == (2, 30, 1, 1)


# -- DropConnect --------------------------------------------------------------


@st.composite
def dropconnects(draw):
    shape = draw(st.one_of(st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
                           st.tuples(st.integers(1, 12)),
                           st.tuples(st.integers(1, 4), st.integers(1, 6))))   # tokens
    out = draw(st.integers(1, 8))
    p = draw(st.sampled_from([0.0, 0.2, 0.5, 0.9]))
    before = draw(st.booleans()) and len(shape) == 3      # a conv first: x needs a gradient
    bias = draw(st.booleans())
    return shape, out, p, before, bias


@settings(max_examples=EXAMPLES, deadline=None)
@given(dropconnects(), st.integers(1, 3))
def test_dropconnect_agrees_with_torch(case, batch):
    shape, out, p, before, bias = case
    layers = ([{"conv": shape[0], "kernel": 1}] if before else []) + \
        [{"dropconnect": out, "p": p, "bias": bias}]
    if len(shape) == 2:
        layers = [{"conv": shape[1], "kernel": 1}, {"tokens": True}] + layers[-1:]
        text = network_text((shape[1], shape[0], 1), layers)
    else:
        text = network_text(shape, layers)
    note("repro spec:\n" + text)
    report, m = measured(text, batch)     # a training-mode step, as `check` measures it
    agree(report, m, batch)
    row = report.rows[-1]
    fc = analyze(loads(text.replace("dropconnect = ", "fc = ").replace(f", p = {p}", "")),
                 batch=batch).rows[-1]
    assert (row.params, row.macs, row.flops) == (fc.params, fc.macs, fc.flops)

    model = loads(text).build()
    linear = next(mod for mod in model.modules() if isinstance(mod, nn.Linear))
    x = torch.randn(batch, *report.model.input)
    with torch.no_grad():                 # inference: the fc layer
        model.eval()
        y = model(x)
        model.train()
    # training: W * mask / (1 - p) with the module's own mask, gradients included
    torch.manual_seed(7)
    model.zero_grad()
    model(x).square().sum().backward()
    grads = [q.grad.clone() for q in model.parameters()]
    torch.manual_seed(7)
    mask = torch.empty_like(linear.weight, dtype=torch.bool).bernoulli_(1 - p)
    w = linear.weight * mask / (1 - p) if p else linear.weight
    original = linear.forward
    linear.forward = lambda t: F.linear(t, w, linear.bias)
    model.zero_grad()
    model(x).square().sum().backward()
    linear.forward = original
    for g, q in zip(grads, model.parameters()):
        assert torch.allclose(g, q.grad, atol=1e-5)
    with torch.no_grad():
        model.eval()
        assert torch.allclose(model(x), y)


def test_dropconnect_drops_weights_not_units():
    layer = loads(network_text((64,), [{"dropconnect": 64, "p": 0.5}])).build()
    linear = next(mod for mod in layer.modules() if isinstance(mod, nn.Linear))
    torch.manual_seed(0)
    mask = torch.empty_like(linear.weight, dtype=torch.bool).bernoulli_(0.5)
    assert 0.45 < mask.float().mean().item() < 0.55
    # every output unit keeps some of its weights: not dropout of whole units
    assert mask.any(1).all()
    with pytest.raises(SpecError, match="p must be below 1"):
        analyze(loads(network_text((8,), [{"dropconnect": 4, "p": 1.0}])))
