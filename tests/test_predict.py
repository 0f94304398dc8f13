"""archcalc calibrate / predict / bench --predict: the prediction logic against
a synthetic profile whose rates are known, the JSON, the bounds and totals,
that predict never imports torch, a tiny-budget calibration read back, and
bench --predict on LeNet-5."""
import json
import math
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import archcalc
from archcalc import profiles
from archcalc.cli import main
from archcalc.errors import SpecError
from archcalc.layers.base import Cost, kinds
from archcalc.predict import (PROFILE_FORMAT, PROFILE_VERSION, Profile, loglog_time,
                              predict)
from conftest import ROOT, spec_path

OVERHEAD = 5e-6
CONV_RATE, CONV_BWD_RATE, GEMM_RATE = 100e9, 50e9, 40e9
NS_PER_ELEMENT = 1.0
OPS = ("relu", "sigmoid", "batch_norm", "add", "mul", "cat", "copy", "maxpool3s2",
       "maxpool2s2", "global_avgpool", "dropout")


def conv_point(k, s, p, cin, cout, n, groups=1, batch=8, rate=CONV_RATE, bwd=CONV_BWD_RATE):
    o = (n + 2 * p - k) // s + 1
    flops = 2 * batch * cout * o * o * cin // groups * k * k
    grad = cin > 4
    return {"kernel": [k, k], "stride": [s, s], "padding": [p, p], "cin": cin, "cout": cout,
            "size": [n, n], "groups": groups, "depthwise": groups > 1, "batch": batch,
            "forward_s": flops / rate + OVERHEAD,
            "backward_s": flops * (2 if grad else 1) / bwd + OVERHEAD, "input_grad": grad}


def op_points(ns=NS_PER_ELEMENT):
    return [{"shape": [e], "elements": e, "forward_s": e * ns * 1e-9 + OVERHEAD,
             "forward_train_s": 2 * e * ns * 1e-9 + OVERHEAD,
             "backward_s": 3 * e * ns * 1e-9 + OVERHEAD} for e in (10_000, 1_000_000)]


def synthetic(**changes) -> dict:
    """A profile with one rate per primitive: every conv at CONV_RATE, every GEMM
    at GEMM_RATE, every op at NS_PER_ELEMENT ns per element (x2 in training,
    x3 backward), plus OVERHEAD per call."""
    convs = [conv_point(3, 1, 1, 64, 64, 56), conv_point(1, 1, 0, 256, 64, 56),
             conv_point(7, 2, 3, 3, 64, 224), conv_point(3, 2, 1, 128, 256, 28),
             conv_point(5, 1, 2, 32, 96, 28), conv_point(11, 4, 2, 3, 64, 224),
             conv_point(1, 2, 0, 256, 512, 56)]
    linears = []
    for m, k, n in ((8, 4096, 4096), (1, 512, 1000), (32, 25088, 4096)):
        flops = 2 * m * k * n
        linears.append({"m": m, "k": k, "n": n, "forward_s": flops / GEMM_RATE + OVERHEAD,
                        "backward_s": 2 * flops / GEMM_RATE + OVERHEAD})
    data = {
        "format": PROFILE_FORMAT, "version": PROFILE_VERSION, "device": "cpu",
        "device_name": "synthetic CPU", "torch": "0", "date": "2024-01-01", "threads": 2,
        "overhead": {"forward_s": OVERHEAD, "forward_train_s": OVERHEAD,
                     "backward_s": OVERHEAD},
        "bandwidth": [{"bytes": 1e3, "bandwidth": 1e12}, {"bytes": 1e10, "bandwidth": 1e12}],
        "optimizer": [{"elements": 1, "step_s": 1e-6}, {"elements": 1e6, "step_s": 1e-3}],
        "peak": {"fp32": {"flops_per_s": 2e11}},
        "tables": {"fp32": {"conv": convs, "linear": linears,
                            "ops": {name: op_points() for name in OPS}}},
    }
    data.update(changes)
    return data


def write_spec(tmp_path, text, name="net.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


ONE_CONV = """
[model]
name = "one conv"
input = [64, 56, 56]
layers = [{conv = 64, kernel = 3, padding = 1}]
"""


def test_conv_time_is_flops_over_rate_plus_overhead(tmp_path):
    spec = archcalc.load(write_spec(tmp_path, ONE_CONV))
    p, = predict(spec, Profile(synthetic()), batches=[8])
    flops = 2 * 8 * 64 * 56 * 56 * 64 * 9
    assert p.forward_ms == pytest.approx((flops / CONV_RATE + OVERHEAD) * 1e3, rel=1e-6)
    assert p.step_ms == pytest.approx(p.forward_ms) and p.backward_ms == 0
    assert p.layers[0].bound == "compute"
    assert p.samples_per_s == pytest.approx(8 / p.step_ms * 1e3)


def test_train_step_adds_backward_and_optimizer(tmp_path):
    spec = archcalc.load(write_spec(tmp_path, ONE_CONV))
    p, = predict(spec, Profile(synthetic()), batches=[8], mode="train")
    flops = 2 * 8 * 64 * 56 * 56 * 64 * 9
    # the first weighted layer computes no input gradient: half the backward FLOPs
    assert p.backward_ms == pytest.approx((flops / CONV_BWD_RATE + OVERHEAD) * 1e3, rel=1e-6)
    weights, bias = 64 * 64 * 9, 64
    optimizer = sum(loglog_time([(1, 1e-6), (1e6, 1e-3)], n) for n in (weights, bias))
    assert p.optimizer_ms == pytest.approx(optimizer * 1e3, rel=1e-6)
    assert p.step_ms == pytest.approx(p.forward_ms + p.backward_ms + p.optimizer_ms
                                      + p.other_ms)


def test_rates_interpolate_between_calibrated_shapes(tmp_path):
    """Two calibrations of one shape at batch 1 and 16: batch 4 lies halfway in
    log2(M), so its rate is the geometric mean."""
    data = synthetic()
    data["tables"]["fp32"]["conv"] = [conv_point(3, 1, 1, 64, 64, 56, batch=1, rate=25e9),
                                      conv_point(3, 1, 1, 64, 64, 56, batch=16, rate=100e9)]
    spec = archcalc.load(write_spec(tmp_path, ONE_CONV))
    p, = predict(spec, Profile(data), batches=[4])
    flops = 2 * 4 * 64 * 56 * 56 * 64 * 9
    assert p.forward_ms == pytest.approx((flops / 50e9 + OVERHEAD) * 1e3, rel=1e-6)


def test_an_op_whose_data_fit_the_l2_pays_the_far_bandwidth_in_a_network(tmp_path):
    """Calibrated alone, an op keeps its data in the L2; in a network it reads
    and writes it at the bandwidth of the largest working set calibrated. The
    profile's L2 size turns that on; a read larger than the L2, a profile
    without the size, or a GPU (overlap) leave the time as it was."""
    text = """
[model]
name = "conv relu"
input = [16, 32, 32]
layers = [{conv = 16, kernel = 3, padding = 1}, {relu = true}]
"""
    spec = archcalc.load(write_spec(tmp_path, text))
    near, far = 100e9, 10e9
    bandwidth = [{"bytes": 1e3, "bandwidth": near}, {"bytes": 1e6, "bandwidth": near},
                 {"bytes": 1e8, "bandwidth": far}]
    plain = Profile(synthetic(bandwidth=bandwidth))
    cached = Profile(synthetic(bandwidth=bandwidth, cache={"l2_bytes": 2 ** 21}))
    elements = 8 * 16 * 32 * 32                      # 131072: 512 KiB read, 512 KiB written
    nbytes = 2 * elements * 4
    extra = nbytes / far - nbytes / cached.bandwidth(nbytes)
    assert extra > 0
    base, = predict(spec, plain, batches=[8])
    p, = predict(spec, cached, batches=[8])
    assert p.layers[1].type == "relu"
    assert p.layers[1].forward_ms == pytest.approx(base.layers[1].forward_ms + extra * 1e3,
                                                   rel=1e-6)
    assert p.layers[1].memory_ms > base.layers[1].memory_ms
    assert p.layers[0].forward_ms > base.layers[0].forward_ms   # the conv's reads fit too
    base, = predict(spec, plain, batches=[8], mode="train")
    p, = predict(spec, cached, batches=[8], mode="train")
    assert p.layers[1].forward_ms == pytest.approx(base.layers[1].forward_ms + extra * 1e3,
                                                   rel=1e-6)
    assert p.layers[1].backward_ms == pytest.approx(base.layers[1].backward_ms
                                                    + 2 * extra * 1e3, rel=1e-6)
    # reads larger than the L2: streamed in the calibration too
    small_l2 = Profile(synthetic(bandwidth=bandwidth, cache={"l2_bytes": 2 ** 18}))
    base, = predict(spec, plain, batches=[8])
    p, = predict(spec, small_l2, batches=[8])
    assert p.forward_ms == pytest.approx(base.forward_ms, rel=1e-9)
    # a GPU overlaps: no such term
    p, = predict(spec, Profile(synthetic(bandwidth=bandwidth, device="cuda",
                                         cache={"l2_bytes": 2 ** 21})), batches=[8])
    q, = predict(spec, Profile(synthetic(bandwidth=bandwidth, device="cuda")), batches=[8])
    assert p.forward_ms == pytest.approx(q.forward_ms, rel=1e-9)


def test_op_curves_interpolate_in_log_log_and_scale_past_the_end():
    points = [(1e4, 1e-5), (1e6, 1e-3)]
    assert loglog_time(points, 1e5) == pytest.approx(1e-4)
    assert loglog_time(points, 4e6) == pytest.approx(4e-3)        # bandwidth-bound past it
    assert loglog_time(points, 10) == pytest.approx(1e-5)         # overhead-bound below it


def test_bounds_memory_and_overhead(tmp_path):
    text = """
[model]
name = "bounds"
input = [25088]
layers = [{fc = 4096}, {relu = true}]
"""
    data = synthetic(bandwidth=[{"bytes": 1e3, "bandwidth": 1e9}, {"bytes": 1e10, "bandwidth": 1e9}])
    data["tables"]["fp32"]["linear"] = [{"m": 1, "k": 25088, "n": 4096, "forward_s": 1e-6,
                                         "backward_s": 2e-6}]
    p, = predict(archcalc.load(write_spec(tmp_path, text)), Profile(data), batches=[1])
    fc, relu = p.layers
    assert fc.bound == "memory"   # 411 MB of weights at 1 GB/s, whatever the GEMM rate
    assert fc.forward_ms == pytest.approx(((4096 * 25088 + 25088 + 4096) * 4 / 1e9
                                           + OVERHEAD) * 1e3, rel=1e-6)
    assert relu.bound == "overhead"   # 4096 elements: the call costs more than the work


def test_every_row_has_a_time_and_the_totals_add_up():
    spec = archcalc.load(spec_path("resnet18.toml"))
    p, = predict(spec, Profile(synthetic()), batches=[8], mode="train")
    assert len(p.layers) == len(spec.analyze().rows) - 1
    assert all(layer.forward_ms > 0 and layer.backward_ms > 0 for layer in p.layers)
    assert {layer.bound for layer in p.layers} <= {"compute", "memory", "overhead"}
    assert p.forward_ms == pytest.approx(sum(layer.forward_ms for layer in p.layers))
    assert sum(p.bound_ms.values()) == pytest.approx(p.forward_ms + p.backward_ms)
    # the convolutions carry most of the time
    convs = sum(layer.total_ms for layer in p.layers if layer.type.startswith("conv"))
    assert convs > 0.5 * (p.forward_ms + p.backward_ms)


def test_every_kind_runs_primitives_a_profile_rates():
    torch_calibrate = pytest.importorskip("archcalc.torch.calibrate")
    known = set(torch_calibrate._ops()) | {"conv", "linear", "view"}
    for spec in ("resnet18", "googlenet", "densenet121", "alexnet", "vit_b_16", "se_resnet50",
                 "lenet5_lecun98", "nin_cifar", "fcn32s_vgg16", "deconvnet_unpool",
                 "inception_v3", "resnext50_32x4d", "preact_resnet164_cifar"):
        report = archcalc.load(spec_path(spec + ".toml")).analyze()
        from archcalc.predict import Predictor
        predictor = Predictor(Profile(synthetic()), "inference")
        for row in report.rows[1:]:
            for _, cost, _ in predictor.row_costs(row):
                assert isinstance(cost, Cost)
                assert cost.primitive in known, (spec, row.name, cost.primitive)


def test_a_missing_op_is_rated_as_its_relative_and_said(tmp_path):
    data = synthetic()
    del data["tables"]["fp32"]["ops"]["sigmoid"]
    text = """
[model]
name = "tanh net"
input = [8, 32, 32]
layers = [{conv = 8, kernel = 3, activation = "tanh"}]
"""
    p, = predict(archcalc.load(write_spec(tmp_path, text)), Profile(data), batches=[2])
    assert any("'sigmoid' is not in the profile: rated as 'relu'" in n for n in p.notes)


def test_amp_needs_a_table_of_that_dtype():
    spec = archcalc.load(spec_path("lenet5.toml"))
    with pytest.raises(SpecError, match="no bf16 table"):
        predict(spec, Profile(synthetic()), amp="bf16")


def test_bad_profiles_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    old = tmp_path / "old.json"
    old.write_text(json.dumps(synthetic(version=0)))
    for path, message in ((bad, "not an archcalc device profile"), (old, "version 0"),
                          (tmp_path / "none.json", "no such profile")):
        result = CliRunner().invoke(main, ["predict", spec_path("lenet5.toml"),
                                           "--profile", str(path)])
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "Traceback" not in result.stderr


def test_malformed_profiles_and_bad_batches_exit_2(tmp_path):
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(synthetic())[:200])
    wrong_types = tmp_path / "types.json"
    wrong_types.write_text(json.dumps(synthetic(tables=[1, 2])))
    no_overhead = tmp_path / "no_overhead.json"
    data = synthetic()
    del data["overhead"]
    no_overhead.write_text(json.dumps(data))
    nan = tmp_path / "nan.json"
    data = synthetic()
    data["tables"]["fp32"]["conv"][0]["forward_s"] = float("nan")
    nan.write_text(json.dumps(data))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(synthetic()))
    cases = [(["--profile", str(truncated)], "not a readable profile"),
             (["--profile", str(wrong_types)], "field tables: must be an object"),
             (["--profile", str(no_overhead)], "field overhead: missing"),
             (["--profile", str(nan)], "must be a finite number"),
             (["--profile", str(tmp_path)], "is a directory, not a device profile"),
             (["--profile", str(good), "--batch", "0"], "--batch values must be positive"),
             (["--profile", str(good), "--batch", "8,x"], "--batch takes a number"),
             (["--profile", str(good), "--mode", "sleep"], "--mode"),
             (["--profile", str(good), "--set", "X"], "NAME=VALUE")]
    for args, message in cases:
        result = CliRunner().invoke(main, ["predict", spec_path("lenet5.toml"), *args])
        assert result.exit_code == 2, (args, result.output)
        err = result.stderr.strip()
        assert message in err and "Traceback" not in err, (args, err)
        assert len(err.splitlines()) == 1, (args, err)


def test_a_kind_without_a_cost_model_is_named(tmp_path):
    from archcalc.layers.base import Kind
    from archcalc.predict import Predictor
    for kind in set(kinds().values()):   # every registered kind states its own cost
        owner = next(c for c in type(kind).__mro__ if "cost" in c.__dict__)
        assert owner is not Kind, kind.name
    spec = archcalc.load(write_spec(tmp_path, ONE_CONV))
    report = spec.analyze(batch=2)
    row = report.rows[1]
    op = row.ops[0]

    class Mystery(type(op.kind)):
        name = "mystery"
        cost = Kind.cost
    from dataclasses import replace
    odd = replace(row, ops=(replace(op, kind=Mystery()),))
    with pytest.raises(SpecError, match="'mystery' has no cost model: archcalc predict "
                                        "cannot predict its time"):
        Predictor(Profile(synthetic()), "inference").row_costs(odd)


def test_predict_help_has_examples():
    result = CliRunner().invoke(main, ["predict", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "--format json" in result.stdout
    assert "--profile" in result.stdout and "torch is not needed" in result.stdout


def test_predict_json(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(synthetic()))
    result = CliRunner().invoke(main, ["predict", spec_path("resnet18.toml"), "--profile",
                                       str(profile), "--batch", "1,8", "--mode", "train",
                                       "--format", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "ResNet-18" and data["mode"] == "train"
    assert data["profile"]["device_name"] == "synthetic CPU"
    assert [r["batch"] for r in data["results"]] == [1, 8]
    for r in data["results"]:
        assert r["step_ms"] == pytest.approx(r["forward_ms"] + r["backward_ms"]
                                             + r["optimizer_ms"] + r["other_ms"])
        assert r["samples_per_s"] == pytest.approx(r["batch"] / r["step_ms"] * 1e3)
        assert r["forward_ms"] == pytest.approx(sum(l["forward_ms"] for l in r["layers"]))
        assert {l["bound"] for l in r["layers"]} <= {"compute", "memory", "overhead"}
        assert r["layers"][0]["name"] == "conv1"
    assert data["results"][1]["step_ms"] > data["results"][0]["step_ms"]
    # the rich output: one per-layer table per batch and the totals
    result = CliRunner().invoke(main, ["predict", spec_path("resnet18.toml"), "--profile",
                                       str(profile), "--batch", "8", "--summary"])
    assert result.exit_code == 0 and "samples/s" in result.stdout
    assert "layer1 > basic1 > conv1" not in result.stdout


def test_predict_csv_and_markdown(tmp_path):
    import csv
    import io
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(synthetic()))
    args = ["predict", spec_path("resnet18.toml"), "--profile", str(profile), "--batch", "1,8"]
    result = CliRunner().invoke(main, [*args, "--format", "json"])
    data = json.loads(result.stdout)
    result = CliRunner().invoke(main, [*args, "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["batch", "index", "layer", "kind", "forward_ms", "backward_ms", "bound",
                       "flops"]
    layers = [r for r in rows[1:] if r[0] in ("1", "8")]
    assert len(layers) == sum(len(r["layers"]) for r in data["results"])
    first = data["results"][0]["layers"][0]
    assert layers[0][2] == first["name"] == "conv1"
    assert float(layers[0][4]) == pytest.approx(first["forward_ms"], rel=1e-3)
    result = CliRunner().invoke(main, [*args, "--format", "markdown", "--summary"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| batch | mode | dtype | step_ms |")
    assert lines[2].startswith("| 1 | inference | fp32 | ")
    assert lines[3].startswith("| 8 | inference | fp32 | ")


def test_predict_does_not_import_torch(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(synthetic()))
    code = ("import sys\nfrom archcalc.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('TORCH', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, "predict", spec_path("googlenet.toml"),
                           "--profile", str(profile), "--batch", "8", "--mode", "train",
                           "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("TORCH False")


def test_shipped_profile_predicts_every_shipped_spec():
    name = profiles.default("cpu")
    assert name, profiles.names()
    data = json.load(open(profiles.resolve(name)))
    assert data["format"] == PROFILE_FORMAT and data["version"] == PROFILE_VERSION
    assert {"device_name", "torch", "date", "threads", "host"} <= set(data)
    profile = Profile(data)
    from archcalc import bundled
    for spec in bundled.names():
        model = archcalc.load(spec_path(spec + ".toml"))
        if model.analyze().symbolic:
            continue
        for mode in ("inference", "train"):
            p, = predict(model, profile, batches=[2], mode=mode)
            assert p.step_ms > 0 and math.isfinite(p.step_ms), spec
            assert not [n for n in p.notes if "not in the profile" in n], (spec, p.notes)


torch = pytest.importorskip("torch")


def test_calibrate_with_a_tiny_budget_makes_a_profile_predict_reads(tmp_path):
    out = tmp_path / "quick.json"
    result = CliRunner().invoke(main, ["calibrate", "--quick", "--budget-s", "2",
                                       "--no-compile", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["format"] == PROFILE_FORMAT and data["device"] == "cpu"
    assert data["torch"] == torch.__version__ and data["quick"] is True
    assert data["tables"]["fp32"]["conv"], "the first conv class is always measured"
    assert data["peak"]["fp32"]["flops_per_s"] > 0
    assert isinstance(data["cache"], dict)   # the L2 size where sysfs has it
    if os.path.exists("/sys/devices/system/cpu/cpu0/cache/index2/size"):
        assert data["cache"]["l2_bytes"] > 0
    result = CliRunner().invoke(main, ["predict", spec_path("lenet5.toml"), "--profile",
                                       str(out), "--batch", "8", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["step_ms"] > 0


def test_bench_predict_puts_predicted_beside_measured(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(synthetic()))
    result = CliRunner().invoke(main, ["bench", spec_path("lenet5.toml"), "--batch", "4",
                                       "--steps", "2", "--warmup", "1", "--mode", "train",
                                       "--predict", str(profile), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    r = json.loads(result.stdout)["results"][0]
    keys = list(r)
    assert keys[keys.index("latency_ms") + 1] == "predicted_ms"
    assert r["predicted_error"] == pytest.approx((r["predicted_ms"] - r["latency_ms"])
                                                 / r["latency_ms"])
    names = [layer["name"] for layer in r["layers"]]
    assert names[:3] == ["C1", "S2", "C3"]
    for layer in r["layers"]:
        assert layer["predicted_ms"] > 0 and layer["predicted_backward_ms"] > 0
        assert layer["bound"] in ("compute", "memory", "overhead")
        assert "roofline_ms" in layer
    result = CliRunner().invoke(main, ["bench", spec_path("lenet5.toml"), "--batch", "4",
                                       "--steps", "2", "--warmup", "1",
                                       "--predict", str(profile)])
    assert result.exit_code == 0, result.stderr
    assert "predicted (ms)" in result.stdout and "total (these layers)" in result.stdout


def test_a_measured_peak_bounds_the_roofline():
    from archcalc.torch.devices import Peak
    peak = Peak("x", {"fp32": 1.0}, 0.01, curve=((1e5, 2e11), (1e7, 1e11), (1e9, 1e10)))
    assert peak.bandwidth_at(1e5) == 2e11          # cache-resident: the cache's bandwidth
    assert peak.bandwidth_at(1e8) == 1e10          # past the caches: memory's
    assert peak.bandwidth_at(1e12) == 1e10
    assert Peak("y", {"fp32": 1.0}, 0.5).bandwidth_at(1e6) == 0.5e12
