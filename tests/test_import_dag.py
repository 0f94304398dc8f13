"""Importing models whose dataflow does not fold into nested structures: the
general-graph syntax (``from``, merge entries, ``[model] outputs``) written by
the importer wherever a region does not fold.

Each model is checked against PyTorch itself: params == sum(p.numel()), MACs
== FlopCounterMode / 2 on the meta device, the output shapes of a real
forward; the spec's built module loads the original's state_dict strictly and
computes its outputs within 1e-5; `archcalc check` agrees on the small ones.

- small hand-written DAGs: a layer read by two later layers, skips across
  several layers (an add and a product of two computed tensors), a U-Net-like
  encoder/decoder whose skips cross module levels, a model of three outputs;
- a hypothesis property over random small DAGs of convs, adds, products and
  concats (every sink an output);
- timm's DAG families: DLA, DPN, SelecSLS, HRNet, VoVNet, CSPNeXt (a split
  whose slices are used apart, Res2Net's and EdgeNeXt's, and DPN's
  x[:, :n]: tests/test_import_slices.py);
- torchvision's segmentation model with its auxiliary head (two outputs).
"""
import tomllib

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from archcalc.analysis import analyze
from archcalc.cli import main
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from archcalc.torch.importer import targets  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def meta_macs(model, shape) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape, device="meta"))
    return counter.get_total_flops() // 2


def as_list(out) -> list:
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_import(model, shape, *, check_cli=False, tmp_path=None, atol=1e-5):
    """Import ``model`` (real weights) and check its figures and its function;
    returns the spec's text."""
    torch.manual_seed(0)
    model = model.eval()
    done = importer.import_module(model, shape, label=type(model).__name__)
    spec = loads(done.text, file=type(model).__name__)
    report = analyze(spec)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    with importer.empty_weights():
        meta = type(model)().eval() if not hasattr(model, "_factory") else model._factory()
    assert report.totals["macs"] == meta_macs(meta, shape)
    built = spec.build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected, got = as_list(model(x)), as_list(built(x))
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert (e - g).abs().max().item() <= atol
    if len(expected) > 1:      # the table marks each output, in the forward's order
        outputs = [l for l in done.text.splitlines() if l.startswith("outputs = ")]
        assert len(outputs) == 1 and outputs[0].count('"') == 2 * len(expected)
    if check_cli:
        path = tmp_path / "imported.toml"
        path.write_text(done.text)
        result = CliRunner().invoke(main, ["check", str(path)])
        assert result.exit_code == 0, result.output
        assert "all figures agree" in result.output
    return done.text


# -- hand-written DAGs ------------------------------------------------------------


class TwoReaders(nn.Module):
    """a feeds b and c; the stem's output is read again by the concat."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)
        self.c = nn.Conv2d(8, 4, 3, padding=1)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        a = self.a(s)
        return self.head(torch.cat([self.b(a), self.c(a), s], 1))


class CrossingSkips(nn.Module):
    """Skips that cross each other: c3 + c1, then c4 * c2 (a product of two
    computed tensors), then the two sums added."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.c4 = nn.Conv2d(8, 8, 3, padding=1)
        self.c5 = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x1 = self.c1(x)
        x2 = self.c2(x1)
        x3 = self.c3(x2) + x1
        x4 = self.c4(x3) * x2
        return self.c5(x4 + x3)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Up(nn.Module):
    """Upsample, concatenate the skip, convolve: one decoder stage."""

    def __init__(self, cin, cout):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = block(2 * cout, cout)

    def forward(self, x, skip):
        return self.conv(torch.cat([self.upsample(x), skip], 1))


class TinyUNet(nn.Module):
    """An encoder and a decoder as two ModuleLists: each skip runs from a level
    of `down` to a level of `up` (no nested structure holds it)."""

    def __init__(self):
        super().__init__()
        self.down = nn.ModuleList([block(3, 8), block(8, 16), block(16, 32)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([Up(32, 16), Up(16, 8)])
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        skips = []
        for i, down in enumerate(self.down):
            x = down(x)
            if i < 2:
                skips.append(x)
                x = self.pool(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.head(x)


class GatedBlock(nn.Module):
    """x + c(a(x) * sigmoid(b(x))): a product of two paths inside a residual."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 8, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return x + self.c(self.a(x) * torch.sigmoid(self.b(x)))


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(GatedBlock(), GatedBlock())

    def forward(self, x):
        return self.blocks(self.stem(x))


class ThreeOutputs(nn.Module):
    """A stem, two stages and a head on each: returns three maps (a tuple)."""

    def __init__(self):
        super().__init__()
        self.stem = block(3, 8)
        self.stage1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.stage2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.head1 = nn.Conv2d(8, 2, 1)
        self.head2 = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.stage1(x)
        z = self.stage2(y)
        return self.head1(x), self.head2(y), z


@pytest.mark.parametrize("model, shape", [
    (TwoReaders, (3, 12, 12)), (CrossingSkips, (3, 10, 10)), (TinyUNet, (3, 16, 16)),
    (ThreeOutputs, (3, 16, 16)), (GatedNet, (3, 8, 8))],
    ids=["two_readers", "crossing_skips", "unet", "three_outputs", "gated_residual"])
def test_hand_written_dags_import_exactly(model, shape, tmp_path):
    text = check_import(model(), shape, check_cli=model in (TwoReaders, ThreeOutputs),
                        tmp_path=tmp_path)
    assert "from = " in text      # each needs the graph syntax somewhere


def top_entries(text) -> dict:
    return {e["name"]: e for e in tomllib.loads(text)["model"]["layers"]}


def test_a_layer_read_twice_is_named_where_it_is_read():
    entries = top_entries(importer.import_module(TwoReaders().eval(), (3, 12, 12)).text)
    assert "from" not in entries["b"] and entries["c"]["from"] == "a"
    assert entries["concat"]["merge"] == "concat"
    assert entries["concat"]["from"] == ["b", "c", "relu"]


def test_a_product_of_two_computed_tensors_is_a_merge():
    entries = top_entries(importer.import_module(CrossingSkips().eval(), (3, 10, 10)).text)
    assert (entries["mul"]["merge"], entries["mul"]["from"]) == ("multiply", ["c4", "c2"])


def test_a_product_inside_a_residual_stays_in_its_block():
    """The merge entry sits in the residual's body, reading the block's own
    entries and "input", so the two blocks are still one [blocks.X] repeated."""
    spec = tomllib.loads(importer.import_module(GatedNet().eval(), (3, 8, 8)).text)
    (name, body), = spec["blocks"].items()
    entries = {e["name"]: e for e in body["residual"]}
    assert entries["b"]["from"] == "input"
    assert (entries["mul"]["merge"], entries["mul"]["from"]) == ("multiply", ["a", "sigmoid"])
    assert spec["model"]["layers"][1]["layers"][0]["repeat"] == 2


def test_several_outputs_are_the_model_s_outputs():
    text = importer.import_module(ThreeOutputs().eval(), (3, 16, 16)).text
    assert tomllib.loads(text)["model"]["outputs"] == ["head1", "head2", "stage2"]
    report = analyze(loads(text))
    shapes = {row.name: tuple(row.output_shape) for row in report.rows}
    assert shapes["head1"] == (2, 16, 16) and shapes["head2"] == (2, 8, 8)
    assert shapes["stage2"] == (16, 4, 4)


def test_a_dotted_path_reads_past_an_inner_level_of_the_same_name():
    """HRNet's modules are ModuleLists in ModuleLists: inside stage3.1, "0" is
    its own branch 0, yet "0.fuse_act_1" can only be stage3.0's. A dotted path
    is read from the innermost list where the whole path exists."""
    report = analyze(loads('''
[model]
name = "shadow"
input = [4, 8, 8]
layers = [
  {name = "0", layers = [{name = "a", conv = 4, kernel = 1}, {name = "b", conv = 4, kernel = 1}]},
  {name = "1", layers = [
    {name = "0", conv = 4, kernel = 1},
    {name = "mix", merge = "add", from = ["0", "0.a"]},
  ]},
]
'''))
    assert {row.name: row.inputs for row in report.rows}["1.mix"] == ("1.0", "0.a")


# -- random DAGs ------------------------------------------------------------------


class RandomDag(nn.Module):
    """Nodes in order, each a conv of an earlier node or an add, product or
    concat of two; every node no later one reads is an output."""

    def __init__(self, plan, in_channels=3):
        super().__init__()
        self.plan = plan
        channels = [in_channels]
        for i, (op, a, b, c) in enumerate(plan):
            if op == "conv":
                setattr(self, f"n{i}", nn.Conv2d(channels[a], c, 3 if c % 2 else 1,
                                                 padding=1 if c % 2 else 0))
                channels.append(c)
            elif op == "cat":
                channels.append(channels[a] + channels[b])
            else:
                channels.append(channels[a])
        read = {x for op, a, b, _ in plan for x in ((a, b) if op != "conv" else (a,))}
        self.outs = [i + 1 for i in range(len(plan)) if i + 1 not in read]

    def _factory(self):
        return RandomDag(self.plan)

    def forward(self, x):
        values = [x]
        for i, (op, a, b, _) in enumerate(self.plan):
            if op == "conv":
                values.append(getattr(self, f"n{i}")(values[a]))
            elif op == "add":
                values.append(values[a] + values[b])
            elif op == "mul":
                values.append(values[a] * values[b])
            else:
                values.append(torch.cat([values[a], values[b]], 1))
        outs = [values[i] for i in self.outs]
        return outs[0] if len(outs) == 1 else tuple(outs)


@st.composite
def dag_plans(draw):
    """A plan whose merges read computed nodes of equal channels (not the input)."""
    plan, channels = [], [3]
    for i in range(draw(st.integers(2, 9))):
        computed = list(range(1, len(channels)))
        pairs = [(a, b) for a in computed for b in computed if a < b
                 and channels[a] == channels[b]]
        op = draw(st.sampled_from(["conv", "conv", "add", "mul", "cat"] if pairs else ["conv"]))
        if op == "conv":
            a = draw(st.sampled_from(range(len(channels))))
            c = draw(st.sampled_from([4, 5]))
            plan.append(("conv", a, None, c))
            channels.append(c)
        else:
            a, b = draw(st.sampled_from(pairs))
            plan.append((op, a, b, None))
            channels.append(channels[a] * (2 if op == "cat" else 1))
    return plan


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dag_plans())
def test_random_dags_import_exactly(plan):
    model = RandomDag(plan)
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return
    check_import(model, (3, 6, 6))


# -- timm's DAG families ----------------------------------------------------------


TIMM_EXACT = ["dla34", "dpn68", "selecsls42b", "hrnet_w18_small", "ese_vovnet19b_dw",
              "cspnext_tiny", "hrnet_w18"]
# CSPNeXt folds (its SPPF's pools are a concat's branches b2, b3, b4)
NESTED = {"cspnext_tiny"}


@pytest.mark.parametrize("name", TIMM_EXACT)
def test_timm_dag_families_import_exactly(name):
    """params == sum(numel) and MACs == FlopCounterMode / 2 on the meta device,
    at the model's default input."""
    target = targets.load(f"timm:{name}", meta=True)
    done = importer.import_module(target.model, target.default_input, label=target.label)
    report = analyze(loads(done.text, file=name))
    assert report.totals["params"] == sum(p.numel() for p in target.model.parameters())
    assert report.totals["macs"] == meta_macs(target.model, target.default_input)
    assert ("from = " in done.text) == (name not in NESTED)


@pytest.mark.parametrize("name", ["dla34", "selecsls42b", "hrnet_w18_small",
                                  "ese_vovnet19b_dw", "cspnext_tiny"])
def test_timm_dag_spec_loads_the_state_dict_and_computes_the_same(name):
    """The spec's built module takes timm's state_dict (strict) and gives its
    logits within 1e-5 at 64 x 64 (DPN's: tests/test_import_slices.py)."""
    import timm
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    done = importer.import_module(model, (3, 64, 64), label=name)
    built = loads(done.text, file=name).build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (built(x) - model(x)).abs().max().item() <= 1e-5


def test_fpn_returns_its_five_maps_by_name():
    """torchvision's FPN on ResNet-18 returns an OrderedDict of five maps: the
    spec's outputs, each the same as torchvision's with its state_dict
    loaded (strict); params and MACs as PyTorch counts them."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    torch.manual_seed(0)
    model = resnet_fpn_backbone(backbone_name="resnet18", weights=None).eval()
    done = importer.import_module(model, (3, 64, 64), label="fpn")
    assert tomllib.loads(done.text)["model"]["outputs"] == [
        "fpn.layer_blocks.0", "fpn.layer_blocks.1", "fpn.layer_blocks.2",
        "fpn.layer_blocks.3", "fpn.maxpool"]
    report = analyze(loads(done.text))
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert report.totals["macs"] == counter.get_total_flops() // 2
    built = loads(done.text).build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), built(x)
    assert len(got) == 5
    for e, g in zip(expected.values(), got.values()):
        assert e.shape == g.shape and (e - g).abs().max().item() <= 1e-5


def test_segmentation_with_its_auxiliary_head_has_two_outputs():
    """FCN-ResNet50 with aux_loss returns {"out", "aux"}: both are outputs, each
    upsampled to the input; params and MACs as PyTorch counts them."""
    target = targets.load("torchvision.models.segmentation:fcn_resnet50",
                          '{"weights": null, "weights_backbone": null, "aux_loss": true}',
                          meta=True)
    shape = (3, 64, 96)
    done = importer.import_module(target.model, shape, label=target.label)
    report = analyze(loads(done.text, file="fcn"))
    assert report.totals["params"] == sum(p.numel() for p in target.model.parameters()) \
        == 35_322_218
    assert report.totals["macs"] == meta_macs(target.model, shape)
    outputs = next(l for l in done.text.splitlines() if l.startswith("outputs = "))
    names = [n.strip(' "') for n in outputs.split("=", 1)[1].strip(" []").split(",")]
    shapes = {row.name: tuple(row.output_shape) for row in report.rows}
    assert [shapes[n] for n in names] == [(21, 64, 96), (21, 64, 96)]
