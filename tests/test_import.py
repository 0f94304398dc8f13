"""Issue 11: importing PyTorch models (`archcalc import`, archcalc.from_module).

- every classification model of torchvision (list_models) imports, or the
  import names what it cannot map (each op with its module path and count);
  at least 90% import, each with params = sum(p.numel()) and MACs =
  FlopCounterMode / 2 on the meta device (weights on the meta device: the
  whole list in about a minute);
- a representative subset with real weights: the spec's built model loads
  the original's state_dict strictly and gives its outputs within 1e-5, and
  `export --to python` keeps the keys; the whole list so under `-m slow` or
  ARCHCALC_SLOW=1 (marked slow, deselected by default);
- round trips: a shipped torchvision-form spec, compiled and imported back,
  has the shipped spec's totals;
- the command line: files, --kwargs, --input, --strict, one-line errors
  (2 for bad input, 1 when the user's code raises or ops have no kind);
- the spec features the import needs (flat structures and parameters, named
  branches, shortcut_name, {i} names), and Spec -> TOML for every shipped spec.
"""
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

import archcalc
from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.spec.loader import load, loads
from conftest import ROOT, SPECS, spec_path

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.torch import importer  # noqa: E402

MODELS = tv.models.list_models(module=tv.models)
# what has no kind yet: nothing (Swin's shifted-window attention and MaxViT's
# partitions have kinds: archcalc/layers/window_attention.py)
NO_KIND = set()
SIZE = {"vit_b_16": 224, "vit_b_32": 224, "vit_l_16": 224, "vit_l_32": 224, "vit_h_14": 224,
        "inception_v3": 96}


def empty_model(name):
    """A torchvision model with its weights on the meta device: no memory."""
    with importer.empty_weights():
        return tv.models.get_model(name, weights=None).eval()


def meta_macs(model, shape) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape, device="meta"))
    return counter.get_total_flops() // 2


# one of each family by default (every block kind torchvision's classifiers
# use); all 80 under -m slow (and benchmarks/import_sweep.py)
DEFAULT_MODELS = ("alexnet", "vgg11_bn", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
                  "googlenet", "inception_v3", "densenet121", "squeezenet1_1",
                  "shufflenet_v2_x0_5", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5",
                  "efficientnet_b0", "efficientnet_v2_s", "regnet_y_400mf", "convnext_tiny",
                  "vit_b_32", "swin_v2_t", "maxvit_t")


class _Imported(dict):
    """name -> (meta model, Imported or the Unsupported error), each imported
    the first time a test asks for it (once for the module)."""

    def __missing__(self, name):
        model = empty_model(name)
        try:
            done = importer.import_module(model, (3, 224, 224),
                                          label=f"torchvision.models:{name}", strict=True)
        except importer.Unsupported as e:
            done = e
        self[name] = (model, done)
        return self[name]


@pytest.fixture(scope="module")
def imported():
    return _Imported()


def test_the_default_models_are_torchvision_classifiers():
    assert set(DEFAULT_MODELS) <= set(MODELS)


@pytest.mark.slow   # all 80 imported: about a minute and a half on 2 cores
def test_at_least_90_percent_of_torchvision_classifiers_import(imported):
    results = {name: imported[name][1] for name in MODELS}
    ok = [n for n, d in results.items() if isinstance(d, importer.Imported)]
    failed = sorted(set(results) - set(ok))
    assert len(ok) / len(results) >= 0.9, failed
    assert set(failed) == NO_KIND, failed   # a new failure is a regression, a fix a surprise


@pytest.mark.parametrize("name", [n if n in DEFAULT_MODELS else
                                  pytest.param(n, marks=pytest.mark.slow) for n in MODELS])
def test_import_counts_what_torchvision_counts(imported, name):
    model, done = imported[name]
    if isinstance(done, importer.Unsupported):
        # never silently zero: each op, where it is called and how often
        assert name in NO_KIND
        assert done.found and all(op and path for (op, path) in done.found)
        assert "have no archcalc kind" in str(done) and "--strict" in str(done)
        return
    report = analyze(loads(done.text, file=name))
    total = sum(p.numel() for p in model.parameters())
    assert report.totals["params"] == done.params == total - sum(done.unused.values())
    assert report.totals["macs"] == meta_macs(model, (3, 224, 224))
    assert not report.free_symbols


class _Spectrum(torch.nn.Module):
    """An op no kind describes (every torchvision classifier imports now)."""

    def forward(self, x):
        return torch.fft.fft2(x).abs()


def test_unsupported_ops_are_named_with_path_and_count():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3),
                                torch.nn.Sequential(_Spectrum(), _Spectrum()))
    with pytest.raises(importer.Unsupported) as err:
        importer.import_module(model, (3, 8, 8), label="spectrum", strict=True)
    text = str(err.value)
    assert "fft2" in text and "2 calls" in text and "1.0" in text


def test_left_out_modules_are_said(imported):
    """GoogLeNet's and Inception-v3's auxiliary classifiers run only in training."""
    _, done = imported["googlenet"]
    assert set(done.unused) == {"aux1", "aux2"}
    assert "Left out: aux1, aux2" in done.text


# -- real weights: state_dict and outputs -------------------------------------


def check_same_function(name, shape, export=False, tmp_path=None, share=False, **kwargs):
    """``share``: the built model is made on the meta device and takes the
    original's tensors (load_state_dict(assign=True), still strict): half the
    memory, for the sweep's largest models. ``kwargs`` go to the factory."""
    torch.manual_seed(0)
    original = tv.models.get_model(name, weights=None, **kwargs).eval()
    done = importer.import_module(original, shape, label=name)
    spec = loads(done.text, file=name)
    if share:
        with importer.empty_weights():
            built = spec.build().eval()
    else:
        built = spec.build().eval()
    state = {k: v for k, v in original.state_dict().items()
             if not any(k.startswith(u + ".") for u in done.unused)}
    built.load_state_dict(state, strict=True, assign=share)
    if share:
        assert not any(t.is_meta for t in (*built.parameters(), *built.buffers()))
    assert sum(p.numel() for p in built.parameters()) == done.params
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = original(x)
        assert (built(x) - expected).abs().max().item() <= 1e-5
    if export:
        from archcalc.torch.export import to_python
        path = tmp_path / f"{name}_export.py"
        path.write_text(to_python(built))
        module_spec = importlib.util.spec_from_file_location(f"exported_{name}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        cls = next(v for k, v in vars(module).items()
                   if isinstance(v, type) and issubclass(v, torch.nn.Module)
                   and v.__module__ == module.__name__ and k[0].isupper()
                   and "forward" in v.__dict__ and "__init__" in v.__dict__
                   and k not in ("ClassToken", "PositionEmbedding", "LayerScale", "MapToTokens",
                                 "SelfAttention", "TokenPool", "TokensToMap",
                                 "SqueezeExcitation", "StochasticDepth", "LayerNorm2d"))
        exported = cls().eval()
        exported.load_state_dict(state, strict=True)     # the original's keys, as they are
        with torch.no_grad():
            assert (exported(x) - expected).abs().max().item() <= 1e-5


SUBSET = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1",
          "densenet121", "googlenet", "inception_v3", "efficientnet_b0", "regnet_y_400mf",
          "mnasnet0_5", "convnext_tiny", "vit_b_16"]


# ViT-B/16 made for 64 x 64 images (16 tokens and the class token, not 196):
# the same modules and weights but the position embedding, a twelfth of the work
SUBSET_KWARGS = {"vit_b_16": {"image_size": 64}}


@pytest.mark.parametrize("name", SUBSET)
def test_built_spec_loads_the_state_dict_and_computes_the_same(name, tmp_path):
    size = SUBSET_KWARGS.get(name, {}).get("image_size") or SIZE.get(name, 64)
    check_same_function(name, (3, size, size),
                        export=name in ("resnet18", "shufflenet_v2_x0_5", "vit_b_16",
                                        "convnext_tiny"), tmp_path=tmp_path,
                        **SUBSET_KWARGS.get(name, {}))


@pytest.mark.slow   # the full sweep with real weights
@pytest.mark.parametrize("name", sorted(set(MODELS) - NO_KIND - set(SUBSET)))
def test_full_sweep_state_dict_and_outputs(name):
    size = SIZE.get(name, 64)
    check_same_function(name, (3, size, size), share=True)


# -- round trips and length -------------------------------------------------------


# every shipped spec in torchvision's form, and a few others (the lecture kinds'
# modules map back: multiply in fractalnet_cifar, reshape and spp below)
TORCHVISION_FORM = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet",
                    "inception_v3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                    "regnet_y_400mf", "resnet18", "resnet34", "resnet50", "resnet101",
                    "resnet152", "resnet50_v1", "resnext50_32x4d", "se_resnet50",
                    "shufflenet_v2_x1_0", "squeezenet1_0", "vgg16", "vit_b_16"]


# prelu_net_*, yolov1 and lenet5_lecun98: an activation with arguments (a
# channel-wise PReLU, leaky relu 0.1) or after a conv_table/subsample fuses
# back into its row through [defaults.KIND], so even the activation totals match
@pytest.mark.parametrize("name", TORCHVISION_FORM + ["fractalnet_cifar", "xception",
                                                     "prelu_net_a", "prelu_net_c", "yolov1",
                                                     "lenet5_lecun98", "inception_v4",
                                                     "inception_resnet_v2"])
def test_compiled_spec_imports_back_to_the_same_totals(name):
    spec = load(spec_path(name + ".toml"))
    report = analyze(spec)
    with importer.empty_weights():
        model = spec.build()
    again = analyze(archcalc.from_module(model, input=report.model.input))
    assert again.totals == report.totals


def test_resnet50_import_is_not_longer_than_twice_the_shipped_spec(imported):
    _, done = imported["resnet50"]
    shipped = sum(len(open(spec_path(f)).read().splitlines())
                  for f in ("resnet50.toml", "lib/resnet.toml"))
    lines = len(done.text.splitlines())
    assert lines <= 2 * shipped, (lines, shipped)
    assert "[blocks.bottleneck]" in done.text and 'conv = "4*C"' in done.text
    assert 'name = "{i + 1}"' in done.text and 'shortcut_name = "downsample"' in done.text


def test_lecture_modules_map_back():
    """multiply, reshape, spp and dropconnect of a compiled spec are rows again."""
    text = """[model]
name = "lec"
input = [3, 16, 16]
layers = [
  {name = "c", conv = 8, kernel = 3, padding = 1},
  {name = "spp", spp = [2, 1]},
  {name = "d", dropconnect = 12, p = 0.25},
  {name = "r", reshape = [3, 2, 2]},
  {name = "m", multiply = 0.5},
]
"""
    spec = loads(text)
    with importer.empty_weights():
        model = spec.build()
    again = archcalc.from_module(model, input=(3, 16, 16))
    rows = {r.name: [op.kind.name for op in r.ops] for r in analyze(again).rows[1:]}
    assert rows == {"c": ["conv"], "spp": ["spp"], "d": ["dropconnect"], "r": ["reshape"],
                    "m": ["multiply"]}, rows
    assert analyze(again).totals == analyze(spec).totals


def test_conv_norm_activation_is_one_row(imported):
    """torchvision's Conv2dNormActivation (modules 0, 1, 2 of one level) is one
    row with batch_norm and activation: it builds the same nn.Sequential."""
    _, done = imported["mobilenet_v2"]
    assert 'batch_norm = true, activation = "relu6"' in done.text


# -- the Python API --------------------------------------------------------------


def test_from_module_and_to_toml():
    model = tv.models.resnet18(num_classes=10)
    spec = archcalc.from_module(model, input=(3, 32, 32))
    assert spec.input == (3, 32, 32)
    text = spec.to_toml()
    again = loads(text)
    assert analyze(again).totals == analyze(spec).totals
    assert analyze(again).totals["params"] == sum(p.numel() for p in model.parameters())
    with pytest.raises(SpecError, match="torch.nn.Module"):
        archcalc.from_module("resnet18")
    with pytest.raises(SpecError, match="input takes"):
        archcalc.from_module(model, input=(3, 0, 32))


SHIPPED = sorted(os.path.relpath(p, SPECS) for p in glob.glob(os.path.join(SPECS, "**", "*.toml"),
                                                                recursive=True)
                 if os.sep + "lib" + os.sep not in p)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_spec_writes_back_to_the_same_spec(name):
    path = spec_path(name)
    spec = load(path)
    again = loads(spec.to_toml(), file=path)
    try:
        expected = analyze(spec)
    except SpecError:        # a spec that needs --set to be analyzed
        return
    assert analyze(again).totals == expected.totals


# -- user models: files, functions, opaque rows -----------------------------------


NET = '''
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.head(torch.flatten(x.mean((2, 3), keepdim=True), 1))


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.pad = nn.ZeroPad2d(1)

    def forward(self, x):
        return torch.cumsum(self.pad(self.conv(x)), 1)


def broken(**kwargs):
    raise ValueError("no such width")
'''


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


def run(*args, cwd=ROOT):
    """A real process (its stderr has no traceback, its exit status is real)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}   # this checkout's archcalc
    return subprocess.run([sys.executable, "-m", "archcalc", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env)


def cli(*args):
    """The same command in this process (torch is imported once: seconds per call
    less), as a CompletedProcess-like result."""
    from click.testing import CliRunner

    from archcalc.cli import main
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_import_a_file_with_kwargs(net_file, tmp_path):
    out = tmp_path / "net.toml"
    done = cli("import", f"{net_file}:Net", "--kwargs", '{"num_classes": 4, "width": 8}',
               "--input", "3x16x16", "-o", out)
    assert done.returncode == 0, done.stderr
    spec = load(str(out))
    assert spec.input == (3, 16, 16)
    text = out.read_text()
    assert '[blocks.block]' in text and 'name = "{i}"' in text
    model, _ = importer.load_target(f"{net_file}:Net", '{"num_classes": 4, "width": 8}')
    built = spec.build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert (built(x) - model.eval()(x)).abs().max().item() <= 1e-5


def test_unsupported_ops_fail_with_strict_and_import_measured_without(net_file):
    done = run("import", f"{net_file}:Odd", "--input", "3x8x8", "--strict")
    assert done.returncode == 1
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "cumsum: 1 call, at the model's forward" in line   # ZeroPad2d maps to pad
    # --allow-opaque: the default now, still accepted by older scripts
    done = cli("import", f"{net_file}:Odd", "--input", "3x8x8", "--allow-opaque")
    assert done.returncode == 0, done.stderr
    spec = loads(done.stdout)
    assert not spec.vars
    report = analyze(spec)
    assert report.totals["params"] == 3 * 8 * 9 + 8
    assert not report.free_symbols    # measured: numbers (a cumsum does no MACs)
    assert [r["name"] for r in report.to_dict()["layers"] if r.get("derived") is False] == \
        ["cumsum"]                    # the opaque row, marked in JSON
    with pytest.raises(SpecError, match="opaque row .* stands for code"):
        spec.build()


def test_table_imports_in_memory():
    done = cli("table", "torchvision.models:squeezenet1_1", "--input", "3x64x64",
               "--format", "json")
    assert done.returncode == 0, done.stderr
    import json
    data = json.loads(done.stdout)
    assert data["input"] == [3, 64, 64]
    assert data["totals"]["params"] == 1_235_496


@pytest.mark.parametrize("args, code, says", [
    (("torchvision.models:resnet18x",), 2, "did you mean resnet18"),
    (("no_such_module_xyz:Net",), 2, "no module named 'no_such_module_xyz'"),
    (("torchvision.models:resnet18", "--kwargs", "{num_classes: 3}"), 2, "JSON object"),
    (("torchvision.models:resnet18", "--kwargs", "[3]"), 2, "JSON object"),
    (("torchvision.models:resnet18", "--kwargs", '{"bogus": 1}'), 2, "does not take"),
    (("torchvision.models:resnet18", "--input", "3x2"), 2, "CxHxW"),
    (("no_such_file.py:Net",), 2, "no such file"),
    (("torchvision.models",), 2, "MODULE:FACTORY"),
    (("torchvision.models:resnet18", "--kwargs", '{"num_classes": -1}'), 1,
     "torchvision.models:resnet18(num_classes=-1) raised"),
])
def test_bad_input_is_one_line(args, code, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a real process for the first (no traceback reaches stderr), the others in this one
    done = run("import", *args, cwd=tmp_path) if "resnet18x" in args[0] else cli("import", *args)
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and says in done.stderr, done.stderr


def test_a_factory_that_raises_is_named(net_file):
    done = cli("import", f"{net_file}:broken")
    assert done.returncode == 1
    assert "broken() raised ValueError: no such width" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_import_help_has_examples():
    done = run("import", "--help")
    assert done.returncode == 0
    assert "archcalc import torchvision.models:resnet50 -o resnet50.toml" in done.stdout
    assert "--strict" in done.stdout and "--kwargs" in done.stdout
    assert "--allow-opaque" not in done.stdout     # a hidden no-op for older scripts


# -- the spec features the import relies on ------------------------------------------


FEATURES = '''
[model]
name = "features"
input = [3, 16, 16]
layers = [
  {name = "stem", conv = 8, kernel = 3, padding = 1},
  {name = "blk", layers = [
    {name = "add", flat = true, shortcut = "identity", residual = [
      {name = "c1", conv = 8, kernel = 3, padding = 1},
      {name = "ls", layer_scale = 0.5, flat = true},
    ]},
    {name = "add_1", flat = true, shortcut = "identity", residual = [{name = "c2", conv = 8, kernel = 1}]},
    {name = "r", relu = true},
  ]},
  {name = "down", residual = [
    {name = "c", conv = 16, kernel = 3, stride = 2, padding = 1, bias = false},
    {name = "bn", batch_norm = true},
  ], shortcut = "auto", shortcut_name = "downsample"},
  {name = "inc", concat = [
    {name = "branch1", layers = [{name = "conv", conv = 4, kernel = 1}]},
    {flat = true, layers = [{name = "p", maxpool = 3, stride = 1, padding = 1},
                            {name = "pc", conv = 4, kernel = 1}]},
  ]},
  {name = "seq", layers = [{name = "{i}", conv = 8, kernel = 1, repeat = 3}]},
  {name = "sh", layers = [
    {name = "concat", flat = true, split = [[], {name = "branch2", layers = [{name = "0", conv = 4, kernel = 1}]}]},
    {name = "cs", channel_shuffle = 2},
  ]},
  {name = "tok", tokens = true},
  {name = "class_token", class_token = true, flat = true},
  {name = "ln", layer_norm = true},
  {name = "pool", token_pool = "first"},
  {name = "fc", fc = 10},
]
'''


def test_names_and_levels_for_imports(tmp_path):
    spec = loads(FEATURES)
    rows = [r.name for r in analyze(spec).rows]
    assert rows[:8] == ["input", "stem", "blk.c1", "blk.ls", "blk.add", "blk.c2", "blk.add_1",
                        "blk.r"]
    assert "down.downsample" in rows and "seq.2" in rows and "inc.branch1.conv" in rows
    model = spec.build().eval()
    keys = set(model.state_dict())
    assert {"class_token", "blk.ls", "blk.c1.weight", "down.downsample.0.weight",
            "down.downsample.1.running_mean", "inc.branch1.conv.weight", "inc.pc.weight",
            "seq.2.weight", "sh.branch2.0.weight"} <= keys
    assert sum(p.numel() for p in model.parameters()) == analyze(spec).totals["params"]
    from archcalc.torch.export import to_python
    path = tmp_path / "features.py"
    path.write_text(to_python(model))
    module_spec = importlib.util.spec_from_file_location("exported_features", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    exported = module.Features().eval()
    exported.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(exported(x), model(x))


@pytest.mark.parametrize("layers, says", [
    ('{name = "a", relu = true, flat = true}', "flat = true puts"),
    ('{name = "x{i", conv = 3, kernel = 1}', "without its"),
    ('{name = "x{j}", conv = 3, kernel = 1, repeat = 2}', "unknown"),
    ('{name = "r", residual = [{conv = 3, kernel = 1}], shortcut_name = "a.b"}',
     "not a valid layer name"),
    ('{name = "c", concat = [{name = "b", flat = true, layers = []}, []]}', "not both"),
])
def test_feature_errors(layers, says):
    text = f'[model]\nname = "x"\ninput = [3, 8, 8]\nlayers = [{layers}]\n'
    with pytest.raises(SpecError, match=says):
        analyze(loads(text))


def test_names_may_hold_hyphens():
    """torchvision's RegNet names its blocks block1-0."""
    text = '[model]\nname = "x"\ninput = [3, 8, 8]\nlayers = [{name = "block1-0", conv = 4, kernel = 1}]\n'
    assert analyze(loads(text)).rows[1].name == "block1-0"
