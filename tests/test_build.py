"""Compiled specs measured against the engine: every spec, the torchvision
twins, random small networks (hypothesis), memory, export and the Python API."""
import glob
import importlib.util
import os

import pytest
from hypothesis import given, note, settings

import archcalc
from archcalc.analysis import analyze
from archcalc.spec.loader import load, loads
from conftest import SPECS, spec_path
from strategies import network_text, small_networks

torch = pytest.importorskip("torch")
from archcalc.torch.check import run_check  # noqa: E402

ALL_SPECS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SPECS, "*.toml")))
# issue 12's specs (up to 53 G MACs each at full size) are checked there instead
from test_lecture_specs import CHECK_INPUTS as LECTURE_CHECK_INPUTS  # noqa: E402
from test_heads import CHECKED_HERE as HEADS_CHECKED  # noqa: E402
from test_specs_graph import CHECKED_HERE as GRAPH_CHECKED  # noqa: E402


# the default run checks these at a reduced input (every row still applies:
# the same layers, fewer positions): at full size each costs 1 to 21 G MACs a
# pass and the check makes four passes (grouped convolutions: 0.3 G MACs, as
# slow as ten times that); the full-size sweep is marked slow.
# VGG-16 (the lecture's table), ResNet-18 and the others are checked as shipped.
REDUCED_INPUTS = {
    "alexnet": "3x99x99", "zfnet": "3x96x96", "densenet121": "3x64x64", "resnet34": "3x64x64",
    "resnet50": "3x64x64", "resnet50_v1": "3x64x64", "resnet50_scaled": "3x64x64",
    "se_resnet50": "3x64x64", "resnext50_32x4d": "3x64x64", "convnext_tiny": "3x64x64",
    "inception_v3": "3x96x96",
    "vgg11": "3x32x32", "vgg11_lrn": "3x32x32", "vgg13": "3x32x32", "vgg16_c": "3x32x32",
    "vgg19": "3x32x32", "fcn32s_vgg16": "3x32x32", "vit_b_16": "3x64x64",
    # grouped and depthwise convolutions: slow per MAC on a CPU
    "regnet_y_400mf": "3x64x64", "mobilenet_v2": "3x64x64", "mobilenet_v3_large": "3x64x64",
    "efficientnet_b0": "3x64x64", "shufflenet_v2_x1_0": "3x64x64",
}


def _check_every_figure(name, input=None):
    """Per row: output shape (hooks), params (numel), MACs (fvcore by module);
    totals: params, fvcore MACs, FlopCounterMode, forward and saved memory."""
    if name[:-len(".toml")] in LECTURE_CHECK_INPUTS:
        pytest.skip("checked at batch 1 and 2 on a reduced input in test_lecture_specs.py")
    if name[:-len(".toml")] in HEADS_CHECKED:
        pytest.skip("checked at batch 1 and 2 in test_heads.py (R bound for Faster R-CNN)")
    if name[:-len(".toml")] in GRAPH_CHECKED:
        pytest.skip("checked at batch 1 and 2 on a reduced input in test_specs_graph.py")
    result = run_check(load(spec_path(name)), input=input)
    assert not result.measured.meta, result.measured.meta_reason
    bad = [(r.name, c.what, c.calculated, c.measured) for r in result.rows for c in r.checks
           if c.ok is False]
    bad += [(c.what, c.calculated, c.measured) for c in result.totals if c.ok is False]
    assert not bad, bad
    assert all(c.measured is not None for c in result.totals), "a total was not measured"
    measured_rows = sum(1 for r in result.rows if r.checks)
    assert measured_rows == len(result.rows), "a row has no module to measure"


# tracing and hooking cost grows with the rows, whatever the input: ResNet-1001
# (3,339 rows), ResNet-101 and -152 are slow; the same library blocks at a
# smaller depth are checked by default (ResNet-164, ResNet-50)
DEEP = {"preact_resnet1001_cifar.toml", "resnet101.toml", "resnet152.toml"}
# specs whose every kind and structure another default case builds (ResNet-110
# beside ResNet-164, the other ResNet-50s and VGGs beside ResNet-50 and VGG-16)
SAME_KINDS = {"resnet110_cifar.toml", "resnet50_v1.toml", "resnet50_scaled.toml",
              "resnet34.toml", "vgg19.toml", "vgg13.toml", "vgg11.toml"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SAME_KINDS
                                  else n for n in ALL_SPECS if n not in DEEP])
def test_every_spec_compiles_and_every_figure_agrees(name):
    _check_every_figure(name, REDUCED_INPUTS.get(name[:-len(".toml")]))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted({f"{n}.toml" for n in REDUCED_INPUTS} | DEEP))
def test_every_spec_agrees_at_full_size(name):
    _check_every_figure(name)


@pytest.mark.parametrize("name", ["lenet5.toml", "resnet18.toml"])
def test_check_at_a_larger_batch(name):
    result = run_check(load(spec_path(name)), batch=4)
    assert result.ok, [(c.what, c.calculated, c.measured) for c in result.totals]


def test_check_cli_reports_every_figure():
    from click.testing import CliRunner

    from archcalc.cli import main
    result = CliRunner().invoke(main, ["check", spec_path("lenet5.toml"), "--batch", "2"])
    assert result.exit_code == 0, result.stderr
    assert "all figures agree" in result.stdout
    assert "fvcore counts one fused multiply-add as one flop" in result.stdout


def test_named_submodules_follow_the_spec_paths():
    model = load(spec_path("googlenet.toml")).build()
    conv = model.get_submodule("inception_3a.b2.3x3_reduce")
    assert isinstance(conv[0], torch.nn.Conv2d) and conv[0].out_channels == 96
    model = load(spec_path("resnet18.toml")).build()
    assert model.get_submodule("layer2.basic1.shortcut")[0].stride == (2, 2)


TV = {"vgg11": ("vgg11", None), "vgg13": ("vgg13", None), "vgg16": ("vgg16", None),
      "vgg19": ("vgg19", None), "resnet18": ("resnet18", None), "resnet50": ("resnet50", None),
      "resnet152": ("resnet152", None), "resnext50_32x4d": ("resnext50_32x4d", None),
      "densenet121": ("densenet121", None), "inception_v3": ("inception_v3", None)}
STAGES = {"resnet18": ["layer1", "layer2", "layer3", "layer4"],
          "resnet50": ["layer1", "layer2", "layer3", "layer4"],
          "resnet152": ["layer1", "layer2", "layer3", "layer4"],
          "resnext50_32x4d": ["layer1", "layer2", "layer3", "layer4"],
          "inception_v3": ["Mixed_5d", "Mixed_6e", "Mixed_7c"]}


def twin(name):
    tv = pytest.importorskip("torchvision")
    if name == "inception_v3":
        return tv.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    return getattr(tv.models, name)(weights=None)


def stage_shapes(model, names, x):
    shapes = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, a, y, n=n: shapes.__setitem__(n, tuple(y.shape))) for n in names]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return shapes


def fvcore_total(model, x):
    from fvcore.nn import FlopCountAnalysis
    a = FlopCountAnalysis(model.eval(), x)
    a.unsupported_ops_warnings(False)
    a.uncalled_modules_warnings(False)
    return a.total()


# fvcore traces real tensors: the two models built again and counted at this
# input (ResNet's and Inception's layers are the same at any size; VGG's
# adaptive pool is an identity only at 224)
FVCORE_INPUT = {"vgg16": 224, "resnet50": 64, "inception_v3": 96}


@pytest.mark.parametrize("name", TV)
def test_compiled_twin_equals_torchvision(name):
    with torch.device("meta"):   # params and stage shapes need no weights
        ours, theirs = load(spec_path(name + ".toml")).build(), twin(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    size = 299 if name == "inception_v3" else 224
    x = torch.zeros(1, 3, size, size, device="meta")
    if name in STAGES:
        assert stage_shapes(ours, STAGES[name], x) == stage_shapes(theirs, STAGES[name], x)
    if name in FVCORE_INPUT:
        pytest.importorskip("fvcore")
        ours, theirs = load(spec_path(name + ".toml")).build(), twin(name)
        x = torch.zeros(1, 3, FVCORE_INPUT[name], FVCORE_INPUT[name])
        # torchvision's VGG adds an identity-sized adaptive pool (7x7 -> 7x7): fvcore counts it
        extra = 25_088 if name.startswith("vgg") else 0
        assert fvcore_total(ours, x) + extra == fvcore_total(theirs, x)


@settings(max_examples=200)
@given(small_networks())
def test_random_networks_compile_and_agree(case):
    shape, layers = case
    text = network_text(shape, layers)
    note("repro spec:\n" + text)
    spec = loads(text)
    report = analyze(spec, batch=2)
    model = spec.build()
    rows = model.rows
    modules = dict(model.named_modules())
    shapes = {}
    hooks = [modules[name].register_forward_hook(
        lambda m, a, y, key=key: shapes.__setitem__(key, tuple(y.shape[1:])))
        for key, name in rows.items()]
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        y = model.eval()(torch.randn(2, *shape))
    for h in hooks:
        h.remove()
    assert tuple(y.shape[1:]) == report.rows[-1].output_shape
    for row in report.rows[1:]:
        assert shapes[row.name] == row.output_shape, row.name
    assert sum(p.numel() for p in model.parameters()) == report.totals["params"]
    assert counter.get_total_flops() == 2 * 2 * report.totals["macs"]  # batch 2


# batch 8 of VGG-16 and ResNet-50 (124 and 33 G MACs a training forward) is
# slow; their batch 1 and the others' batch 8 cover the same rules by default
@pytest.mark.parametrize("name, batch", [
    pytest.param(n, b, marks=pytest.mark.slow) if b == 8 and n in ("vgg16", "resnet50") else (n, b)
    for b in (1, 8) for n in ("lenet5", "alexnet", "vgg16", "resnet18", "resnet50")])
def test_saved_for_backward_within_ten_percent(name, batch):
    from archcalc.torch.measure import saved_tensor_bytes
    spec = load(spec_path(name + ".toml"))
    report = analyze(spec, batch=batch)
    model = spec.build().train()
    measured = saved_tensor_bytes(model, torch.randn(batch, *report.model.input))
    estimate = report.totals["saved_activation_bytes"]
    assert abs(estimate - measured) / measured <= 0.10, (estimate, measured)


def test_measuring_saved_bytes_keeps_nothing_alive():
    """The saved-tensor hooks made a cycle through autograd (the relu's output
    saved as itself) that gc cannot see: every check leaked its model, weights
    and all (a suite of checks grew by gigabytes)."""
    import gc
    import weakref

    from archcalc.torch.measure import saved_tensor_bytes
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).train()
    weight = weakref.ref(model[0].weight)
    # conv keeps its input (2 x 3 x 8 x 8 floats), relu its output (2 x 8 x 6 x 6)
    assert saved_tensor_bytes(model, torch.randn(2, 3, 8, 8)) == 4 * (2 * 3 * 8 * 8 + 2 * 8 * 6 * 6)
    del model
    gc.collect()
    assert weight() is None


def test_export_python_resnet18_imports_builds_and_counts(tmp_path):
    from click.testing import CliRunner

    from archcalc.cli import main
    result = CliRunner().invoke(main, ["export", spec_path("resnet18.toml"), "--to", "python"])
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "m.py"
    path.write_text(result.stdout)
    module_spec = importlib.util.spec_from_file_location("exported_resnet18", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    model = module.ResNet18()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert tuple(model(torch.zeros(1, 3, 224, 224)).shape) == (1, 1000)
    # same weights, same function: the compiled model's state loads into the export
    compiled = load(spec_path("resnet18.toml")).build().eval()
    # the export keeps the compiled model's module tree: its state_dict loads as is
    model.load_state_dict(compiled.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), compiled(x), atol=1e-5)


def test_export_onnx_says_what_is_missing(tmp_path):
    from click.testing import CliRunner

    from archcalc.cli import main
    result = CliRunner().invoke(main, ["export", spec_path("lenet5.toml"), "--to", "onnx",
                                       "-o", str(tmp_path / "m.onnx")])
    if importlib.util.find_spec("onnx") is None:
        assert result.exit_code == 2          # a missing extra: one line naming it, exit 2
        assert 'pip install "archcalc[onnx]"' in result.stderr
    else:  # pragma: no cover - depends on the install
        assert result.exit_code == 0 and (tmp_path / "m.onnx").exists()


def test_python_api():
    spec = archcalc.load(spec_path("vgg16.toml"))
    report = spec.analyze(batch=32, dtype="bf16")
    assert report.totals["params"] == 138_357_544
    assert report.totals["activation_bytes"] == 15_237_608 * 2 * 32
    frame = report.to_frame()
    assert len(frame) == 22
    assert list(frame.columns[:4]) == ["name", "path", "type", "output_shape"]
    assert frame.loc[19, "params"] == 102_764_544
    assert '"params": 138357544' in report.to_json()
    with torch.device("meta"):   # counting needs no weights
        model = spec.build()
    assert sum(p.numel() for p in model.parameters()) == 138_357_544


def test_python_api_binds_variables(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text('[vars]\nC = "?"\n[model]\ninput = [3, 8, 8]\n'
                    'layers = [{conv = "C", kernel = 1}, {conv = "2*C", kernel = 3}]\n')
    free = archcalc.load(str(path)).analyze()
    assert str(free.totals["params"]) == "18*C**2 + 6*C"  # (3C + C) + (9*C*2C + 2C)
    bound = archcalc.load(str(path), C=16).analyze()
    assert bound.totals["params"] == (3 * 16 + 16) + (9 * 16 * 32 + 32)
    assert bound.rows[2].output_shape == (32, 6, 6)


def test_he_and_xavier_init():
    spec = loads('[model]\ninput = [3, 8, 8]\ninit = "he"\n'
                 'layers = [{conv = 64, kernel = 3}, {fc = 10}]\n')
    torch.manual_seed(0)
    model = spec.build()
    conv = model.get_submodule("conv1")
    fan_in = 3 * 3 * 3
    assert abs(conv.weight.std().item() - (2 / fan_in) ** 0.5) < 0.03
    assert conv.bias.abs().sum().item() == 0
    xavier = spec.build(init="xavier").get_submodule("fc1")[1]
    bound = (6 / (64 * 6 * 6 + 10)) ** 0.5
    assert xavier.weight.abs().max().item() <= bound
