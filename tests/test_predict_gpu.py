"""archcalc predict on a GPU profile (Profile.split): _Timeline against hand
numbers and a max-plus reference; whole nets host-bound and device-bound;
monotonicity and totals; the CLI; the CPU profile unchanged. No torch."""
import copy
import json
import math
import os

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import archcalc
from archcalc import profiles
from archcalc.analysis import analyze
from archcalc.cli import main
from archcalc.predict import Profile, _Timeline, load_profile, predict
from conftest import spec_path

with open(os.path.join(profiles.root(), "cpu-xeon-1t.json"), encoding="utf-8") as fh:
    CPU = json.load(fh)
WHICH = ("forward", "forward_train", "backward")


def timed_points(data):
    """Every (point, timed key prefix) of every table, and the optimizer's."""
    for table in data["tables"].values():
        for p in table.get("conv", []) + table.get("linear", []) + \
                [q for pts in table["ops"].values() for q in pts]:
            yield from ((p, w) for w in WHICH if f"{w}_s" in p)
    yield from ((p, "step") for p in data["optimizer"])


def base() -> dict:
    """The CPU profile's data, no L2 (no network-context term), no free_s."""
    d = copy.deepcopy(CPU)
    d.pop("cache")
    for p in d["optimizer"]:
        p.pop("free_s")
    return d


def cuda_profile(host=5e-6, gpu=lambda s: s / 50, bandwidth=None) -> dict:
    """The CPU profile made a GPU one: every point's kernels gpu(its CPU time),
    its launch `host` seconds (host=0: no host times, the overheads 0), and a
    bf16 table at half the fp32 kernel times."""
    d = base()
    d.update(device="cuda", device_name="synthetic GPU")
    fp32 = d["tables"]["fp32"]
    d["tables"] = {"fp32": fp32, "bf16": copy.deepcopy(fp32)}
    for p, w in timed_points(d):
        p[f"{w}_gpu_s"] = gpu(p[f"{w}_s"])
        if host:
            p[f"{w}_host_s"] = host
    for p, w in timed_points({"tables": {"bf16": d["tables"]["bf16"]}, "optimizer": []}):
        p[f"{w}_gpu_s"] /= 2
    d["overhead"].update({f"{w}_host_s": host for w in WHICH})
    if bandwidth:
        d["bandwidth"] = [{"bytes": 1e3, "bandwidth": bandwidth},
                          {"bytes": 1e10, "bandwidth": bandwidth}]
    return d


def cpu_twin(gpu=lambda s: s / 50) -> dict:
    """A CPU profile whose call times are cuda_profile's kernel times, with no
    per-op overhead."""
    d = base()
    for p, w in timed_points(d):
        p[f"{w}_s"] = gpu(p[f"{w}_s"])
    d["overhead"].update({f"{w}_s": 0.0 for w in WHICH})
    return d


def run(spec, profile, **kw):
    return predict(archcalc.load(spec_path(spec + ".toml")), profile, **kw)


# --------------------------------------------------------------------------
# 1. the timeline


def reference_end(events):
    """Max-plus closed form: the device ends at the latest (the host's time when
    op i is launched + every kernel from i on)."""
    launched = [sum(h for h, _, _ in events[:i + 1]) for i in range(len(events))]
    return max([at + sum(d for _, d, _ in events[i:]) for i, at in enumerate(launched)],
               default=0.0)


def test_timeline_host_bound():
    t = _Timeline()
    p = t.run([(1.0, 0.125, "compute"), (1.0, 0.25, "memory"), (1.0, 0.375, "overhead")])
    assert t.device == 3.375 == 3 * 1.0 + 0.375          # every launch + the last kernel
    assert (p.compute, p.memory) == (0.125, 0.25)
    assert p.overhead == 1.0 + 0.875 + 0.75 + 0.375       # the waits + the overhead kernel
    assert p.total == 3.375 and t.finish() == 0.0


def test_timeline_device_bound_and_mixed():
    t = _Timeline()
    p = t.run([(1.0, 5.0, "compute"), (1.0, 5.0, "compute"), (1.0, 5.0, "memory")])
    assert t.device == 16.0 == 1.0 + 3 * 5.0              # the first launch + every kernel
    assert (p.compute, p.memory, p.overhead) == (10.0, 5.0, 1.0)
    # mixed: a 10 s kernel hides the next 19 launches (1 s each, 0.5 s kernels); the
    # host catches up at the 19th and the last 5 are host-bound again
    events = [(2.0, 10.0, "compute")] + [(1.0, 0.5, "memory")] * 24
    t = _Timeline()
    a = t.run(events[:13])
    assert t.device == 2.0 + 10.0 + 12 * 0.5 and t.host == 14.0   # all hidden so far
    b = t.run(events[13:])
    assert t.device == 26.5 == 2.0 + 24 * 1.0 + 0.5
    assert (a.overhead, a.compute, a.memory) == (2.0, 10.0, 6.0)
    assert (b.overhead, b.compute, b.memory) == (5 * 0.5, 0.0, 6.0)
    assert a.total + b.total == t.device


event = st.tuples(st.floats(0, 10), st.floats(0, 10),
                  st.sampled_from(("compute", "memory", "overhead")))


@given(st.lists(event, max_size=30), st.integers(0, 30))
def test_timeline_matches_reference(events, cut):
    t = _Timeline()
    parts = [t.run(events[:cut]), t.run(events[cut:])]
    assert t.device == pytest.approx(reference_end(events), rel=1e-12, abs=1e-12)
    assert t.host == pytest.approx(sum(h for h, _, _ in events), rel=1e-12, abs=1e-12)
    assert sum(p.total for p in parts) == pytest.approx(t.device, rel=1e-12, abs=1e-12)
    for bound in ("compute", "memory"):
        assert sum(getattr(p, bound) for p in parts) == pytest.approx(
            sum(d for _, d, b in events if b == bound), rel=1e-12, abs=1e-12)
    assert t.finish() == 0.0   # every op ends on the device after its launch


# --------------------------------------------------------------------------
# 2. host-bound: batch 1, kernels ~free -> launches x H


def launches(spec, batch=1):
    """Ops a forward pass launches: each cost() of each op of each row (a
    merge: itself and the ops after it), plus the row's module call when the
    row runs more than one, and always for a merge (its Residual module)."""
    n = 0
    report = analyze(archcalc.load(spec_path(spec + ".toml")), batch=batch)
    for row in report.rows[1:]:
        x = row.output_shape if row.merge else row.input_shape
        costs = 1 if row.merge else 0
        for op in (row.post if row.merge else row.ops):
            y = op.kind.output_shape(op.args, x)
            costs += len(op.kind.cost(op.args, x, y))
            x = y
        n += costs + (costs > 1 or bool(row.merge))
    return n


H = 1e-4
HOST_BOUND = cuda_profile(host=H, gpu=lambda s: 1e-12, bandwidth=1e18)


# by hand: LeNet-5: C1, C3, C5, F6 a call + op + tanh, S2, S4, F7 one op;
# ResNet-18: the stem 4 + 1, 8 blocks of conv-bn-relu (4), conv-bn (3) and
# add-relu (the Residual's call + 2), 3 shortcuts conv-bn (3), pool, fc
@pytest.mark.parametrize("spec, hand", [("lenet5", 4 * 3 + 3), ("resnet18", 5 + 8 * 10 + 9 + 2),
                                        ("mobilenet_v2", None)])
def test_host_bound_step_is_launches_times_host(spec, hand):
    n = launches(spec)
    if hand is not None:
        assert n == hand
    p, = run(spec, Profile(HOST_BOUND))
    assert p.step_ms == pytest.approx(n * H * 1e3, rel=1e-4)
    assert p.bound_ms["overhead"] / p.step_ms > 0.999


def test_host_bound_amp_adds_the_casts():
    # bf16: each weight tensor of the 5 weighted layers (weight and bias) is
    # cast before its layer, and the image once: 15 + 10 + 1 launches
    p, = run("lenet5", Profile(HOST_BOUND), amp="bf16")
    assert p.step_ms == pytest.approx(26 * H * 1e3, rel=1e-4)


# --------------------------------------------------------------------------
# 3. device-bound: no host time -> the kernels' sum, the CPU formula's


@pytest.mark.parametrize("spec", ["lenet5", "resnet18", "googlenet"])
def test_device_bound_step_is_the_kernels_sum(spec):
    gpu, cpu = Profile(cuda_profile(host=0.0)), Profile(cpu_twin())
    assert gpu.split and not cpu.split
    for mode in ("inference", "train"):
        g, c = run(spec, gpu, batches=[8], mode=mode)[0], run(spec, cpu, batches=[8], mode=mode)[0]
        assert g.forward_ms == pytest.approx(c.forward_ms, rel=1e-9)
        assert g.backward_ms == pytest.approx(c.backward_ms, rel=1e-9)
        assert g.optimizer_ms == pytest.approx(c.optimizer_ms, rel=1e-9)
        for gl, cl in zip(g.layers, c.layers, strict=True):
            assert gl.total_ms == pytest.approx(cl.total_ms, rel=1e-9)
            assert gl.overhead_ms == 0.0     # the device never waits
        # the loss: 8 tiny kernels of 1 us each in training
        loss = 8 * 1e-3 if mode == "train" else 0.0
        assert g.step_ms == pytest.approx(c.step_ms + loss, rel=1e-9)


# --------------------------------------------------------------------------
# 4. monotonic in batch, train > inference, totals add up

REALISTIC = Profile(cuda_profile())


@pytest.mark.parametrize("spec", ["resnet18", "vgg11", "mobilenet_v2", "googlenet", "lenet5"])
def test_monotonic_and_totals(spec):
    inf = run(spec, REALISTIC, batches=[1, 8, 64])
    train = run(spec, REALISTIC, batches=[1, 8, 64], mode="train")
    for ps in (inf, train):
        # host-bound steps are equal up to rounding
        assert all(a.step_ms <= b.step_ms * (1 + 1e-12) for a, b in zip(ps, ps[1:]))
    for i, t in zip(inf, train):
        assert t.step_ms > i.step_ms and t.backward_ms > 0 and t.optimizer_ms > 0
        assert i.backward_ms == i.optimizer_ms == 0.0
    for p in inf + train:
        total = sum(la.total_ms for la in p.layers) + p.optimizer_ms + p.other_ms
        assert total == pytest.approx(p.step_ms, rel=1e-6)
        assert sum(p.bound_ms.values()) == pytest.approx(p.forward_ms + p.backward_ms, rel=1e-6)
        for la in p.layers:
            assert la.compute_ms + la.memory_ms + la.overhead_ms == pytest.approx(
                la.total_ms, rel=1e-9, abs=1e-12)
        assert p.samples_per_s == pytest.approx(p.batch / p.step_ms * 1e3)
        # the step is at least the host's launching of the forward pass
        assert p.step_ms >= launches(spec) * 5e-6 * 1e3 * (1 - 1e-9)


# --------------------------------------------------------------------------
# 5. the CLI, and the CPU profile as it was


def test_cli_predict_on_a_gpu_profile(tmp_path):
    path = tmp_path / "fake-gpu.json"
    path.write_text(json.dumps(cuda_profile()))
    result = CliRunner().invoke(main, [
        "predict", spec_path("resnet18.toml"), "--profile", str(path), "--batch", "1,64",
        "--mode", "train", "--amp", "bf16", "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["device"], out["dtype"], out["mode"]) == ("cuda", "bf16", "train")
    assert [r["batch"] for r in out["results"]] == [1, 64]
    assert all(r["step_ms"] > 0 and math.isfinite(r["step_ms"]) for r in out["results"])
    assert out["results"][0]["step_ms"] < out["results"][1]["step_ms"]


# step_ms with the shipped CPU profile before the GPU path (commit 1e6dbfa~1)
CPU_BEFORE = {("lenet5", "inference"): (0.3127341758918538, 0.7317531573606169),
              ("resnet18", "train"): (167.79788759345075, 959.4529443178504),
              ("mobilenet_v2", "inference"): (26.277845238182184, 161.1740342187135)}


def test_cpu_profile_unchanged():
    shipped = load_profile("cpu-xeon-1t")
    assert not shipped.split and shipped.host_overhead == shipped.overhead
    cuda_profile(), cpu_twin()     # they copy the CPU data, never touch it
    for profile in (shipped, Profile(CPU)):
        for (spec, mode), steps in CPU_BEFORE.items():
            ps = run(spec, profile, batches=[1, 8], mode=mode)
            assert [p.step_ms for p in ps] == pytest.approx(steps, rel=1e-9)
            assert all(p.device == "cpu" for p in ps)


def test_zero_host_times_predict():
    """A profile whose host times are 0 (a hand-edited one: calibrate never writes
    one) predicts rather than failing on log(0) in the interpolation."""
    data = cuda_profile(host=5e-6)
    for p in data["optimizer"]:
        p["step_host_s"] = 0.0
    for t in data["tables"].values():
        for points in t["ops"].values():
            for p in points:
                for key in ("forward_host_s", "forward_train_host_s", "backward_host_s"):
                    if key in p:
                        p[key] = 0.0
    step = run("resnet18", Profile(data), batches=[8], mode="train")[0].step_ms
    assert math.isfinite(step) and step > 0
