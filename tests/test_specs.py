"""Every shipped spec's published figures, pinned exactly."""
import pytest

from archcalc.analysis import analyze
from archcalc.spec.loader import load
from conftest import spec_path


def report(name, **kw):
    return analyze(load(spec_path(name)), **kw)


# Simonyan & Zisserman 2014, Table 2 (133, 133, 134, 138, 144 million) to the last digit
@pytest.mark.parametrize("name, params", [
    ("vgg11.toml", 132_863_336),
    ("vgg11_lrn.toml", 132_863_336),
    ("vgg13.toml", 133_047_848),
    ("vgg16_c.toml", 133_638_952),
    ("vgg16.toml", 138_357_544),
    ("vgg19.toml", 143_667_240),
])
def test_vgg_params(name, params):
    assert report(name).totals["params"] == params


# the lecture's VGG-16 table: (output size, memory, weights without biases) per row
VGG16_LECTURE = [
    ((3, 224, 224), 150_528, 0),
    ((64, 224, 224), 3_211_264, 1_728), ((64, 224, 224), 3_211_264, 36_864),
    ((64, 112, 112), 802_816, 0),
    ((128, 112, 112), 1_605_632, 73_728), ((128, 112, 112), 1_605_632, 147_456),
    ((128, 56, 56), 401_408, 0),
    ((256, 56, 56), 802_816, 294_912), ((256, 56, 56), 802_816, 589_824),
    ((256, 56, 56), 802_816, 589_824),
    ((256, 28, 28), 200_704, 0),
    ((512, 28, 28), 401_408, 1_179_648), ((512, 28, 28), 401_408, 2_359_296),
    ((512, 28, 28), 401_408, 2_359_296),
    ((512, 14, 14), 100_352, 0),
    ((512, 14, 14), 100_352, 2_359_296), ((512, 14, 14), 100_352, 2_359_296),
    ((512, 14, 14), 100_352, 2_359_296),
    ((512, 7, 7), 25_088, 0),
    ((4096,), 4096, 102_760_448), ((4096,), 4096, 16_777_216), ((1000,), 1000, 4_096_000),
]


def test_vgg16_reproduces_the_lecture_table_row_by_row():
    r = report("vgg16.toml")
    assert len(r.rows) == 22
    for row, (shape, memory, weights) in zip(r.rows, VGG16_LECTURE):
        assert row.output_shape == shape, row.name
        assert row.activations == memory, row.name
        biases = shape[0] if weights else 0  # the lecture counts weights only
        assert row.params == weights + biases, row.name
    t = r.totals
    assert t["activations"] == 15_237_608 == sum(m for _, m, _ in VGG16_LECTURE)
    assert t["activation_bytes"] == 60_950_432  # about 61 MB, not the lecture's 93 MB
    assert t["macs"] == 15_470_264_320          # about 15.47 G
    assert t["params"] == 138_357_544


def test_vgg16_batch_and_dtype_scale_bytes_only():
    r = report("vgg16.toml", batch=64, dtype="bf16")
    assert r.totals["activations"] == 15_237_608
    assert r.totals["activation_bytes"] == 15_237_608 * 2 * 64
    assert r.totals["param_bytes"] == 138_357_544 * 2


def test_alexnet_lecture_form():
    r = report("alexnet.toml")
    assert r.totals["params"] == 62_378_344
    sizes = [row.output_shape[1] for row in r.rows if len(row.output_shape) == 3][1:]
    assert sizes == [55, 27, 27, 27, 13, 13, 13, 13, 13, 6]
    per_layer = {row.name: row.params for row in r.rows if row.params}
    assert per_layer == {"conv1": 34_944, "conv2": 614_656, "conv3": 885_120,
                         "conv4": 1_327_488, "conv5": 884_992, "fc6": 37_752_832,
                         "fc7": 16_781_312, "fc8": 4_097_000}


def test_lenet5_lecture_form():
    r = report("lenet5.toml")
    assert r.totals["params"] == 61_706
    per_layer = [row.params for row in r.rows[1:]]
    assert per_layer == [156, 0, 2_416, 0, 48_120, 10_164, 850]
    assert [row.output_shape for row in r.rows] == [
        (1, 32, 32), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1),
        (84,), (10,)]


def test_lenet5_lecun98_connection_table():
    r = report("lenet5_lecun98.toml")
    rows = {row.name: row for row in r.rows}
    assert rows["C3"].params == 1_516          # 60 links x 25 weights + 16 biases
    assert rows["C3"].macs == 10 * 10 * 25 * 60
    assert rows["S2"].params == 12 and rows["S4"].params == 32  # coefficient + bias per map
    assert r.totals["params"] == 156 + 12 + 1_516 + 32 + 48_120 + 10_164 + 850


def test_zfnet_figure3_sizes():
    r = report("zfnet.toml")
    sizes = [row.output_shape[1] for row in r.rows if len(row.output_shape) == 3]
    assert sizes == [224, 110, 55, 55, 26, 13, 13, 13, 13, 13, 6]
    # 7*7*3*96 + 96 replaces AlexNet's 11*11*3*96 + 96
    assert r.totals["params"] == 62_378_344 - 34_944 + 14_208
    assert r.findings == []  # 110.5 leaves out padding only


def test_receptive_field_of_vgg16():
    r = report("vgg16.toml")
    rf = {row.name: row.receptive_field[0] for row in r.rows}
    # 3x3 stacks: two give 5, three give 7 (the lecture's point); pool5 sees 212 pixels
    assert rf["conv1_2"] == 5 and rf["conv3_3"] == 40 and rf["pool5"] == 212
    assert r.rows[18].jump == (32, 32)


def test_saved_activation_bytes_vgg16_rule():
    # conv inputs + max-pool inputs and int64 indices + fc inputs, each storage once
    r = report("vgg16.toml")
    convs = [row for row in r.rows if row.type == "conv+relu"]
    pools = [row for row in r.rows if row.type == "maxpool"]
    fcs = [row for row in r.rows if row.type.startswith("fc")]
    conv_outputs = sum(row.activations for row in convs)  # = inputs of the next layer
    expected = 4 * (150_528 + conv_outputs + sum(row.activations for row in pools)) \
        + 8 * sum(row.activations for row in pools) + 4 * sum(row.activations for row in fcs[:-1])
    assert r.totals["saved_activation_bytes"] == expected


@pytest.mark.parametrize("name", ["lenet5.toml", "lenet5_lecun98.toml", "alexnet.toml",
                                  "zfnet.toml", "vgg11.toml", "vgg11_lrn.toml", "vgg13.toml",
                                  "vgg16_c.toml", "vgg16.toml", "vgg19.toml"])
def test_every_spec_names_its_source(name):
    spec = load(spec_path(name))
    assert spec.source, f"{name} has no source in its [model] header"
