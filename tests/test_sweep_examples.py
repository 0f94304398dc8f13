"""The worked examples of docs/sweep.md, each with its figures pinned: if a
figure here changes, the page is wrong too."""
import math

import pytest

from archcalc.sweep import sweep
from conftest import spec_path

EFFNET = spec_path("efficientnet_b0.toml")
COMPOUND = ["depth=1.2**phi", "width=1.1**phi", "res=round(224*1.15**phi)"]

# phi -> (resolution, params, MACs) of the paper's compound scaling from B0
COMPOUND_FIGURES = {
    0: (224, 5_288_548, 385_814_752),
    1: (258, 9_109_994, 992_629_472),
    2: (296, 12_233_232, 1_809_892_064),
    3: (341, 16_338_888, 3_250_498_024),
    4: (392, 25_940_032, 6_321_019_376),
    5: (451, 33_702_516, 11_372_628_704),
    6: (518, 45_477_208, 20_095_347_776),
    7: (596, 68_741_810, 39_663_901_696),
}
# torchvision's efficientnet_b1, b2, b7: (width, depth, crop) -> (params, MACs), as
# torchvision counts them (sum of numel; FlopCounterMode / 2 at that crop)
TORCHVISION = {
    1: ((1.0, 1.1, 240), 7_794_184, 686_802_832),
    2: ((1.1, 1.2, 288), 9_109_994, 1_087_529_456),
    7: ((2.0, 3.1, 600), 66_347_960, 37_745_884_192),
}


def test_efficientnet_compound_scaling():
    result = sweep(EFFNET, ["phi=0:7"], links=COMPOUND, input="3,res,res")
    got = {p.variables["phi"]: (p.input[1], p.metrics["params"], p.metrics["macs"])
           for p in result.points}
    assert got == COMPOUND_FIGURES
    # alpha * beta^2 * gamma^2 = 1.92: MACs about double per step of phi; the
    # rounding (ceil of the layers, make_divisible of the channels, round of
    # the resolution) makes phi = 7 cost 103x B0 rather than 2^7 = 128x
    assert 1.2 * 1.1 ** 2 * 1.15 ** 2 == pytest.approx(1.92, abs=0.005)
    ratio = got[7][2] / got[0][2]
    assert 100 < ratio < 128 and round(ratio, 1) == 102.8
    steps = [got[k + 1][2] / got[k][2] for k in range(7)]
    assert all(1.7 < s < 2.6 for s in steps)


@pytest.mark.parametrize("variant", sorted(TORCHVISION))
def test_torchvision_b_variants_round_differently(variant):
    (width, depth, crop), params, macs = TORCHVISION[variant]
    result = sweep(EFFNET, [f"width={width}"], sets={"depth": depth}, input=f"3,{crop},{crop}")
    p = result.points[0]
    assert (p.metrics["params"], p.metrics["macs"]) == (params, macs)


def test_factorization_crossings_follow_the_formula():
    # train memory (fp32, batch 1, Adam): one 5x5 = 8C(50C + HW), two 3x3 =
    # 12C(24C + HW): equal at HW = 28C; 7x7 = 8C(98C + HW) vs three 3x3 =
    # 16C(27C + HW): equal at HW = 44C
    for folder, spec, budget, k in (
            ("5x5-vs-3x3", "two_3x3", "8*C*(50*C + H*W)", 28),
            ("7x7-vs-3x3", "three_3x3", "8*C*(98*C + H*W)", 44)):
        result = sweep(spec_path(f"tricks/{folder}/{spec}.toml"), ["C=16,64,256", "H=1:128"],
                       links=["W=H"], fit=f"train_memory <= {budget}", maximize="H")
        answers = {a["fixed"]["C"]: a["value"] for a in result.fit["answers"]}
        assert answers == {c: math.isqrt(k * c) for c in (16, 64, 256)}
        assert all(a["method"].startswith("bisection") for a in result.fit["answers"])
    assert {16: 21, 64: 42, 256: 84} == {c: math.isqrt(28 * c) for c in (16, 64, 256)}


def test_widest_resnet_under_25m_params_and_4_gmacs():
    result = sweep(spec_path("resnet50_scaled.toml"), ["widen=0.5:2:0.01"],
                   fit="params <= 25e6 and macs <= 4e9", maximize="widen")
    answer = result.fit["answers"][0]
    assert answer["value"] == 0.98
    p = result.points[answer["point"]]
    assert (p.metrics["params"], p.metrics["macs"]) == (24_604_808, 3_977_030_848)
    # 0.99 is over already, and ResNet-50 itself (widen = 1): 25,557,032 params
    over = sweep(spec_path("resnet50_scaled.toml"), ["widen=0.99,1"])
    assert [q.metrics["params"] for q in over.points] == [25_101_704, 25_557_032]


def test_largest_batch_in_16_gb_of_bf16():
    result = sweep(spec_path("resnet50.toml"), ["batch=1:4096"], dtype="bf16",
                   fit="train_memory <= 16e9", maximize="batch")
    answer = result.fit["answers"][0]
    assert answer["value"] == 360 and answer["method"].startswith("bisection")
    assert len(result.points) <= 20                 # of 4,096 values
    at = {p.batch: p.metrics["train_memory_bytes"] for p in result.points}
    assert at[360] <= 16e9 < at[361]
