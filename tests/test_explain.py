"""`archcalc explain` on merge rows (what they read, their receptive field),
on rows read by name, and on kinds whose FLOPs are more than 2 x MACs; the
figures from a real PyTorch forward and backward pass."""
import pytest
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

import archcalc
from archcalc.cli import main
from archcalc.explain import explain
from archcalc.spec.loader import loads
from conftest import spec_path

# docs/spec.md's two-level feature pyramid
PYRAMID = '''
[model]
name = "pyramid"
input = [3, 64, 64]
outputs = ["p1", "p2"]
layers = [
  {name = "c1", conv = 16, kernel = 3, padding = 1, activation = "relu"},
  {name = "c2", conv = 32, kernel = 3, stride = 2, padding = 1, activation = "relu"},
  {name = "lat2", conv = 16, kernel = 1},
  {name = "p2", conv = 16, kernel = 3, padding = 1},
  {name = "up2", from = "lat2", upsample = 2},
  {name = "lat1", from = "c1", conv = 16, kernel = 1},
  {name = "sum1", merge = "add", from = ["lat1", "up2"], activation = "relu"},
  {name = "p1", conv = 16, kernel = 3, padding = 1},
]
'''


def measured_field(model, module, shape, at):
    """The receptive field of ``module``'s output at position ``at``, measured:
    every weight positive (no cancellation, every relu open), each max pool
    an average pool of the same window (a max passes one gradient per
    window), the input's rows and columns whose gradient is not zero."""
    for name, m in list(model.named_modules()):
        if isinstance(m, torch.nn.MaxPool2d):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf,
                    torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
    module = model.get_submodule(module)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
    seen = {}
    module.register_forward_hook(lambda m, args, out: seen.update(out=out))
    x = torch.ones(1, *shape, requires_grad=True)
    model(x)
    seen["out"][0, :, at[0], at[1]].sum().backward()
    hit = x.grad[0].abs().sum(0) > 0
    rows, cols = hit.any(1).nonzero(), hit.any(0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_a_merge_entry_shows_its_inputs_and_the_max_receptive_field():
    spec = loads(PYRAMID, file="pyramid.toml")
    lines = explain(spec.analyze(), "sum1")
    model = spec.build().eval()
    shapes = {}
    for name in ("lat1", "up2"):
        model.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: shapes.update({name: tuple(out.shape[1:])}))
    model(torch.zeros(1, 3, 64, 64))
    assert shapes == {"lat1": (16, 64, 64), "up2": (16, 64, 64)}
    assert lines[1] == "inputs: lat1: 16 x 64 x 64; up2: 16 x 64 x 64"
    # lat1 sees c1's 3 x 3; up2 sees c2's 5 x 5 (the upsampling adds none)
    pyramid = spec.build()
    assert measured_field(pyramid, "lat1", (3, 64, 64), (32, 32)) == (3, 3)
    pyramid = spec.build()
    assert measured_field(pyramid, "sum1", (3, 64, 64), (32, 32)) == (5, 5)
    assert lines[-1] == "receptive field: the max over its inputs = max(lat1: 3, up2: 5) = 5; " \
        "jump max(1, 1) = 1"
    # one add and one relu per output element: 16*64*64 = 65,536 each
    assert "FLOPs: 131,072 (65,536 for the add: one per output element, relu: 1 per element)" \
        in lines


def test_a_residual_add_shows_its_body_and_shortcut():
    """ResNet-18's first block: conv2 (body) and maxpool (identity shortcut),
    each 64 x 56 x 56 in torchvision's resnet18; the sum sees 27 pixels."""
    from torchvision.models import resnet18
    tv = resnet18().eval()
    shapes = {}
    for name in ("layer1.0.bn2", "maxpool"):
        tv.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: shapes.update({name: tuple(out.shape[1:])}))
    tv(torch.zeros(1, 3, 224, 224))
    assert shapes == {"layer1.0.bn2": (64, 56, 56), "maxpool": (64, 56, 56)}
    lines = explain(archcalc.load(spec_path("resnet18.toml")).analyze(), "layer1.basic1.add")
    assert lines[1] == "inputs: layer1.basic1.conv2: 64 x 56 x 56; maxpool: 64 x 56 x 56"
    tv = resnet18().eval()
    assert measured_field(tv, "maxpool", (3, 224, 224), (28, 28)) == (11, 11)
    tv = resnet18().eval()
    assert measured_field(tv, "layer1.0", (3, 224, 224), (28, 28)) == (27, 27)
    assert lines[-1] == ("receptive field: the max over its inputs = "
                         "max(layer1.basic1.conv2: 27, maxpool: 11) = 27; jump max(4, 4) = 4")


def test_a_sum_of_three_counts_two_adds():
    """HRNet's fuse sum of three 16 x 56 x 56 maps: JoinInputs runs two adds
    (counted on the aten ops it calls), then the relu."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from archcalc.torch.build import JoinInputs

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.adds = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.adds += func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.add_)
            return func(*args, **(kwargs or {}))

    xs = [torch.ones(1, 16, 56, 56) for _ in range(3)]
    with Count() as count:
        JoinInputs("add")(*xs)
    assert count.adds == 2
    lines = explain(archcalc.load(spec_path("hrnet_w18_small.toml")).analyze(),
                    "stage3.0.fuse_layers.0.sum")
    assert lines[1] == ("inputs: stage3.0.branches.0.1.add: 16 x 56 x 56; "
                        "stage3.0.fuse_layers.0.1.2: 16 x 56 x 56; "
                        "stage3.0.fuse_layers.0.2.2: 16 x 56 x 56")
    assert ("FLOPs: 150,528 ((N - 1) x numel = (3 - 1)*50,176 = 100,352 for the add of 3, "
            "relu: 1 per element)") in lines


def test_a_row_read_by_name_says_which():
    lines = explain(archcalc.load(spec_path("hrnet_w18_small.toml")).analyze(),
                    "stage3.0.fuse_layers.0.2.0")
    assert lines[1] == "input: 64 x 14 x 14, from stage3.0.branches.2.1.add"


ATTENTION = '''
[model]
name = "windows"
input = [32, 8, 8]
layers = [
  {name = "tokens", tokens = true},
  {name = "w", window_attention = 2, window = 4, shift = 2, size = [8, 8]},
  {name = "a", attention = 4},
]
'''


@pytest.mark.parametrize("name", ["w", "a"])
def test_attention_flops_show_the_kinds_own_rule(name):
    """Attention's FLOPs are 2 x MACs plus the softmax and scaling, which
    FlopCounterMode does not count: explain prints the kind's own rule."""
    spec = loads(ATTENTION, file="windows.toml")
    report = spec.analyze()
    row = next(r for r in report.rows if r.name == name)
    with torch.device("meta"):
        model = spec.build().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.get_submodule(name)(torch.zeros(1, 64, 32, device="meta"))
    assert row.macs == counter.get_total_flops() // 2
    assert row.flops > 2 * row.macs
    flops = next(line for line in explain(report, name) if line.startswith("FLOPs"))
    kind = row.ops[0].kind
    assert flops == f"FLOPs: {row.flops:,} ({kind.name}: {kind.flops_rule})"
    assert "2 x MACs =" not in flops


def test_explain_cli_on_a_merge_row():
    """GoogLeNet's inception (3a): its four branches as the paper's Table 1
    gives them (64, 128, 32 and 32 channels at 28 x 28), concatenated."""
    result = CliRunner().invoke(main, ["explain", spec_path("googlenet.toml"),
                                       "inception_3a.concat"])
    assert result.exit_code == 0, result.output
    assert "inputs: inception_3a.b1.1x1: 64 x 28 x 28; inception_3a.b2.3x3: 128 x 28 x 28; " \
        "inception_3a.b3.5x5: 32 x 28 x 28; inception_3a.b4.pool_proj: 32 x 28 x 28" \
        in result.output
    assert "FLOPs: 0 (a concatenation copies: no arithmetic)" in result.output
