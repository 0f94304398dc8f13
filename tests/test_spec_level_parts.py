"""A module called in several places of its parent's forward, other layers
between (Res2Net's convs.i and bns.i, two ModuleLists called in turn; Twins'
blocks.i.0, its position block, then blocks.i.1; ConViT's blocks around the
class token): the spec names each member by its dotted path from the level
that calls it (``name = "convs.0"``), so the built model keeps the source's
state_dict keys. Checked against PyTorch: a hand-written spec's shapes,
params, state_dict keys and outputs against the same model written with
nn.ModuleList; imports whose params are sum(p.numel()), whose MACs are
FlopCounterMode's / 2, and whose built module loads the source's state_dict
strictly and computes its outputs (Twins' blocks.i.j and pos_block.i:
tests/test_import_twins.py)."""
import pytest

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from archcalc.torch.export import to_python  # noqa: E402
from test_import_dag import check_import, meta_macs  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAD = '[model]\nname = "parts"\ninput = [8, 6, 6]\n'

# Res2Net's inner loop written by hand: convs.i and bns.i in turn, the relu shared
PARTS = HEAD + '''layers = [
  {name = "conv1", conv = 8, kernel = 1},
  {name = "s0", channel_slice = [0, 4]},
  {name = "convs.0", conv = 4, kernel = 3, padding = 1},
  {name = "bns.0", batch_norm = true},
  {name = "relu", relu = true},
  {name = "s1", from = "conv1", channel_slice = [4, 8]},
  {name = "add", merge = "add", from = ["relu", "s1"]},
  {name = "convs.1", conv = 4, kernel = 3, padding = 1},
  {name = "bns.1", batch_norm = true},
  {name = "relu_1", relu = true},
  {name = "cat", merge = "concat", from = ["relu", "relu_1"]},
  {name = "blocks.0", layers = [{name = "fc", conv = 8, kernel = 1}]},
  {name = "mid", relu = true},
  {name = "blocks.1", layers = [{name = "fc", conv = 8, kernel = 1}]},
  {name = "sum", merge = "add", from = ["blocks.1", "blocks.0.fc"]},
]
'''


class HandParts(nn.Module):
    """PARTS in plain PyTorch."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 1)
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(2))
        self.bns = nn.ModuleList(nn.BatchNorm2d(4) for _ in range(2))
        self.blocks = nn.ModuleList(nn.Sequential() for _ in range(2))
        for block in self.blocks:
            block.add_module("fc", nn.Conv2d(8, 8, 1))

    def forward(self, x):
        x = self.conv1(x)
        a = torch.relu(self.bns[0](self.convs[0](x[:, :4])))
        b = torch.relu(self.bns[1](self.convs[1](a + x[:, 4:])))
        y0 = self.blocks[0](torch.cat([a, b], 1))
        return self.blocks[1](torch.relu(y0)) + y0


def test_a_dotted_name_is_a_member_of_its_container():
    spec = loads(PARTS, file="parts.toml")
    report = analyze(spec)
    rows = {r.name: r for r in report.rows}
    assert rows["convs.1"].output_shape == (4, 6, 6) and rows["cat"].output_shape == (8, 6, 6)
    assert rows["blocks.1.fc"].output_shape == (8, 6, 6)
    hand = HandParts().eval()
    assert report.totals["params"] == sum(p.numel() for p in hand.parameters()) == 528
    with importer.empty_weights():
        meta = HandParts()
    assert report.totals["macs"] == meta_macs(meta, (8, 6, 6)) == 17_280
    built = spec.build().eval()
    assert sorted(built.state_dict()) == sorted(hand.state_dict())
    built.load_state_dict(hand.state_dict(), strict=True)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert (built(x) - hand(x)).abs().max().item() <= 1e-5
    # the Python export places each member at its path
    namespace: dict = {}
    exec(compile(to_python(built), "parts_export", "exec"), namespace)
    exported = namespace["Parts"]().eval()
    exported.load_state_dict(hand.state_dict(), strict=True)
    with torch.no_grad():
        assert (exported(x) - hand(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("layers, words", [
    # a container's name taken by a layer of the level
    ('{name = "convs", conv = 4, kernel = 1}, {name = "convs.0", conv = 4, kernel = 1}',
     ["'convs'", "twice"]),
    ('{name = "convs.0", conv = 4, kernel = 1}, {name = "convs.0", conv = 4, kernel = 1}',
     ["'convs.0'", "twice"]),
    ('{name = "convs..0", conv = 4, kernel = 1}', ["not a valid layer name", "dots"]),
    ('{name = "convs.forward", conv = 4, kernel = 1}', ["'forward'", "reserved"]),
    ('{tokens = true}, {name = "a.b", class_token = true, flat = true}, {token_pool = true}',
     ["takes no dots"]),
])
def test_a_bad_dotted_name_is_one_line(layers, words):
    text = '[model]\nname = "bad"\ninput = [4, 4, 4]\nlayers = [' + layers + ']\n'
    with pytest.raises(SpecError) as e:
        spec = loads(text, file="bad.toml")
        analyze(spec)
        spec.build()
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message


# -- imports -------------------------------------------------------------------


def _tiny_res2net(scale, first_stride=1):
    import timm.models.res2net as r2
    from timm.models.resnet import ResNet

    def factory():
        return ResNet(block=r2.Bottle2neck, layers=[2, 1, 1, 1], channels=(16, 16, 32, 32),
                      base_width=16, stem_width=8, num_classes=5, block_args=dict(scale=scale))
    model = factory()
    model._factory = factory
    return model


@pytest.mark.parametrize("scale", [4, 8])
def test_res2net_blocks_import_with_members_by_path(scale, tmp_path):
    """Res2Net's convs and bns, called in turn: rows convs.i, bns.i in the
    block; exact, no opaque row, and the built spec is timm's model."""
    model = _tiny_res2net(scale)
    text = check_import(model, (3, 32, 32), check_cli=scale == 4, tmp_path=tmp_path)
    assert 'name = "convs.0"' in text and 'name = "bns.0"' in text
    assert "opaque" not in text


@pytest.mark.slow
def test_dla_res2net_imports_with_members_by_path():
    """DLA's Res2Net bottleneck (DlaBottle2neck) inside DLA's trees."""
    from timm.models.dla import DLA, DlaBottle2neck

    def factory():
        return DLA(levels=(1, 1, 1, 2, 1, 1), channels=(4, 8, 16, 16, 32, 32), num_classes=5,
                   block=DlaBottle2neck, base_width=8)
    model = factory()
    model._factory = factory
    text = check_import(model, (3, 32, 32))
    assert '"convs.0"' in text and "opaque" not in text


def _import_exact(model, shape):
    done = importer.import_module(model, shape, label=type(model).__name__)
    report = analyze(loads(done.text, file=type(model).__name__))
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == meta_macs(model, shape)
    return done


def test_convit_blocks_around_the_class_token_import():
    """ConViT's blocks: GPSA blocks, the class token's concatenation, then
    MHSA blocks: blocks.i named by path at the model's level."""
    from timm.models.convit import ConVit
    with importer.empty_weights():
        model = ConVit(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=2,
                       local_up_to_layer=2, num_classes=5).eval()
    done = _import_exact(model, (3, 32, 32))
    assert "blocks.{i}" in done.text or '"blocks.0"' in done.text
    assert "blocks.{i + 2}" in done.text or '"blocks.2"' in done.text
