"""Graph specs (blocks, branches, residuals) against their papers and their
torchvision twins: parameters equal, MACs equal half of FlopCounterMode's
count (it counts 2 per multiply-add, conv and matmul only), fvcore within 1%."""
import re

import pytest

from archcalc.analysis import analyze, fold
from archcalc.spec.loader import load, loads
from conftest import spec_path

# published torchvision parameter counts (also read from torchvision below)
TWINS = {
    "resnet18": ("resnet18", 11_689_512, 224),
    "resnet34": ("resnet34", 21_797_672, 224),
    "resnet50": ("resnet50", 25_557_032, 224),
    "resnet101": ("resnet101", 44_549_160, 224),
    "resnet152": ("resnet152", 60_192_808, 224),
    "resnext50_32x4d": ("resnext50_32x4d", 25_028_904, 224),
    "densenet121": ("densenet121", 7_978_856, 224),
    "inception_v3": ("inception_v3", 23_834_568, 299),
}


def report(name, **kw):
    return analyze(load(spec_path(name + ".toml")), **kw)


@pytest.mark.parametrize("name", TWINS)
def test_params_equal_the_published_torchvision_counts(name):
    assert report(name).totals["params"] == TWINS[name][1]


def torchvision_model(name):
    tv = pytest.importorskip("torchvision")
    builder = getattr(tv.models, TWINS[name][0])
    if name == "inception_v3":
        return builder(weights=None, aux_logits=False, init_weights=False)
    return builder(weights=None)


@pytest.mark.parametrize("name", TWINS)
def test_twin_params_and_macs_against_torchvision(name):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):   # counting needs no weights: nothing allocated
        model = torchvision_model(name).eval()
    size = TWINS[name][2]
    r = report(name)
    assert r.totals["params"] == sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size, device="meta"))
    assert 2 * r.totals["macs"] == counter.get_total_flops()


def fvcore_counts(name):
    torch = pytest.importorskip("torch")
    fvcore = pytest.importorskip("fvcore.nn")
    model = torchvision_model(name).eval()
    size = TWINS[name][2]
    analysis = fvcore.FlopCountAnalysis(model, torch.zeros(1, 3, size, size))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis.total(), analysis.by_operator()


# fvcore traces real tensors at full size: ResNet-152 (the same blocks as
# ResNet-50, 11.5 G MACs) is slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50", pytest.param("resnet152",
                                  marks=pytest.mark.slow), "densenet121", "inception_v3"])
def test_twin_macs_against_fvcore(name):
    total, by_op = fvcore_counts(name)
    ours = report(name).totals["macs"]
    # fvcore's conv and linear counts are multiply-adds: exactly ours
    assert by_op["conv"] + by_op["linear"] == ours
    if name.startswith("resnet"):
        # its total adds batch norm and pooling: within 1% for the ResNets
        assert abs(total - ours) / total < 0.01, (total, ours)


# Szegedy et al. 2014, Table 1: ops in M = 10^6 and params in K = 1024 per Inception row
GOOGLENET_TABLE = {
    "inception_3a": (128, 159), "inception_3b": (304, 380), "inception_4a": (73, 364),
    "inception_4b": (88, 437), "inception_4c": (100, 463), "inception_4d": (119, 580),
    "inception_4e": (170, 840), "inception_5a": (54, 1072), "inception_5b": (71, 1388),
}


def test_googlenet_inception_rows_against_table1():
    r = report("googlenet")
    rows = {row.name: row for row in fold(r.rows, 1)}
    biases = {"inception_3a": 368, "inception_4e": 1024, "inception_5b": 1264}
    # every row's ops as printed (the table rounds some rows and truncates others:
    # 4a is 73.6M, printed 73; 4b is 87.9M, printed 88), but 5a: 51.1M, printed 54M
    for name, (paper_ops, _) in GOOGLENET_TABLE.items():
        if name != "inception_5a":
            assert abs(rows[name].macs / 1e6 - paper_ops) < 1, name
    assert rows["inception_5a"].macs == 51_079_168
    # the examples: 3a 159K / 128M, 4e 840K / 170M, 5b 1388K / 71M
    weights = {k: rows[k].params - b for k, b in biases.items()}
    assert weights["inception_3a"] // 1024 == 159
    assert weights["inception_4e"] == 867_328      # 847K from Table 1's own filter counts
    assert weights["inception_5b"] == 1_442_816    # 1409K, not the printed 1388K
    assert rows["inception_3a"].output_shape == (256, 28, 28)
    assert rows["inception_5b"].output_shape == (1024, 7, 7)
    # the spec says which printed figures do not add up
    notes = " ".join(load(spec_path("googlenet.toml")).extra["notes"])
    assert "840K" in notes and "1388K" in notes


def test_googlenet_receptive_field_takes_the_largest_branch():
    rows = {row.name: row for row in report("googlenet").rows}
    assert rows["pool2"].receptive_field == (27, 27) and rows["pool2"].jump == (8, 8)
    assert rows["inception_3a.b1.1x1"].receptive_field == (27, 27)
    assert rows["inception_3a.b2.3x3"].receptive_field == (43, 43)
    assert rows["inception_3a.b3.5x5"].receptive_field == (59, 59)
    assert rows["inception_3a.concat"].receptive_field == (59, 59)


def test_resnet_receptive_field_through_shortcuts():
    rows = {row.name: row for row in report("resnet18").rows}
    # the projection sees less than the body; the add takes the body's field
    assert rows["layer2.basic1.shortcut"].receptive_field == (43, 43)
    assert rows["layer2.basic1.conv2"].receptive_field == (67, 67)
    assert rows["layer2.basic1.add"].receptive_field == (67, 67)


def test_inception_v3_grid():
    r = report("inception_v3")
    grid = []
    for row in fold(r.rows, 1):
        if len(row.output_shape) == 3 and (not grid or grid[-1] != row.output_shape[1]):
            grid.append(row.output_shape[1])
    assert grid == [299, 149, 147, 73, 71, 35, 17, 8, 1]


def v1(name):
    """The paper's ResNet: the stride on the first 1x1 of each bottleneck."""
    text = open(spec_path(name + ".toml")).read().replace('"bottleneck_stage"', '"bottleneck_v1_stage"')
    return analyze(loads(text, file=spec_path(name + ".toml"))).totals["macs"]


def test_resnet_multiply_adds_as_the_paper_says():
    # He et al. Table 1: 1.8, 3.6, 3.8, 7.6, 11.3 x 10^9, printed to 0.1 G (the
    # paper truncates 3.66 and 3.86, rounds the others)
    paper = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6,
             "resnet152": 11.3}
    ours = {"resnet18": report("resnet18").totals["macs"],
            "resnet34": report("resnet34").totals["macs"],
            "resnet50": report("resnet50_v1").totals["macs"],
            "resnet101": v1("resnet101"), "resnet152": v1("resnet152")}
    for name, giga in paper.items():
        assert abs(ours[name] / 1e9 - giga) < 0.07, name
    assert ours == {"resnet18": 1_814_073_344, "resnet34": 3_663_761_408,
                    "resnet50": 3_857_973_248, "resnet101": 7_570_194_432,
                    "resnet152": 11_282_415_616}
    assert report("resnet50_v1").totals["macs"] == v1("resnet50")
    g = 1e9
    # torchvision's stride-on-3x3 form is why tools print 4.1 G for ResNet-50
    assert round(report("resnet50").totals["macs"] / g, 1) == 4.1
    assert report("resnet50").totals["params"] == report("resnet50_v1").totals["params"]


@pytest.mark.parametrize("name, params, published", [
    ("resnet110_cifar", 1_727_962, 1.7e6),
    ("preact_resnet164_cifar", 1_703_258, 1.7e6),
    ("nin_cifar", 966_986, 0.97e6),
    ("se_resnet50", 28_088_024, 28.1e6),
])
def test_more_published_param_counts(name, params, published):
    r = report(name)
    assert r.totals["params"] == params
    assert abs(params - published) / published < 0.02


def test_preact_resnet1001_params_and_the_papers_rounding():
    r = report("preact_resnet1001_cifar")
    bn = sum(row.params for row in r.rows if row.type == "batch_norm")
    assert r.totals["params"] == 10_327_706
    assert r.totals["params"] - bn == 10_178_490  # the paper's 10.2M: weights without BN affine
    assert len(r.rows) > 1000


def test_fcn32s_goes_back_to_the_input_size():
    r = report("fcn32s_vgg16")
    assert r.rows[-1].output_shape == (21, 224, 224)
    up = r.rows[-1]
    assert up.params == 21 * 21 * 64 * 64           # no bias
    assert up.macs == 21 * 7 * 7 * 21 * 64 * 64     # each input pixel scattered


def test_deconvnet_unpools_to_the_pooled_sizes():
    rows = {row.name: row for row in report("deconvnet_unpool").rows}
    assert rows["unpool2"].output_shape == rows["enc2_2"].output_shape
    assert rows["unpool1"].output_shape == rows["enc1_2"].output_shape
    assert rows["score"].output_shape == (21, 64, 64)


def test_json_rows_carry_their_path():
    from click.testing import CliRunner

    from archcalc.cli import main
    import json
    out = CliRunner().invoke(main, ["table", spec_path("googlenet.toml"), "--format", "json"]).stdout
    names = [row["name"] for row in json.loads(out)["layers"]]
    assert "inception_3a.b2.3x3_reduce" in names
    row = next(r for r in json.loads(out)["layers"] if r["name"] == "inception_3a.b2.3x3_reduce")
    assert row["path"] == ["inception_3a", "b2", "3x3_reduce"]
    folded = CliRunner().invoke(main, ["table", spec_path("googlenet.toml"), "--depth", "1"]).stdout
    assert re.search(r"inception_3a\s+│ block\s+│ 256 x 28 x 28", folded)
    assert "inception_3a > b2" not in folded
