"""compare, trick, explain and plot: the lectures' design questions."""
import json
import os
from fractions import Fraction

import pytest
from click.testing import CliRunner

from archcalc import tricks
from archcalc.cli import main
from archcalc.compare import compare
from archcalc.spec.loader import load
from conftest import ROOT, spec_path

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def run(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.stderr
    return result.stdout


def trick(name, **bind):
    specs = [load(f) for f in tricks.spec_files(tricks.lookup(name))]
    return compare(specs, variables=bind or None)


def sympy_str(x):
    return str(x).replace(" ", "")


def test_5x5_vs_two_3x3():
    c = trick("5x5-vs-3x3")
    assert [sympy_str(v) for v in c.values["params"]] == ["25*C**2", "18*C**2"]
    assert sympy_str(c.ratio("params", 1)) == "18/25"
    assert c.values["receptive_field"] == [5, 5]
    n = trick("5x5-vs-3x3", C=64)
    assert n.values["params"] == [25 * 64 * 64, 18 * 64 * 64]
    assert n.ratio("params", 1) == Fraction(18, 25)


def test_7x7_vs_three_3x3():
    c = trick("7x7-vs-3x3")
    assert [sympy_str(v) for v in c.values["params"]] == ["49*C**2", "27*C**2"]
    assert [sympy_str(v) for v in c.values["macs"]] == ["49*C**2*H*W", "27*C**2*H*W"]
    assert sympy_str(c.ratio("params", 1)) == "27/49" == sympy_str(c.ratio("macs", 1))
    assert c.values["receptive_field"] == [7, 7]
    assert c.values["nonlinearities"] == [1, 3]
    n = trick("7x7-vs-3x3", C=64, H=56, W=56)
    assert n.values["macs"] == [49 * 56 * 56 * 64 * 64, 27 * 56 * 56 * 64 * 64]


def test_asymmetric_factorization():
    c = trick("3x3-vs-asym")
    assert [sympy_str(v) for v in c.values["params"]] == ["9*C**2", "6*C**2"]
    assert sympy_str(c.ratio("params", 1)) == "2/3"
    assert c.values["receptive_field"] == [3, 3]
    n = trick("nxn-vs-asym")
    assert [sympy_str(v) for v in n.values["params"]] == ["C**2*n**2", "2*C**2*n"]
    assert sympy_str(n.ratio("params", 1)) == "2/n"
    seven = trick("nxn-vs-asym", n=7, C=1)
    assert seven.values["params"] == [49, 14]


def test_bottleneck_saving():
    c = trick("bottleneck", C=256)
    assert c.values["params"] == [1_179_648, 69_632]  # ResNet's Figure 5 at 256 channels
    assert c.ratio("params", 1) == Fraction(17, 288)
    assert sympy_str(trick("bottleneck").ratio("params", 1)) == "17/288"


def test_inception_reductions_and_grid_reduction():
    c = trick("inception-1x1")
    assert c.values["params"] == [387_072, 163_328]
    assert c.values["macs"][1] == 128_049_152  # inception (3a): Table 1's 128M
    g = trick("grid-reduction")
    shapes = [r.rows[-1].output_shape for r in g.reports]
    assert shapes == [(640, 17, 17)] * 3
    conv_first, pool_first, parallel = g.values["macs"]
    assert conv_first == 9 * 320 * 640 * 35 * 35
    assert pool_first == 9 * 320 * 640 * 17 * 17
    assert parallel == 9 * 320 * 320 * 17 * 17 < pool_first < conv_first


def test_fc_vs_local_vs_conv_and_the_lectures_slip():
    c = trick("fc-vs-local-vs-conv")
    fc, local, conv = c.reports
    assert local.rows[-1].output_shape == (30, 28, 28)
    assert local.totals["params"] - 28 * 28 * 30 == 1_764_000      # weights; biases apart
    assert conv.totals["params"] == 30 * 75 + 30 == 2_280
    assert fc.totals["params"] == 3072 * 23_520 + 23_520
    out = run("trick", "fc-vs-local-vs-conv")
    assert "3 million" in out and "1,764,000" in out
    big = trick("fc-200x200")
    assert big.values["params"][0] == 200 * 200 * 40_000 + 40_000    # ~2B in the lecture: 1.6B
    assert big.reports[2].totals["params"] == 100 * 100 + 100         # 10K


def test_stride_vs_pool():
    c = trick("stride-vs-pool", C=64, H=56, W=56)
    assert c.values["params"][0] == c.values["params"][1]
    assert c.ratio("macs", 1) == Fraction(1, 4)


def test_trick_list_and_cli():
    out = run("trick", "--list")
    assert len(out.strip().splitlines()) == len(tricks.TRICKS)
    out = run("trick", "7x7-vs-3x3", "--channels", "64", "--size", "56")
    assert "27/49" in out and "[0.551x (27/49)]" in out
    data = json.loads(run("trick", "5x5-vs-3x3", "--format", "json"))
    assert data["figures"]["params"]["ratios"][1] == "18/25"


def test_compare_shows_the_resnet50_gap():
    out = run("compare", spec_path("resnet50.toml"), spec_path("resnet50_v1.toml"))
    assert "4,089,184,256" in out and "3,857,973,248" in out
    data = json.loads(run("compare", spec_path("resnet50.toml"), spec_path("resnet50_v1.toml"),
                          "--format", "json"))
    assert data["figures"]["params"]["values"] == [25_557_032, 25_557_032]
    assert data["figures"]["macs"]["ratios"][1] == pytest.approx(3_857_973_248 / 4_089_184_256)
    md = run("compare", spec_path("vgg16.toml"), spec_path("vgg19.toml"), "--format", "markdown")
    assert md.startswith("| figure | VGG-16 | VGG-19 |")
    csv = run("compare", spec_path("vgg16.toml"), spec_path("vgg19.toml"), "--format", "csv")
    assert csv.splitlines()[1].startswith("params,138357544,143667240,")


def test_explain_vgg16_conv3_1_is_stable():
    out = run("explain", spec_path("vgg16.toml"), "conv3_1").replace(ROOT + os.sep, "")
    with open(os.path.join(GOLDEN, "explain_vgg16_conv3_1.txt")) as fh:
        assert out == fh.read()
    assert "(56 - 3 + 2*1)/1 + 1 = 56" in out
    assert "(3*3*128)*256 + 256 = 295,168" in out


def test_explain_a_non_tiling_layer_and_unknown_names(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[model]\ninput = [3, 7, 7]\nlayers = [{name = "c", conv = 8, kernel = 3, stride = 3}]\n')
    out = run("explain", str(p), "c")
    assert "floor(2.33) = 2" in out and "does not tile its input" in out
    result = CliRunner().invoke(main, ["explain", spec_path("vgg16.toml"), "conv3_9"])
    assert result.exit_code == 2 and "did you mean 'conv3_3'" in result.stderr


def test_plot_has_the_expected_axes(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from archcalc.analysis import analyze
    from archcalc.render import plot as plotting
    captured = {}
    import matplotlib.pyplot as plt
    original = plt.close

    def keep(fig=None):
        captured["fig"] = fig
        return original(fig)
    plt.close = keep
    try:
        path = tmp_path / "vgg16.png"
        plotting.plot([analyze(load(spec_path("vgg16.toml")))], str(path))
    finally:
        plt.close = original
    assert path.stat().st_size > 20_000
    titles = [ax.get_title() for ax in captured["fig"].axes]
    assert titles == list(plotting.TITLES)
    assert "VGG-16: 138M params" in captured["fig"]._suptitle.get_text()
    out = tmp_path / "both.svg"
    result = CliRunner().invoke(main, ["plot", spec_path("vgg16.toml"), spec_path("vgg19.toml"),
                                       "-o", str(out)])
    assert result.exit_code == 0 and out.read_text().startswith("<?xml")


def test_sample_plot_is_shipped():
    assert os.path.getsize(os.path.join(ROOT, "examples", "vgg16.png")) > 20_000
