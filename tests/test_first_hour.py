"""A newcomer's first hour (issue 21): silent traps and small frictions.

Shapes and counts are checked against PyTorch (nn.Conv2d's output, the
storages a real forward allocates, torchvision's models) and the papers
(GoogLeNet's 22 layers, VGG-16, ResNet-50), never against archcalc itself.
"""
import json

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import archcalc
from archcalc.analysis import analyze
from archcalc.cli import main
from archcalc.errors import MissingExtra
from archcalc.lint import lint
from archcalc.spec.defaults import fitted_padding
from archcalc.spec.loader import loads
from conftest import spec_path


def run(*args):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})


def write(tmp_path, text, name="net.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def torch_hw(conv: nn.Module, hw: int) -> tuple:
    """What PyTorch makes of an hw x hw map."""
    with torch.no_grad():
        return tuple(conv(torch.zeros(1, conv.in_channels, hw, hw)).shape[2:])


# -- item 1: a default padding never grows a map ------------------------------------

INCEPTION_WITH_DEFAULTS = """
[model]
name = "readme inception"
input = [192, 28, 28]

[defaults.conv]
padding = 1

[blocks.inception]
args = ["n1", "r3", "n3", "r5", "n5", "pp"]
concat = [
  [ {conv = "n1", kernel = 1} ],
  [ {conv = "r3", kernel = 1}, {conv = "n3", kernel = 3} ],
  [ {conv = "r5", kernel = 1}, {conv = "n5", kernel = 5, padding = 2} ],
  [ {maxpool = 3, stride = 1, padding = 1}, {conv = "pp", kernel = 1} ],
]

[[layers]]
block = "inception"
name = "inception_3a"
with = {n1 = 64, r3 = 96, n3 = 128, r5 = 16, n5 = 32, pp = 32}
"""


def test_readme_inception_with_a_default_padding_keeps_28(tmp_path):
    """The README's two snippets together: the 1x1 convs keep 28 x 28, as
    GoogLeNet's inception (3a) does, and its MACs are the paper's."""
    report = archcalc.load(write(tmp_path, INCEPTION_WITH_DEFAULTS)).analyze()
    shapes = {r.name: r.output_shape for r in report.rows[1:]}
    one_by_one = nn.Conv2d(192, 64, 1)           # what the block means: no padding
    assert torch_hw(one_by_one, 28) == (28, 28)
    assert all(shape[1:] == (28, 28) for shape in shapes.values()), shapes
    assert report.rows[-1].output_shape == (256, 28, 28)   # 64 + 128 + 32 + 32
    assert report.findings == []
    # GoogLeNet's Table 1, inception (3a): 128M ops (M = 10^6)
    assert round(report.totals["macs"] / 1e6) == 128


def test_inherited_padding_is_capped_per_axis_at_the_kernel_reach():
    text = """[model]
name = "pads"
input = [16, 8, 8]
layers = [
  {name = "k3", conv = 16},
  {name = "k1", conv = 16, kernel = 1},
  {name = "k1x3", conv = 16, kernel = [1, 3]},
  {name = "k5", conv = 16, kernel = 5},
]
[defaults.conv]
kernel = 3
padding = 1
"""
    rows = {r.name: r for r in analyze(loads(text)).rows}
    expected = {"k3": nn.Conv2d(16, 16, 3, padding=1), "k1": nn.Conv2d(16, 16, 1),
                "k1x3": nn.Conv2d(16, 16, (1, 3), padding=(0, 1)),
                "k5": nn.Conv2d(16, 16, 5, padding=1)}   # fits: shrinks, never grows
    hw = 8
    for name, conv in expected.items():
        assert rows[name].output_shape[1:] == torch_hw(conv, hw), name
        hw = torch_hw(conv, hw)[0]


def analyze_rows(spec):
    return {r.name: r for r in spec.analyze().rows}


def test_default_same_padding_works_at_any_stride():
    """`padding = "same"` as a default: a strided 3x3 gets 1 (224 -> 112, as
    nn.Conv2d(3, 64, 3, 2, 1)), a 1x1 gets 0, a 7x7 keeps 56."""
    text = """[model]
name = "same"
input = [3, 224, 224]
layers = [
  {name = "stem", conv = 64, kernel = 3, stride = 2},
  {name = "pw", conv = 32, kernel = 1, stride = 2},
  {name = "big", conv = 32, kernel = 7},
]
[defaults.conv]
padding = "same"
"""
    rows = analyze_rows(loads(text))
    assert rows["stem"].output_shape[1:] == torch_hw(nn.Conv2d(3, 64, 3, 2, 1), 224) == (112, 112)
    assert rows["pw"].output_shape[1:] == torch_hw(nn.Conv2d(64, 32, 1, 2), 112) == (56, 56)
    assert rows["big"].output_shape[1:] == torch_hw(nn.Conv2d(32, 32, 7, padding="same"), 56)


def test_fitted_padding_rule():
    assert fitted_padding(1, 1) == (0, 0)
    assert fitted_padding(1, 3) == 1                      # fits: unchanged
    assert fitted_padding(2, 3, dilation=2) == 2          # a dilated 3x3 reaches 2
    assert fitted_padding([3, 3], [1, 7]) == (0, 3)       # Inception-v3's 1x7
    assert fitted_padding("same", 3, stride=2) == (1, 1)
    assert fitted_padding("same", 4, stride=2) == "same"  # even: PyTorch refuses it
    assert fitted_padding("same", 3, stride=1) == "same"
    assert fitted_padding(1, "k") == 1                    # symbolic: left alone


CIFAR_TRAP = """[model]
name = "cifar"
input = [64, 8, 8]
layers = [
  {name = "conv", conv = 64, kernel = 3, padding = 1},
  {name = "reduce", conv = 32, kernel = 1, padding = 1},
]
"""


def test_a_layer_that_grows_its_map_is_a_warning_and_a_lint_finding(tmp_path):
    path = write(tmp_path, CIFAR_TRAP)
    assert torch_hw(nn.Conv2d(64, 32, 1, padding=1), 8) == (10, 10)   # the user's trap
    result = run("table", path)
    assert result.exit_code == 0
    assert "layer reduce: grows its map (64 x 8 x 8 in, 32 x 10 x 10 out)" in result.stderr
    assert "(8 - 1 + 2*1)/1 + 1 = 10" in result.stderr
    assert run("table", path, "--strict").exit_code == 2
    lint_json = json.loads(run("lint", path, "--format", "json").stdout)
    grows = [f for f in lint_json["findings"] if f["rule"] == "grows-map"]
    assert [f["layer"] for f in grows] == ["reduce"]
    assert grows[0]["arithmetic"] == "(N - F + 2P)/S + 1 = (8 - 1 + 2*1)/1 + 1 = 10"
    assert not [f for f in lint_json["findings"] if f["rule"] == "dropped-input"]


def test_grows_true_says_it_is_meant(tmp_path):
    path = write(tmp_path, CIFAR_TRAP.replace("padding = 1},\n]", "padding = 1, grows = true},\n]"))
    result = run("table", path, "--strict")
    assert result.exit_code == 0 and "grows its map" not in result.stderr
    bad = write(tmp_path, CIFAR_TRAP.replace("padding = 1},\n]", "padding = 1, grows = 1},\n]"),
                "bad.toml")
    result = run("table", bad)
    assert result.exit_code == 2 and "grows takes true or false" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_import_keeps_a_1x1_padding_that_a_default_would_not_give():
    """A module whose 1x1 really pads (a grown map) imports to a spec that
    keeps the padding on that row, though the 3x3s' padding 1 is the default."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Conv2d(8, 8, 1, padding=1))
    spec = archcalc.from_module(model, input=(3, 8, 8))
    text = spec.to_toml()
    assert "[defaults.conv]" in text and "padding = 1" in text
    rows = analyze_rows(loads(text))
    with torch.no_grad():
        assert rows["2"].output_shape == tuple(model(torch.zeros(1, 3, 8, 8)).shape[1:])


def test_shipped_specs_do_not_rely_on_an_inherited_1x1_padding():
    """Every shipped spec with a default padding writes padding = 0 on its 1x1s:
    their figures are the papers' still (VGG-16 C: 1x1 convs at 56, 28, 14)."""
    rows = analyze_rows(archcalc.load(spec_path("vgg16_c.toml")))
    assert rows["conv3_3"].output_shape == (256, 56, 56)
    yolo = analyze_rows(archcalc.load(spec_path("yolov1.toml")))
    assert all(r.output_shape[1:] == r.input_shape[1:] for r in yolo.values()
               if r.ops and r.ops[0].kind.name == "conv" and tuple(r.ops[0].args.kernel) == (1, 1))


# -- item 3: notes hold only for the configuration they were written for ------------

def test_float_set_drops_the_notes():
    with archcalc_torchvision() as tv:
        params = sum(p.numel() for p in tv.models.mobilenet_v2(width_mult=0.5).parameters())
    result = run("table", spec_path("mobilenet_v2.toml"), "--set", "width=0.5")
    assert result.exit_code == 0
    assert f"{params:,}" in result.stdout and params == 1_968_680
    assert "3,504,872" not in result.stdout and "notes omitted" in result.stdout
    own = run("table", spec_path("mobilenet_v2.toml"), "--set", "width=1.0")
    assert "3,504,872 params" in own.stdout and "notes omitted" not in own.stdout


class archcalc_torchvision:
    """torchvision with its modules built on the meta device (no weights)."""

    def __enter__(self):
        import torchvision
        from archcalc.torch.importer import empty_weights
        self.ctx = empty_weights()
        self.ctx.__enter__()
        return torchvision

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


# -- item 8: smaller frictions -------------------------------------------------------

def test_missing_extra_says_what_works_in_a_clone():
    text = str(MissingExtra("torch", "torch", "archcalc check"))
    assert 'pip install ".[torch]"' in text and "clone" in text
    assert 'pip install "archcalc[torch]"' in text


def test_load_finds_a_shipped_spec_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert archcalc.load("vgg16").analyze().totals["params"] == 138_357_544
    assert archcalc.load("specs/resnet50.toml").name == archcalc.load("resnet50").name
    with pytest.raises(archcalc.SpecError, match="no such file"):
        archcalc.load("no_such_net")


def test_lint_leaves_mobilenet_v2_inverted_residuals_alone():
    found = lint(archcalc.load(spec_path("mobilenet_v2.toml")).analyze())
    assert found == []
    assert not any("stride the 1x1" in f.message for f in found)


def test_compare_depth_is_the_papers_depth():
    result = run("compare", spec_path("googlenet.toml"), spec_path("vgg16.toml"),
                 spec_path("resnet50.toml"), "--format", "json")
    figures = json.loads(result.stdout)["figures"]
    assert figures["depth"]["values"] == [22, 16, 50]   # "22 layers deep", VGG-16, ResNet-50
    assert figures["weighted_layers"]["values"][0] == 58  # every conv of every branch
    rich = run("compare", spec_path("googlenet.toml"), spec_path("vgg16.toml"))
    assert "depth (weighted layers on the longest path)" in rich.stdout
    assert "weighted layers (all branches)" in rich.stdout


def test_split_error_names_the_split_line(tmp_path):
    path = write(tmp_path, """[model]
name = "s"
input = [16, 8, 8]

[[layers]]
conv = 16
kernel = 1

[[layers]]
split = [[], [{conv = 8, kernel = 1}]]
sizes = [8, 4]
""")
    result = run("table", path)
    assert result.exit_code == 2
    assert f"{path}:9: layer split1: sizes" in result.stderr


def test_defaults_typo_names_its_own_line(tmp_path):
    path = write(tmp_path, """[model]
name = "t"
input = [3, 32, 32]

[defaults.conv]
kernel = 3
paddin = 1

[[layers]]
conv = 16
""")
    result = run("table", path)
    assert result.exit_code == 2
    assert f"{path}:7: [defaults.conv]: conv has no argument 'paddin' (did you mean 'padding'" \
        in result.stderr


class SkipNet(nn.Module):
    """y + skip(y), with a functional relu that is not in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.skip = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = y + self.skip(y)
        return self.head(y).relu_()


def test_import_of_y_plus_skip_makes_skip_the_shortcut():
    torch.manual_seed(0)
    model = SkipNet().eval()
    spec = archcalc.from_module(model, input=(3, 16, 16))
    text = spec.to_toml()
    assert 'residual = [], shortcut_name = "skip", shortcut = [' in text
    built = spec.build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(built(x), model(x))


def test_functional_relu_imports_as_not_in_place():
    spec = archcalc.from_module(SkipNet().eval(), input=(3, 16, 16))
    rows = {r.name: r for r in spec.analyze().rows}
    assert rows["relu"].allocates                    # F.relu(x): a new tensor
    relu_rows = [r for r in spec.analyze().rows if r.type == "relu"]
    assert [r.allocates for r in relu_rows] == [True, False]   # x.relu_(): in place


def forward_storage_elements(model: nn.Module, x: torch.Tensor) -> int:
    """What a real forward allocates: the distinct storages of every leaf
    module's output and the input, in elements per sample."""
    storages = {x.untyped_storage().data_ptr(): x.untyped_storage().nbytes()}
    alive = []

    def hook(module, args, out):
        alive.append(out)
        storages[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return sum(storages.values()) // x.element_size() // x.shape[0]


def test_one_activation_count_for_resnet50_imported_or_shipped():
    """torchvision's resnet50 lists conv, bn and relu apart; the shipped spec
    fuses them in one row. One rule, one number: what the forward allocates."""
    import torchvision
    with archcalc_torchvision():
        on_meta = torchvision.models.resnet50()
    imported = archcalc.from_module(on_meta, input=(3, 224, 224)).analyze().totals
    shipped = archcalc.load(spec_path("resnet50.toml")).analyze().totals
    assert imported["activations"] == shipped["activations"]
    assert imported["params"] == shipped["params"] == 25_557_032
    real = torchvision.models.resnet50().eval()
    assert shipped["activations"] == forward_storage_elements(real, torch.zeros(1, 3, 224, 224))


def test_fused_rows_count_each_new_tensor():
    """conv + batch_norm + relu in one row allocates the conv's output and the
    batch norm's (the relu works in place): as nn.Sequential does."""
    text = """[model]
name = "fused"
input = [3, 16, 16]
layers = [{name = "c", conv = 8, kernel = 3, padding = 1, batch_norm = true, activation = "relu"}]
"""
    reference = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                              nn.ReLU(inplace=True)).eval()
    expected = forward_storage_elements(reference, torch.zeros(1, 3, 16, 16))
    assert analyze(loads(text)).totals["activations"] == expected == 3 * 256 + 2 * 8 * 256


def test_lenet5_activations_are_what_its_built_model_allocates():
    """conv + tanh rows: nn.Tanh is not in place, so each row holds two tensors."""
    spec = archcalc.load(spec_path("lenet5.toml"))
    model = spec.build().eval()
    x = torch.zeros(1, 1, 32, 32)
    assert spec.analyze().totals["activations"] == forward_storage_elements(model, x) == 15_626


@settings(max_examples=60)
@given(k=st.integers(1, 7), d=st.integers(1, 3), p=st.integers(0, 6), extra=st.integers(0, 9))
def test_a_fitted_default_padding_never_grows_the_map(k, d, p, extra):
    """Whatever the default padding, PyTorch's output of the fitted padding is
    at most the input; a padding that fits (2P <= D(F - 1)) is kept as is."""
    n = d * (k - 1) + 1 + extra
    fitted = fitted_padding(p, k, dilation=d)
    pad = fitted if isinstance(fitted, int) else fitted[0]
    x = torch.empty(1, 1, n, n, device="meta")
    w = torch.empty(1, 1, k, k, device="meta")
    out = F.conv2d(x, w, padding=pad, dilation=d).shape[-1]
    assert out <= n
    if 2 * p <= d * (k - 1):
        assert pad == p
    else:
        assert out == n - (d * (k - 1)) % 2     # the most the kernel can keep


@pytest.mark.parametrize("inplace", [True, False])
def test_activation_modules_import_with_their_inplace(inplace):
    """nn.ReLU() (PyTorch's default: not in place) in a conv-bn-relu Sequential:
    the imported total is what the module's forward allocates either way."""
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                        nn.BatchNorm2d(8), nn.ReLU(inplace=inplace))).eval()
    x = torch.zeros(1, 3, 16, 16)
    spec = archcalc.from_module(model, input=(3, 16, 16))
    assert spec.analyze().totals["activations"] == forward_storage_elements(model, x) \
        == 3 * 256 + (2 if inplace else 3) * 8 * 256
