"""`archcalc lint` on the shipped specs, with the real numbers."""
import json

from click.testing import CliRunner

import archcalc
from archcalc.cli import main
from archcalc.lint import lint
from conftest import spec_path


def findings(name, **options):
    return lint(archcalc.load(spec_path(name)).analyze(**options))


def run(*args):
    return CliRunner().invoke(main, ["lint", *args], env={"COLUMNS": "200"})


def test_vgg16_fc_layers_hold_most_params():
    found = findings("vgg16.toml")
    assert [f.rule for f in found] == ["fc-heavy"]
    f = found[0]
    assert f.layer == "fc6, fc7, fc8"
    assert "102,764,544 + 16,781,312 + 4,097,000 = 123,642,856 of 138,357,544 params = 89.4%" \
        in f.arithmetic
    assert "fc6: (7*7*512)*4096 + 4096 = 102,764,544" in f.arithmetic
    assert f.numbers == {"fc_params": 123_642_856, "params": 138_357_544, "largest": 102_764_544}


def test_clean_nets_have_no_findings():
    for name in ("resnet50.toml", "googlenet.toml", "densenet121.toml", "lenet5.toml"):
        assert findings(name) == [], name
    result = run(spec_path("resnet50.toml"), "--strict")
    assert result.exit_code == 0 and "no design smells found" in result.stdout


def test_dropped_input_and_strict():
    found = findings("vgg16.toml", input=(3, 225, 225))
    dropped = [f for f in found if f.rule == "dropped-input"]
    assert [f.layer for f in dropped] == ["pool1"]
    assert "(225 - 2 + 2*0)/2 + 1 = 112.50" in dropped[0].arithmetic
    result = run(spec_path("vgg16.toml"), "--input", "3x225x225", "--strict")
    assert result.exit_code == 1
    assert "dropped-input pool1" in result.stdout
    assert run(spec_path("vgg16.toml")).exit_code == 0   # findings without --strict: exit 0


def test_bias_before_batch_norm():
    found = [f for f in findings("deconvnet_unpool.toml") if f.rule == "bias-before-bn"]
    first = found[0]
    assert first.layer == "enc1_1" and first.numbers["redundant_params"] == 32
    assert "(3*3*3)*32 + 32 + 2*32" in first.arithmetic
    assert sum(f.numbers["redundant_params"] for f in found) == 32 * 4 + 64 * 4 + 21


def test_representational_bottleneck_of_pooling_first():
    """Inception-v3's Figure 9: pooling first squeezes 35x35x320 to 17x17x320."""
    found = findings("tricks/grid-reduction/pool_then_conv.toml")
    assert [f.rule for f in found] == ["representational-bottleneck"]
    assert "320 x 35 x 35 = 392,000 -> 320 x 17 x 17 = 92,480 (392,000/92,480 = 4.24 > 4)" \
        in found[0].arithmetic
    assert findings("tricks/grid-reduction/conv_then_pool.toml") == []
    assert findings("tricks/grid-reduction/parallel.toml") == []
    alexnet = [f.layer for f in findings("alexnet.toml") if f.rule == "representational-bottleneck"]
    assert alexnet == ["pool1", "pool2"]     # 290,400 -> 69,984 (4.15x); 186,624 -> 43,264


def test_expand_before_reduce(tmp_path):
    spec = tmp_path / "expand.toml"
    spec.write_text('[model]\nname = "expand"\ninput = [64, 56, 56]\nlayers = [\n'
                    '  {name = "expand", conv = 256, kernel = 1, bias = false},\n'
                    '  {name = "pool", maxpool = 2},\n  {name = "fc", fc = 10},\n]\n')
    data = json.loads(run(str(spec), "--format", "json").stdout)
    rules = {f["rule"]: f for f in data["findings"]}
    f = rules["expand-before-reduce"]
    assert f["layer"] == "expand"
    assert f["numbers"] == {"macs": 64 * 256 * 56 * 56, "macs_after_reduction": 64 * 256 * 28 * 28}
    assert "64*256*56*56 = 51,380,224 MACs here" in f["arithmetic"]


def test_json_lists_several_specs():
    result = run(spec_path("vgg16.toml"), spec_path("alexnet.toml"), "--format", "json")
    data = json.loads(result.stdout)
    assert [d["model"] for d in data] == ["VGG-16", "AlexNet"]
    assert data[1]["findings"][-1]["numbers"]["fc_params"] == 58_631_144
