"""`archcalc plot`: past 60 layers one bar per block (readable), SVG by the suffix."""
import pytest
from click.testing import CliRunner

import archcalc
from archcalc.analysis import fold
from archcalc.cli import main
from archcalc.render.plot import ROW_LIMIT, auto_depth
from conftest import spec_path


def test_auto_depth_picks_the_deepest_readable_level():
    resnet = archcalc.load(spec_path("resnet50.toml")).analyze().rows
    assert len(resnet) == 73 > ROW_LIMIT
    assert auto_depth([resnet]) == 2 and len(fold(resnet, 2)) == 21   # one bar per bottleneck
    vgg = archcalc.load(spec_path("vgg16.toml")).analyze().rows
    assert auto_depth([vgg]) is None                                   # 22 bars: as they are
    big = archcalc.load(spec_path("preact_resnet1001_cifar.toml")).analyze().rows
    assert len(fold(big, auto_depth([big]))) <= ROW_LIMIT


def test_resnet50_plot_folds_and_writes_svg(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r50.svg"
    result = CliRunner().invoke(main, ["plot", spec_path("resnet50.toml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "one bar per block at depth 2" in result.stderr
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "layer1.bottleneck1" in text


def test_layer_names_are_not_mathtext(tmp_path):
    pytest.importorskip("matplotlib")
    spec = tmp_path / "dollars.toml"
    spec.write_text('[model]\nname = "$\\\\frac{"\ninput = [3, 8, 8]\n'
                    'layers = [{name = "x", conv = 4, kernel = 3}, {name = "fc", fc = 2}]\n')
    result = CliRunner().invoke(main, ["plot", str(spec), "-o", str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.output
