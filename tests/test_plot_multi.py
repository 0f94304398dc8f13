"""`archcalc plot A B`: the nets side by side, one column of panels each, every
column labelled with its own net's layer names (ResNet-50's bottlenecks are
never drawn under VGG-16's "pool1"), read from the matplotlib figure itself
without rendering pixels; PNG and SVG files written by the suffix."""
import pytest
from click.testing import CliRunner

import archcalc
from archcalc.cli import main
from conftest import spec_path

pytest.importorskip("matplotlib")

VGG16_NAMES = ["input", "conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2",
               "conv3_1", "conv3_2", "conv3_3", "pool3", "conv4_1", "conv4_2", "conv4_3",
               "pool4", "conv5_1", "conv5_2", "conv5_3", "pool5", "fc6", "fc7", "fc8"]
# ResNet-50 past 60 rows: one bar per bottleneck (3 + 4 + 6 + 3) between its stem and head
RESNET50_BARS = (["input", "conv1", "maxpool"]
                 + [f"layer{s}.bottleneck{b}" for s, n in ((1, 3), (2, 4), (3, 6), (4, 3))
                    for b in range(1, n + 1)]
                 + ["avgpool", "fc"])


def _figure(*names, depth=None):
    from archcalc.render.plot import figure
    reports = [archcalc.load(spec_path(n)).analyze() for n in names]
    return figure(reports, depth)


def _ticks(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


@pytest.fixture(scope="module")
def vgg_and_resnet():
    import matplotlib.pyplot as plt
    fig, depth = _figure("vgg16.toml", "resnet50.toml")
    yield fig, depth
    plt.close(fig)


def test_each_net_has_its_own_column_under_its_own_names(vgg_and_resnet):
    fig, depth = vgg_and_resnet
    assert depth == 2
    assert len(fig.axes) == 4
    (vgg_top, resnet_top), (vgg_bottom, resnet_bottom) = fig.axes[0:2], fig.axes[2:4]
    assert _ticks(vgg_bottom) == VGG16_NAMES
    assert _ticks(resnet_bottom) == RESNET50_BARS
    assert "VGG-16" in vgg_top.get_title() and "ResNet-50" in resnet_top.get_title()
    assert "MACs" in resnet_bottom.get_title()
    # the columns sit side by side, VGG-16's to the left
    assert vgg_bottom.get_position().x1 <= resnet_bottom.get_position().x0


def test_the_bars_are_the_papers_numbers(vgg_and_resnet):
    fig, _ = vgg_and_resnet
    vgg_top, vgg_bottom = fig.axes[0], fig.axes[2]
    n = len(VGG16_NAMES)
    activations = [p.get_height() for p in vgg_top.patches[:n]]
    params = [p.get_height() for p in vgg_top.patches[n:2 * n]]
    macs = [p.get_height() for p in vgg_bottom.patches]
    conv1_1, fc6 = VGG16_NAMES.index("conv1_1"), VGG16_NAMES.index("fc6")
    assert activations[0] == 3 * 224 * 224                  # the input row
    assert activations[conv1_1] == 64 * 224 * 224           # the lecture's 224x224x64 = 3.2M
    assert params[conv1_1] == 3 * 3 * 3 * 64 + 64           # 1,792
    assert params[fc6] == 7 * 7 * 512 * 4096 + 4096         # 102,764,544
    assert macs[conv1_1] == 224 * 224 * 64 * 27
    assert sum(params) == 138_357_544
    # ResNet-50's column sums to torchvision's 25,557,032 params
    resnet_top = fig.axes[1]
    k = len(RESNET50_BARS)
    assert sum(p.get_height() for p in resnet_top.patches[k:2 * k]) == 25_557_032


def test_one_bar_is_as_wide_in_every_column_and_the_scales_are_shared(vgg_and_resnet):
    fig, _ = vgg_and_resnet
    width = fig.get_size_inches()[0]
    per_bar = [ax.get_position().width * width / len(_ticks(ax)) for ax in fig.axes[2:4]]
    assert per_bar[0] == pytest.approx(per_bar[1], rel=0.15)
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim()   # magnitudes compare across nets
    assert fig.axes[2].get_ylim() == fig.axes[3].get_ylim()
    assert fig.axes[0].get_yscale() == fig.axes[2].get_yscale() == "log"


def test_three_nets_three_columns():
    import matplotlib.pyplot as plt
    names = ("lenet5.toml", "alexnet.toml", "vgg16.toml")
    fig, depth = _figure(*names)
    try:
        assert depth is None and len(fig.axes) == 6
        for ax, name in zip(fig.axes[3:], names):
            assert _ticks(ax) == [r.name for r in archcalc.load(spec_path(name)).analyze().rows]
        assert _ticks(fig.axes[5]) == VGG16_NAMES
    finally:
        plt.close(fig)


def test_one_net_keeps_its_titles():
    import matplotlib.pyplot as plt
    from archcalc.render.plot import TITLES
    fig, _ = _figure("vgg16.toml")
    try:
        assert len(fig.axes) == 2
        assert [ax.get_title() for ax in fig.axes] == list(TITLES)
        assert _ticks(fig.axes[1]) == VGG16_NAMES
    finally:
        plt.close(fig)


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_the_cli_writes_both_nets_side_by_side(tmp_path, suffix):
    out = tmp_path / f"two.{suffix}"
    result = CliRunner().invoke(main, ["plot", spec_path("vgg16.toml"), spec_path("resnet50.toml"),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    if suffix == "png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    else:
        text = data.decode()
        assert text.lstrip().startswith("<?xml") and "<svg" in text
        # matplotlib keeps each text as a comment beside its glyphs
        assert "conv5_3" in text and "layer4.bottleneck3" in text
