"""Tokens and attention against real torch modules on random configurations:
output shape, params, FlopCounterMode on the meta device (= 2 x MACs), the
bytes autograd saves in a training step, refusals (torch raises <=> the
engine raises), and the same function as torchvision's ViT encoder block
with its weights copied in. Every failure prints the spec that reproduces it."""
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.spec.loader import loads
from strategies import network_text

torch = pytest.importorskip("torch")
nn = torch.nn
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.torch.measure import SavedBytes  # noqa: E402

EXAMPLES = 30


class Reference(nn.Module):
    """patch conv -> tokens -> [class token] -> [position embedding] -> body."""

    def __init__(self, c, d, k, n, cls, pos, body):
        super().__init__()
        self.conv = nn.Conv2d(c, d, k, k)
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if cls else None
        self.pos = nn.Parameter(torch.zeros(1, n, d)) if pos else None
        self.body = body

    def forward(self, x):
        x = self.conv(x).flatten(2).permute(0, 2, 1)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        if self.pos is not None:
            x = x + self.pos
        return self.body(x)


class MHA(nn.Module):
    def __init__(self, d, heads, bias):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, bias=bias, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class First(nn.Module):
    def forward(self, x):
        return x[:, 0]


class Mean(nn.Module):
    def forward(self, x):
        return x.mean(1)


@st.composite
def token_nets(draw):
    """(input shape, spec layers, reference module factory)."""
    c, k = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = k * draw(st.integers(1, 4)), k * draw(st.integers(1, 4))
    heads = draw(st.integers(1, 4))
    d = heads * draw(st.integers(1, 4)) + draw(st.sampled_from([0, 0, 0, 1]))  # may not divide
    cls, pos = draw(st.booleans()), draw(st.booleans())
    n = (h // k) * (w // k) + cls
    body = draw(st.lists(st.sampled_from(["attention", "layer_norm", "fc", "gelu"]),
                         min_size=1, max_size=3))
    bias = draw(st.booleans())
    out = draw(st.integers(1, 6))
    pool = draw(st.sampled_from([None, "first", "mean"]))
    layers = [{"conv": d, "kernel": k, "stride": k}, {"tokens": True}]
    layers += [{"class_token": True}] if cls else []
    layers += [{"position_embedding": True}] if pos else []
    width = d
    for b in body:
        if b == "attention":
            layers.append({"attention": heads, "bias": bias})
        elif b == "layer_norm":
            layers.append({"layer_norm": True})
        elif b == "fc":
            layers.append({"fc": out})
        else:
            layers.append({"gelu": True})
    if pool:
        layers.append({"token_pool": pool})

    def make():
        mods, dim = [], d
        for b in body:
            if b == "attention":
                mods.append(MHA(dim, heads, bias))
            elif b == "layer_norm":
                mods.append(nn.LayerNorm(dim))
            elif b == "fc":
                mods.append(nn.Linear(dim, out))
                dim = out
            else:
                mods.append(nn.GELU())
        if pool:
            mods.append(First() if pool == "first" else Mean())
        return Reference(c, d, k, n, cls, pos, nn.Sequential(*mods))
    del width
    return (c, h, w), layers, make


def measured(module, shape, batch):
    """Training-mode forward on the CPU: shape, params, saved bytes; and
    FlopCounterMode on the meta device (the CPU fast path hides attention)."""
    module.train()
    x = torch.randn(batch, *shape)
    with SavedBytes(module) as saved:
        y = module(x)
    counter = FlopCounterMode(display=False)
    meta = module.to("meta").eval()
    with counter, torch.no_grad():
        meta(torch.zeros(batch, *shape, device="meta"))
    return {"shape": tuple(y.shape[1:]), "params": sum(p.numel() for p in module.parameters()),
            "flops": counter.get_total_flops(), "saved": saved.total}


@settings(max_examples=EXAMPLES)
@given(token_nets(), st.integers(1, 2))
def test_token_kinds_agree_with_torch(net, batch):
    shape, layers, make = net
    text = network_text(shape, layers)
    note("repro spec:\n" + text)
    try:
        reference = make()
        torch_error = None
    except (AssertionError, RuntimeError, ValueError) as e:  # MHA: embed_dim % heads
        reference, torch_error = None, str(e)
    try:
        report = analyze(loads(text), batch=batch)
        engine_error = None
    except SpecError as e:
        report, engine_error = None, str(e)
    note(f"engine error: {engine_error}; torch error: {torch_error}")
    assert (torch_error is None) == (engine_error is None)
    if torch_error:
        return
    t = report.totals
    calculated = {"shape": tuple(report.rows[-1].output_shape), "params": t["params"],
                  "flops": 2 * t["macs"] * batch, "saved": t["saved_activation_bytes"]}
    assert calculated == measured(reference, shape, batch)
    assert calculated == measured(loads(text).build(), shape, batch)


ENCODER = """
[model]
name = "encoder block"
input = [3, 32, 32]
layers = [
  {name = "conv_proj", conv = 64, kernel = 8, stride = 8},
  {name = "tokens", tokens = true},
  {name = "class_token", class_token = true},
  {name = "pos_embedding", position_embedding = true},
  {name = "attention", residual = [
    {name = "ln_1", layer_norm = true, eps = 1e-6},
    {name = "self_attention", attention = 4},
    {name = "dropout", dropout = 0.0},
  ]},
  {name = "mlp", residual = [
    {name = "ln_2", layer_norm = true, eps = 1e-6},
    {name = "fc1", fc = 128}, {name = "gelu", gelu = true}, {name = "d1", dropout = 0.0},
    {name = "fc2", fc = 64}, {name = "d2", dropout = 0.0},
  ]},
  {name = "ln", layer_norm = true, eps = 1e-6},
  {name = "class_output", token_pool = "first"},
  {name = "head", fc = 10},
]
"""


def test_the_same_function_as_torchvisions_vit():
    """A one-layer torchvision VisionTransformer and the spec above, with the
    same weights, give the same outputs (eval and train mode, no dropout)."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1,
                                            num_heads=4, hidden_dim=64, mlp_dim=128,
                                            num_classes=10)
    spec = loads(ENCODER)
    model = spec.build()
    assert sum(p.numel() for p in model.parameters()) == analyze(spec).totals["params"] == \
        sum(p.numel() for p in reference.parameters())
    theirs = dict(reference.state_dict())
    # torchvision registers its class token before the patch conv
    order = ["conv_proj.weight", "conv_proj.bias", "class_token"] + \
        [k for k in theirs if k not in ("conv_proj.weight", "conv_proj.bias", "class_token")]
    ours = model.state_dict()
    assert [tuple(v.shape) for v in ours.values()] == [tuple(theirs[k].shape) for k in order]
    model.load_state_dict(dict(zip(ours, (theirs[k] for k in order))))
    x = torch.randn(2, 3, 32, 32)
    for train in (False, True):
        model.train(train), reference.train(train)
        with torch.no_grad():
            assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_vit_b_16_counts_as_torchvision_on_the_meta_device():
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        reference = tv.models.vit_b_16()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        reference.eval()(torch.zeros(1, 3, 224, 224, device="meta"))
    from conftest import spec_path
    from archcalc.spec.loader import load
    report = analyze(load(spec_path("vit_b_16.toml")))
    assert report.totals["macs"] == counter.get_total_flops() // 2 == 17_563_828_224
    assert report.totals["params"] == sum(p.numel() for p in reference.parameters()) \
        == 86_567_656


def test_check_says_what_fvcore_and_the_cpu_miss():
    from archcalc.torch.check import run_check
    result = run_check(loads(ENCODER), batch=2)
    assert result.ok
    text = " ".join(result.notes)
    assert "aten::scaled_dot_product_attention" in text and "meta device" in text


@pytest.mark.parametrize("kernel, dilation", [(3, 1), ([1, 5], 2), (5, 3), (2, 1), ([4, 3], 1)])
def test_same_padding_is_counted_by_fvcore_or_said_not_to_be(kernel, dilation):
    """padding='same' builds with numbers where it is symmetric (fvcore counts
    the conv); with an even kernel PyTorch's conv mode is used and check
    leaves it out of fvcore's count, saying why."""
    from archcalc.torch.check import run_check
    k = kernel if isinstance(kernel, list) else [kernel, kernel]
    text = (f'[model]\ninput = [3, 16, 16]\nlayers = [{{conv = 8, kernel = {k}, '
            f'padding = "same", dilation = {dilation}}}]\n')
    result = run_check(loads(text), batch=2)
    assert result.ok
    even = any(v % 2 == 0 for v in k)
    assert any("aten::_convolution_mode" in n and "left out" in n for n in result.notes) == even
