"""Calibrate's coverage and trust (issue 21 item 5): the kinds of point share
a table's budget so none is left empty (a quick run under load once measured
10 convs, 0 GEMMs and 0 ops); each table records what it planned; a profile
measured under load or with contradictory numbers says so; predict warns
(one line per issue) and --strict refuses. Fake clocks and fake
measurements: nothing here runs for minutes."""
import copy
import json
import os

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import archcalc
from archcalc import profiles
from archcalc.cli import main
from archcalc.errors import SpecError
from archcalc.predict import Profile, predict
from archcalc.profiles.schedule import MINIMUM, SHARES, run_fair, spread_order
from archcalc.profiles.trust import MIN_POINTS, assess_calibration
from conftest import spec_path

with open(profiles.resolve("cpu-xeon-1t"), encoding="utf-8") as fh:
    SHIPPED = json.load(fh)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def fake_run(durations, stop, planned):
    """run_fair over planned[kind] jobs of each kind, each taking
    durations[kind] on a fake clock; returns (coverage, time per kind)."""
    clock = FakeClock()
    spent = dict.fromkeys(SHARES, 0.0)
    jobs = [(kind, i) for kind, n in planned.items() for i in range(n)]

    def measure(kind, payload):
        clock.t += durations[kind]
        spent[kind] += durations[kind]
        return True
    return run_fair(jobs, measure, clock, stop), spent


def test_slow_convs_do_not_starve_gemms_and_ops():
    """The loaded quick run: a conv takes 4 s, the table's budget 30 s. Before,
    the convs came first and took it all (10 convs, 0 GEMMs, 0 ops)."""
    coverage, spent = fake_run({"conv": 4.0, "linear": 0.05, "op": 0.1}, 30.0,
                               {"conv": 10, "linear": 11, "op": 28})
    measured = coverage["measured"]
    # GEMMs and ops take 11 * 0.05 + 28 * 0.1 = 3.35 s in all; a conv starts while
    # the clock is under 30 s: the 7th at 6 * 4 + 3.35 = 27.35 s, the 8th would at 31.35
    assert measured == {"conv": 7, "linear": 11, "ops": 28}, measured
    assert coverage["planned"] == {"conv": 10, "linear": 11, "ops": 28}
    assert coverage["skipped"] == 3
    # the convs had their share, and the rest of what the others left
    assert spent["conv"] >= SHARES["conv"] * 30 - 4.0


def test_a_budget_spent_before_the_table_still_measures_the_minimum():
    coverage, _ = fake_run({"conv": 1.0, "linear": 1.0, "op": 1.0}, -1.0,
                           {"conv": 10, "linear": 10, "op": 10})
    assert coverage["measured"] == {"conv": MINIMUM["conv"], "linear": MINIMUM["linear"],
                                    "ops": MINIMUM["op"]}


@settings(max_examples=200, deadline=None)
@given(durations=st.fixed_dictionaries({k: st.floats(0.001, 10.0) for k in SHARES}),
       planned=st.fixed_dictionaries({k: st.integers(0, 40) for k in SHARES}),
       stop=st.floats(-1.0, 100.0))
def test_every_kind_gets_its_points_and_every_job_is_counted(durations, planned, stop):
    coverage, spent = fake_run(durations, stop, planned)
    names = {"conv": "conv", "linear": "linear", "op": "ops"}
    for kind, n in planned.items():
        got = coverage["measured"][names[kind]]
        assert got >= min(n, MINIMUM[kind])
        assert got <= n
    assert sum(coverage["measured"].values()) + coverage["skipped"] == sum(planned.values())
    # no job starts after the stop unless its kind lacks its minimum: the run
    # ends by the stop plus one job of each kind plus the minimums
    slack = sum((MINIMUM[k] + 1) * durations[k] for k in SHARES)
    assert sum(spent.values()) <= max(stop, 0.0) + slack + 1e-9


@given(st.integers(0, 12))
def test_spread_order_is_a_permutation_covering_the_range_first(n):
    order = spread_order(n)
    assert sorted(order) == list(range(n))
    if n > 2:
        assert order[:2] == [1, n - 1]


# --------------------------------------------------------------------------
# trust


def test_load_and_spread_mark_a_profile_measured_under_load():
    idle = assess_calibration(cpu_count=2, threads=2, clock="wall", load_before=[0.3, 0.2, 0.1],
                              load_after=[2.1, 1.0, 0.5], spreads=[0.01, 0.02, 0.03],
                              peaks={"fp32": {"flops_per_s": 1e11}}, native={})
    assert idle["measured_under_load"] is False and idle["reasons"] == []
    assert idle["spread"] == 0.02 and idle["load_limit"] == 1.0
    busy = assess_calibration(cpu_count=2, threads=2, clock="wall", load_before=[6.12, 4, 2],
                              load_after=[6.26, 4, 2], spreads=[0.01], peaks={}, native={})
    assert busy["measured_under_load"] and len(busy["reasons"]) == 2
    assert "load average 6.12 on 2 cores" in busy["reasons"][0]
    assert "4.26 beyond calibrate's own 2 threads" in busy["reasons"][1]
    # the CPU-time clock counts this process alone: load is no reason, spread is
    cpu = assess_calibration(cpu_count=2, threads=1, clock="cpu", load_before=[6.0, 4, 2],
                             load_after=[6.0, 4, 2], spreads=[0.3, 0.4, 0.5], peaks={},
                             native={})
    assert cpu["measured_under_load"] and len(cpu["reasons"]) == 1
    assert "spread 40%" in cpu["reasons"][0]


def test_a_bf16_peak_above_fp32_without_bf16_hardware_is_suspect():
    """The README's run: bf16 at 155 GFLOP/s, fp32 at 34, on a CPU without AMX."""
    peaks = {"fp32": {"flops_per_s": 34e9}, "bf16": {"flops_per_s": 155e9}}
    kw = dict(cpu_count=2, threads=2, clock="wall", load_before=None, load_after=None,
              spreads=[])
    suspect = assess_calibration(peaks=peaks, native={"bf16": False}, **kw)["sanity"]
    assert len(suspect) == 1 and "bf16 GEMM peak (155.0 GFLOP/s)" in suspect[0] \
        and "(34.0)" in suspect[0]
    assert assess_calibration(peaks=peaks, native={"bf16": True}, **kw)["sanity"] == []


# --------------------------------------------------------------------------
# predict's warnings and --strict


def thin(conv_points=3, **changes):
    d = copy.deepcopy(SHIPPED)
    t = d["tables"]["fp32"]
    t["conv"] = [p for p in t["conv"] if not p.get("depthwise")][:conv_points]
    d.update(changes)
    return d


def test_the_shipped_profile_warns_about_nothing():
    for spec in ("resnet18", "mobilenet_v2", "vgg16", "lenet5"):
        p, = predict(archcalc.load(spec_path(spec + ".toml")), Profile(SHIPPED, "s.json"),
                     batches=[2], mode="train")
        assert p.warnings == [], (spec, p.warnings)


def test_thin_tables_and_missing_kinds_are_one_line_each():
    resnet = archcalc.load(spec_path("resnet18.toml"))
    p, = predict(resnet, Profile(thin(3), "p.json"), batches=[8])
    assert p.warnings == [f"profile p.json: rates for 20 conv layers come from a table (fp32) "
                          f"of 3 points (fewer than {MIN_POINTS['conv']})"]
    mobilenet = archcalc.load(spec_path("mobilenet_v2.toml"))
    p, = predict(mobilenet, Profile(thin(50), "p.json"), batches=[8])
    assert len(p.warnings) == 1 and "17 depthwise conv layers are rated from other kinds" \
        in p.warnings[0], p.warnings


def test_a_budget_that_ran_out_and_load_are_warned():
    data = thin(50)
    data["tables"]["fp32"]["planned"] = {"conv": 375, "linear": 59, "ops": 120}
    data["trust"] = {"measured_under_load": True, "reasons": ["load average 6.12 on 2 cores"],
                     "sanity": ["the bf16 GEMM peak is above fp32's"]}
    p, = predict(archcalc.load(spec_path("resnet18.toml")), Profile(data, "p.json"),
                 batches=[8])
    assert p.warnings == [
        "profile p.json: table fp32 holds 50 of the 375 conv points calibrate planned "
        "(its budget ran out)",
        "profile p.json: measured under load (load average 6.12 on 2 cores): its times may "
        "be slower than this device's",
        "profile p.json: the bf16 GEMM peak is above fp32's"]


def test_an_older_profile_is_judged_by_the_load_it_recorded():
    """No trust record (an older calibrate): the load averages it kept decide;
    with the CPU-time clock (the shipped profile's) load is no reason."""
    data = thin(50)
    data["host"].update(load_before=[6.12, 4.0, 2.0], load_after=[2.0, 1.0, 1.0],
                        cpu_count=2)
    resnet = archcalc.load(spec_path("resnet18.toml"))
    assert predict(resnet, Profile(data, "p.json"), batches=[8])[0].warnings == []  # cpu clock
    data["clock"] = "wall"
    p, = predict(resnet, Profile(data, "p.json"), batches=[8])
    assert p.warnings == ["profile p.json: measured under load (load average 6.12 on 2 cores "
                          "before calibrating (over 1)): its times may be slower than this "
                          "device's"]


def test_a_missing_table_is_an_error_naming_table_and_profile():
    with pytest.raises(SpecError, match=r"^p.json: table fp32 has no conv points, and 20 conv "
                                        r"layers of the spec need them"):
        predict(archcalc.load(spec_path("resnet18.toml")), Profile(thin(0), "p.json"))


def test_cli_warns_on_stderr_and_strict_refuses(tmp_path):
    path = tmp_path / "thin.json"
    data = thin(3)
    data["trust"] = {"measured_under_load": True, "reasons": ["load average 6.12 on 2 cores"]}
    path.write_text(json.dumps(data))
    args = ["predict", spec_path("resnet18.toml"), "--profile", str(path), "--summary",
            "--format", "json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: profile ") for line in lines)
    out = json.loads(result.stdout)
    assert len(out["warnings"]) == 2 and out["profile"]["measured_under_load"] is True
    result = CliRunner().invoke(main, args + ["--strict"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "(and 1 more); --strict refuses" in err, err
    assert not result.stdout


# --------------------------------------------------------------------------
# the real table filling, with fake measurements (torch imported, nothing timed)

torch = pytest.importorskip("torch")
from archcalc.torch import calibrate as cal  # noqa: E402


@pytest.mark.parametrize("quick", [True, False])
def test_fill_table_under_load_keeps_every_kind(monkeypatch, quick):
    """The real grid and scheduler; each conv costs 3 s of a fake clock (a
    loaded machine), GEMMs and ops 50 ms; the table's budget 20 s."""
    clock = FakeClock()

    def fake(cost, point):
        def measure(*args, **kw):
            clock.t += cost
            return dict(point)
        return measure
    monkeypatch.setattr(cal, "measure_conv", fake(3.0, {"conv": 1}))
    monkeypatch.setattr(cal, "measure_linear", fake(0.05, {"linear": 1}))
    monkeypatch.setattr(cal, "measure_op", fake(0.05, {"elements": 1, "forward_s": 1e-5}))
    table = {"conv": [], "linear": [], "ops": {}}
    cal._fill_table(table, None, "cpu", "fp32", False, quick, 20.0, clock)
    planned = table["planned"]
    assert planned["conv"] == (10 if quick else pytest.approx(300, rel=0.5))
    assert planned["linear"] >= 10 and planned["ops"] >= 28
    ops = sum(len(v) for v in table["ops"].values())
    # a conv starts while the fake clock is under 20 s: at most 20 / 3 + 1 of them
    assert 1 <= len(table["conv"]) <= 7 and len(table["linear"]) >= 2 and ops >= 4
    # ops at two sizes each before a third: every quick op has a curve
    assert all(len(v) >= 2 for v in table["ops"].values()) or not quick
    assert len(table["conv"]) + len(table["linear"]) + ops + table["skipped"] == \
        sum(planned.values())


@pytest.mark.slow
def test_a_real_quick_calibration_covers_every_kind(tmp_path):
    """A tiny budget on this (shared, loaded) machine: every kind measured,
    coverage and trust recorded, a valid profile predict reads."""
    out = tmp_path / "quick.json"
    result = CliRunner().invoke(main, ["calibrate", "--quick", "--budget-s", "3",
                                       "--no-compile", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    table = data["tables"]["fp32"]
    assert table["conv"] and table["linear"] and table["ops"], table.get("planned")
    assert set(table["planned"]) == {"conv", "linear", "ops"}
    assert isinstance(data["trust"]["measured_under_load"], bool)
    assert "table fp32" in result.stderr       # the progress bar
    Profile(data, str(out))                     # the schema admits what calibrate writes
    result = CliRunner().invoke(main, ["predict", spec_path("lenet5.toml"), "--profile",
                                       str(out), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == [
        line[len("warning: "):-len(" (--strict makes this an error)")]
        for line in result.stderr.strip().splitlines() if line.startswith("warning: ")]
    assert os.path.getsize(out) > 1000
