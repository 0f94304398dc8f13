"""archcalc sweep: every figure equals `table`'s on the same bound spec, the
Pareto front against the definition, grids, links, constraints and their
one-line errors, the point limit refused before work, --fit."""
import json
import os
import random
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from archcalc.cli import main
from archcalc.errors import SpecError
from archcalc.sweep import sweep
from archcalc.sweep.pareto import brute_front, front
from archcalc.sweep.space import parse_grid
from conftest import spec_path

TABLE_KEYS = ("params", "trainable_params", "macs", "flops", "activations",
              "activation_bytes", "param_bytes", "saved_activation_bytes",
              "train_memory_bytes")


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def table_json(spec, sets, input_shape, batch=1, dtype="fp32"):
    """`archcalc table`'s JSON totals, or its one-line error."""
    args = ["table", spec, "--format", "json", "--batch", str(batch), "--dtype", dtype]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    if input_shape:
        args += ["--input", "x".join(map(str, input_shape))]
    result = run(*args)
    if result.exit_code == 2:
        return result.output.strip()
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["totals"]


def table_totals(spec, sets, input_shape, batch=1, dtype="fp32"):
    totals = table_json(spec, sets, input_shape, batch, dtype)
    assert isinstance(totals, dict), totals
    return totals


# -- every figure is the table's --------------------------------------------------------

# shipped specs with variables, and grids over them (input sizes too)
SPACES = [
    ("efficientnet_b0.toml", "width", [0.5, 0.75, 1.0, 1.1, 1.4, 2.0]),
    ("efficientnet_b0.toml", "depth", [1.0, 1.2, 1.8, 3.1]),
    ("resnet50_scaled.toml", "widen", [0.25, 0.5, 0.98, 1.0, 1.5]),
    ("resnet50_scaled.toml", "depth", [0.34, 1.0, 1.5]),
    ("mobilenet_v2.toml", "width", [0.35, 0.5, 0.75, 1.0, 1.4]),
    ("densenet121.toml", "k", [12, 24, 32, 48]),
    ("convnext_tiny.toml", "B3", [3, 9, 27]),
    ("regnet_y_400mf.toml", "se_ratio", [0.25, 0.5]),
    ("tricks/7x7-vs-3x3/three_3x3.toml", "C", [1, 16, 64, 256]),
    ("tricks/5x5-vs-3x3/one_5x5.toml", "C", [3, 32, 512]),
]


@settings(max_examples=20)
@given(space=st.sampled_from(SPACES), data=st.data())
def test_every_figure_equals_table_on_the_bound_spec(space, data):
    name, var, values = space
    chosen = data.draw(st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True))
    size = data.draw(st.sampled_from([32, 64, 224]))
    batch = data.draw(st.sampled_from([1, 8]))
    dtype = data.draw(st.sampled_from(["fp32", "bf16"]))
    grids = [f"{var}=" + ",".join(map(str, chosen))]
    sets = {}
    if name.startswith("tricks"):          # C, H, W are variables there
        grids.append(f"H={size}")
        sets["W"] = size
        input_shape = None
    else:
        input_shape = f"3,{size},{size}"
    try:
        result = sweep(spec_path(name), grids, input=input_shape, sets=sets, batch=batch,
                       dtype=dtype)
    except SpecError as e:      # no point can be analysed: table refuses each too
        assert str(e).startswith("no point of the sweep can be analysed")
        shape = None if input_shape is None else (3, size, size)
        for value in chosen:
            bound = {**sets, var: value, **({"H": size} if "H=" in grids[-1] else {})}
            assert isinstance(table_json(spec_path(name), bound, shape, batch, dtype), str)
        points = []
    else:
        points = result.points
        assert len(points) == len(chosen)
    for p in points:
        bound = {**sets, **{k: v for k, v in p.variables.items()}}
        shape = None if input_shape is None else (3, size, size)
        want = table_json(spec_path(name), bound, shape, batch, dtype)
        if p.error:             # an input too small for the net: the same error as table's
            assert want == f"error: {p.error}"
            continue
        for key in TABLE_KEYS:
            assert p.metrics[key] == want[key], (name, p.variables, key)


def test_train_memory_call_equals_table_at_its_batch_and_dtype():
    want = table_totals(spec_path("resnet18.toml"), {}, None, 64, "bf16")["train_memory_bytes"]
    assert want == 854_728_000
    result = sweep(spec_path("resnet18.toml"), ["batch=1,2"],
                   where=[f"train_memory(batch=64, dtype=bf16) <= {want - 1}"])
    assert all(p.cut_by for p in result.points)
    result = sweep(spec_path("resnet18.toml"), ["batch=1,2"],
                   where=[f"train_memory(batch=64, dtype=bf16) <= {want}"])
    assert all(p.feasible for p in result.points)


# -- the Pareto front ------------------------------------------------------------------

vectors = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=0, max_size=40)
vectors3 = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
                    min_size=0, max_size=40)


@given(st.one_of(vectors, vectors3), st.randoms(use_true_random=False))
def test_front_is_the_definition_and_independent_of_order(points, rnd):
    assert front(points) == brute_front(points)
    shuffled = list(range(len(points)))
    rnd.shuffle(shuffled)
    again = front([points[i] for i in shuffled])
    assert sorted(points[shuffled[i]] for i in again) == sorted(points[i] for i in front(points))


def test_front_keeps_every_tie():
    pts = [(1, 5), (2, 2), (2, 2), (5, 1), (3, 3), (1, 5)]
    assert front(pts) == [0, 1, 2, 3, 5]


def test_front_of_a_hundred_thousand_points_is_linear_work():
    rnd = random.Random(0)
    pts = [(rnd.random(), rnd.random()) for _ in range(100_000)]
    on = front(pts)
    # the least x and the least y are always on it; the front is a staircase
    assert min(range(len(pts)), key=lambda i: pts[i]) in on
    ys = [pts[i][1] for i in sorted(on, key=lambda i: pts[i])]
    assert ys == sorted(ys, reverse=True)


def test_three_objectives_with_nearly_everything_on_the_front():
    # maximise w and d, minimise w*d: no point dominates another with w, d >= 1;
    # every (0, d) and (w, 0) is dominated by (0, 0): 299^2 + 1 on the front.
    # The quadratic method would need about 4 x 10^9 comparisons here.
    pts = [(w, d, -(w * d)) for w in range(300) for d in range(300)]
    assert len(front(pts)) == 299 * 299 + 1


# -- grids, links, the input ---------------------------------------------------------------

def test_grid_forms():
    assert parse_grid("C=32,48,64").values == (32, 48, 64)
    assert parse_grid("width=0.5:2.0:0.25").values == (0.5, 0.75, 1, 1.25, 1.5, 1.75, 2)
    assert parse_grid("w=0.1:0.3:0.1").values == (0.1, 0.2, 0.3)
    assert parse_grid("batch=1:64:*2").values == (1, 2, 4, 8, 16, 32, 64)
    assert parse_grid("n=1:4").values == (1, 2, 3, 4)
    assert parse_grid("C=8,8,16").values == (8, 16)


def test_efficientnet_compound_scaling_links_and_input():
    result = sweep(spec_path("efficientnet_b0.toml"), ["phi=0:2"],
                   links=["depth=1.2**phi", "width=1.1**phi", "res=round(224*1.15**phi)"],
                   input="3,res,res")
    assert [p.input for p in result.points] == [(3, 224, 224), (3, 258, 258), (3, 296, 296)]
    assert [p.variables["depth"] for p in result.points] == [1, 1.2, 1.2 ** 2]


@pytest.mark.parametrize("args, message", [
    (["--grid", "C"], "--grid takes NAME=VALUES"),
    (["--grid", "C=a,b"], "'a' is not a number"),
    (["--grid", "C=8:4"], "ends (4) before it starts (8)"),
    (["--grid", "C=1:8:0"], "the step must be positive"),
    (["--grid", "C=1:8:*1"], "needs F > 1"),
    (["--grid", "foo=1,2"], "'foo' is not a variable of the spec"),
    (["--grid", "C=8", "--grid", "C=16"], "given twice"),
    (["--grid", "C=8", "--link", "D=E*2"], "reads E, which is not a --grid variable"),
    (["--grid", "C=8", "--link", "D"], "--link takes NAME=EXPRESSION"),
    (["--grid", "C=8", "--link", "D=__import__('os')", "--input", "3,D,D"], "not allowed"),
    (["--grid", "C=8", "--where", "parms <= 1"], "unknown name 'parms'"),
    (["--grid", "C=8", "--where", "params <="], "not a valid expression"),
    (["--grid", "C=8", "--where", "params + 1"], "not true or false"),
    (["--grid", "C=8", "--where", "train_memory(batch=8, dtype=fp99) < 1"],
     "dtype must be one of"),
    (["--grid", "C=8", "--where", "train_memory(8) < 1"], "keyword options only"),
    (["--grid", "C=8", "--objectives", "params,speed"], "unknown objective 'speed'"),
    (["--grid", "C=8", "--fit", "params < 1"], "--fit CONSTRAINT goes with one of"),
    (["--grid", "C=8", "--fit", "params < 1", "--maximize", "W"], "not a --grid variable"),
    (["--grid", "C=8", "--input", "3,K,K"], "reads K, which is not a --grid"),
    (["--grid", "C=8", "-o", "out.txt"], "the suffix says what to write"),
    (["--grid", "C=1e400"], "is not a finite number"),
    (["--grid", "C=nan"], "is not a finite number"),
    (["--grid", "C=99999999999999999999999"], "has more than 18 digits"),
    (["--grid", "C=0:1e300:1e-300"], "more than 10^18 values"),
    (["--grid", "C=8", "--where", "1+" * 600 + "1 > 0"], "ARCHCALC_MAX_EXPR_CHARS"),
    (["--grid", "C=8", "--where", "-" * 200 + "1 > 0"], "ARCHCALC_MAX_EXPR_DEPTH"),
    (["--grid", "C=8", "--link", "D=2**10000", "--input", "3,D,D"], "out of range"),
    (["--grid", "C=8", "--input", "3,0,0"], "a size is a positive integer"),
    (["--grid", "C=8", "--where", "train_memory(batch=0) < 1"], "a batch is a positive"),
])
def test_bad_sweeps_are_one_line_and_exit_2(args, message):
    spec = spec_path("tricks/5x5-vs-3x3/two_3x3.toml")
    result = run("sweep", spec, "--set", "H=16", "--set", "W=16", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output


def test_a_grid_over_the_limit_is_refused_before_work():
    spec = spec_path("tricks/5x5-vs-3x3/two_3x3.toml")
    # 10^12 values: refused from the count, not built (this would not finish otherwise)
    result = run("sweep", spec, "--grid", "C=1:1000000000000", "--set", "H=8", "--set", "W=8")
    assert result.exit_code == 2
    assert "ARCHCALC_MAX_SWEEP_POINTS" in result.output and "1,000,000,000,000" in result.output
    result = run("sweep", spec, "--grid", "C=1:10", "--grid", "H=1:10", "--set", "W=8",
                 env={"ARCHCALC_MAX_SWEEP_POINTS": "99"})
    assert result.exit_code == 2 and "10 x 10 = 100 points" in result.output
    assert "over the limit of 99" in result.output
    result = run("sweep", spec, "--grid", "C=1:10", "--grid", "H=1:10", "--set", "W=8",
                 env={"ARCHCALC_MAX_SWEEP_POINTS": "100"})
    assert result.exit_code == 0, result.output


def test_points_that_cannot_be_built_are_counted_not_fatal():
    # H = 1 and 2: the 5x5 with padding 2 works, but a 3x3 without padding
    # would not; here: a grid where some inputs are too small for the VGG pools
    result = sweep(spec_path("vgg16.toml"), ["res=16,32,224"], input="3,res,res")
    bad = [p for p in result.points if p.error]
    assert [p.variables["res"] for p in bad] == [16]
    assert result.errors and not bad[0].feasible


def test_infeasible_points_are_counted_by_the_constraint_that_cut_them():
    spec = spec_path("tricks/7x7-vs-3x3/three_3x3.toml")
    result = sweep(spec, ["C=16,32,64,128,256"], sets={"H": 14, "W": 14},
                   where=["params <= 100000", "macs <= 5e6"])
    # three 3x3 convs, no bias: 27 C^2 params; 27 C^2 H W MACs
    params = {p.variables["C"]: p.metrics["params"] for p in result.points}
    assert params == {c: 27 * c * c for c in (16, 32, 64, 128, 256)}
    # 27 * 64^2 = 110,592 > 100,000; 27 * 32^2 * 14 * 14 = 5,419,008 > 5e6
    assert dict(result.infeasible) == {"params <= 100000": 3, "macs <= 5e6": 1}
    assert [p.variables["C"] for p in result.feasible] == [16]


def test_json_and_csv_list_every_point():
    spec = spec_path("tricks/7x7-vs-3x3/three_3x3.toml")
    args = ["sweep", spec, "--grid", "C=16,32,64", "--grid", "H=7,14", "--set", "W=14",
            "--where", "macs <= 20e6"]
    data = json.loads(run(*args, "--format", "json").stdout)
    assert data["evaluated"] == 6 and len(data["points"]) == 6
    assert data["infeasible"] == {"macs <= 20e6": 1}
    assert sorted(data["front"]) == sorted(p["index"] for p in data["points"] if p["front"])
    csv = run(*args, "--format", "csv").stdout.splitlines()
    assert len(csv) == 7 and csv[0].startswith("index,C,H,input,")


# -- --fit ---------------------------------------------------------------------------

def test_fit_by_bisection_equals_the_grid_scan():
    spec = spec_path("resnet50_scaled.toml")
    fit = sweep(spec, ["widen=0.5:1.5:0.01"], fit="params <= 25e6 and macs <= 4e9",
                maximize="widen")
    answer = fit.fit["answers"][0]
    assert answer["method"].startswith("bisection")
    assert len(fit.points) < 20                        # 101 values, a few evaluated
    scan = sweep(spec, ["widen=0.5:1.5:0.01"], where=["params <= 25e6 and macs <= 4e9"])
    assert answer["value"] == max(p.variables["widen"] for p in scan.feasible) == 0.98


def test_fit_says_when_it_scans_the_grid():
    # params = 25 C^2 is divisible by 3 only where C is: feasibility flips
    # back and forth along C, so bisection would be wrong; every value is tried
    spec = spec_path("tricks/5x5-vs-3x3/one_5x5.toml")
    fit = sweep(spec, ["C=1:40"], sets={"H": 8, "W": 8}, fit="params % 3 == 0 and C <= 31",
                maximize="C")
    answer = fit.fit["answers"][0]
    assert answer["method"].startswith("grid (every value: feasibility changes")
    assert answer["value"] == 30
    assert fit.points[answer["point"]].metrics["params"] == 25 * 30 * 30


# -- the sweep path stays pure Python ---------------------------------------------------

def test_sweep_does_not_import_torch_or_matplotlib(tmp_path):
    code = ("import sys; from archcalc.cli import main\n"
            "try: main(['sweep', sys.argv[1], '--grid', 'widen=0.5,1', '--format', 'json',"
            " '-o', sys.argv[2]])\n"
            "except SystemExit: pass\n"
            "bad = [m for m in ('torch', 'pandas', 'sympy', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY', bad)")
    out = subprocess.run([sys.executable, "-c", code, spec_path("resnet50_scaled.toml"),
                          str(tmp_path / "points.json")], capture_output=True, text=True,
                         timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert json.loads((tmp_path / "points.json").read_text())["evaluated"] == 2


def test_plot_and_page_are_written(tmp_path):
    spec = spec_path("tricks/7x7-vs-3x3/three_3x3.toml")
    for name in ("front.png", "front.svg", "front.html"):
        out = tmp_path / name
        result = run("sweep", spec, "--grid", "C=16,32,64", "--grid", "H=7,14",
                     "--set", "W=14", "-o", str(out))
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 1000
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "front.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


def test_predicted_ms_is_predicts_step_time():
    spec = spec_path("resnet18.toml")
    out = run("predict", spec, "--profile", "cpu-xeon-1t", "--batch", "8", "--mode", "train",
              "--format", "json")
    assert out.exit_code == 0, out.output
    want = json.loads(out.stdout)["results"][0]["step_ms"]
    data = json.loads(run("sweep", spec, "--grid", "batch=8,16", "--profile", "cpu-xeon-1t",
                          "--mode", "train", "--where", f"predicted_ms <= {want}",
                          "--objectives", "predicted_ms,train_memory",
                          "--format", "json").stdout)
    first, second = data["points"]
    assert first["totals"]["predicted_ms"] == pytest.approx(want, abs=1e-6)
    assert first["feasible"] and second["cut_by"] == f"predicted_ms <= {want}"
    # a call with its own options: the inference step at batch 32
    out = run("predict", spec, "--profile", "cpu-xeon-1t", "--batch", "32", "--format", "json")
    at32 = json.loads(out.stdout)["results"][0]["step_ms"]
    data = json.loads(run("sweep", spec, "--grid", "batch=8", "--profile", "cpu-xeon-1t",
                          "--where", f"predicted_ms(batch=32, mode=inference) < {at32}",
                          "--format", "json").stdout)
    assert data["infeasible"] == {f"predicted_ms(batch=32, mode=inference) < {at32}": 1}


@given(start=st.integers(-50, 50), length=st.integers(0, 200), step=st.integers(1, 9),
       scale=st.sampled_from([1, 10, 100, 1000]))
def test_a_range_has_the_counted_values_within_its_ends(start, length, step, scale):
    # decimal ranges (0.05:1.2:0.05) count like integer ones: no value lost to rounding
    lo, hi, by = start / scale, (start + length) / scale, step / scale
    values = parse_grid(f"x={lo}:{hi}:{by}").values
    assert len(values) == length // step + 1
    assert values[0] == lo and all(lo <= v <= hi for v in values)
    assert all(b > a for a, b in zip(values, values[1:]))


def test_fit_minimize_and_its_json():
    # the smallest C whose 7x7 conv needs at least 1M params: 49 C^2 >= 1e6 -> C = 143
    spec = spec_path("tricks/7x7-vs-3x3/one_7x7.toml")
    out = run("sweep", spec, "--grid", "C=1:1000", "--set", "H=8", "--set", "W=8",
              "--fit", "params >= 1e6", "--minimize", "C", "--format", "json")
    assert out.exit_code == 0, out.output
    fit = json.loads(out.stdout)["fit"]
    assert fit["goal"] == "minimize" and fit["answers"][0]["value"] == 143
    assert 49 * 142 ** 2 < 1e6 <= 49 * 143 ** 2


def test_the_page_escapes_what_the_spec_says(tmp_path):
    spec = tmp_path / "evil.toml"
    spec.write_text('[vars]\nC = 4\n[model]\nname = "</script><script>alert(1)</script>"\n'
                    'input = [3, 8, 8]\nlayers = [{conv = "C", kernel = 3}]\n')
    out = tmp_path / "evil.html"
    result = run("sweep", str(spec), "--grid", "C=4,8", "-o", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<script>alert(1)" not in page and "&lt;/script&gt;&lt;script&gt;alert(1)" in page


def test_progress_is_reported_and_ends_at_the_total(monkeypatch):
    import itertools

    import archcalc.sweep.run as run_module
    ticks = itertools.count(0, 2)          # a clock two seconds further at each reading
    monkeypatch.setattr(run_module.time, "monotonic", lambda: next(ticks))
    calls = []
    spec = spec_path("tricks/7x7-vs-3x3/three_3x3.toml")
    sweep(spec, ["C=16,32,64"], sets={"H": 7, "W": 7},
          progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3, 3) and [d for d, _ in calls[:3]] == [1, 2, 3]
