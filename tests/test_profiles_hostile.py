"""Hostile device profiles (issue 18): every field of a shipped profile set to
hostile values (0, negative, NaN, infinity, numbers as strings, huge
integers, wrong types, empty lists, deep nesting, lone surrogates), fields
removed, and files that are no files (a FIFO, /dev/zero, a directory). Each
ends in one line that names the file (and the field), exit 2, or in a valid
prediction whose JSON holds no NaN or Infinity; never a traceback, a hang or
unbounded memory. No torch."""
import copy
import json
import math
import os
import re
import resource
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archcalc
from archcalc import profiles
from archcalc.cli import main
from archcalc.errors import SpecError
from archcalc.predict import Profile, load_profile, predict, to_json
from archcalc.profiles import schema
from conftest import ROOT, spec_path

with open(profiles.resolve("cpu-xeon-1t"), encoding="utf-8") as fh:
    SHIPPED = json.load(fh)


def small_profile() -> dict:
    """The shipped profile cut to a dozen points per list: every kind of field
    kept, and fast to validate and predict from many times."""
    d = copy.deepcopy(SHIPPED)
    t = d["tables"]["fp32"]
    t["conv"], t["linear"] = t["conv"][:12], t["linear"][:6]
    # the fields a newer calibrate adds (the shipped one predates them)
    t["planned"] = {"conv": 12, "linear": 6, "ops": 100}
    d["trust"] = {"measured_under_load": False, "reasons": [], "spread": 0.02,
                  "load_limit": 1.0, "sanity": []}
    return d


def small_cuda_profile() -> dict:
    """SMALL made a GPU profile (as test_predict_gpu does): every time also
    split into the host's launching and the kernels (predict's timeline path)."""
    d = small_profile()
    d.update(device="cuda", device_name="synthetic GPU")
    t = d["tables"]["fp32"]
    points = t["conv"] + t["linear"] + [p for ps in t["ops"].values() for p in ps]
    for p in points + d["optimizer"] + [d["overhead"]]:
        for which in ("forward", "forward_train", "backward", "step"):
            if f"{which}_s" in p:
                p[f"{which}_gpu_s"], p[f"{which}_host_s"] = p[f"{which}_s"] / 50, 5e-6
    return d


SMALL = small_profile()
SMALL_CUDA = small_cuda_profile()
LENET = archcalc.load(spec_path("lenet5.toml"))
RESNET = archcalc.load(spec_path("resnet18.toml"))
SOURCE = "hostile.json"
# the names of Python's exceptions: a message that ends in one is a traceback in disguise
EXCEPTION_NAMES = re.compile(r"\b(Key|Type|Value|Attribute|Index|ZeroDivision|Overflow|"
                             r"Recursion|Memory|UnicodeEncode|UnicodeDecode)Error\b")


def no_constants(name):
    raise AssertionError(f"{name} in JSON output")


def paths(value, path=()):
    """Every field's path in a profile (dict keys and list indices)."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, path + (i,))


def pattern(path):
    """A path with list indices as [] and op names as <op>: one per family."""
    out = []
    for i, p in enumerate(path):
        if isinstance(p, int):
            out.append("[]")
        elif i >= 2 and path[i - 1] == "ops":
            out.append("<op>")
        elif i >= 1 and path[i - 1] in ("tables", "peak"):
            out.append(p if p == "fp32" else "<name>")
        else:
            out.append(p)
    return tuple(out)


def families(data):
    """One path per family of fields (the first of each pattern), the
    top-level object excluded."""
    seen = {}
    for path in paths(data):
        if path and pattern(path) not in seen:
            seen[pattern(path)] = path
    return list(seen.values())


FAMILIES = families(SMALL)
CUDA_FAMILIES = [p for p in families(SMALL_CUDA) if pattern(p) not in set(map(pattern, FAMILIES))]


def deep(levels):
    v = 1
    for _ in range(levels):
        v = [v]
    return v


HOSTILE = [0, -1, -1e-300, 1e-300, float("nan"), float("inf"), float("-inf"), "nan", "inf",
           "1", 10 ** 400, 10 ** 19, 1e308, True, None, [], {}, "", "\ud800", [0, 0],
           [1, 2, 3], deep(40), "x" * 5000, "\x1b[31mred"]


def set_path(data, path, value, delete=False):
    target = data
    for p in path[:-1]:
        target = target[p]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def outcome(data, spec=LENET, mode="train"):
    """None for a valid prediction (its JSON checked), else the error line."""
    try:
        profile = Profile(data, SOURCE)
        results = predict(spec, profile, batches=[2], mode=mode)
    except SpecError as e:
        line = str(e)
        assert "\n" not in line and SOURCE in line, line
        assert not EXCEPTION_NAMES.search(line), line
        line.encode("utf-8")   # no lone surrogate in the message
        return line
    for p in results:
        assert math.isfinite(p.step_ms) and p.step_ms >= 0
    text = to_json(results, profile)
    text.encode("utf-8")
    json.loads(text, parse_constant=no_constants)
    return None


def test_the_shipped_profile_and_its_cut_are_valid():
    assert outcome(copy.deepcopy(SHIPPED)) is None
    assert outcome(copy.deepcopy(SMALL), RESNET) is None
    assert outcome(copy.deepcopy(SMALL_CUDA), RESNET) is None
    assert len(FAMILIES) > 60 and len(CUDA_FAMILIES) >= 10, (len(FAMILIES), len(CUDA_FAMILIES))


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:20])
def test_every_field_family_with_a_hostile_value(value):
    """Each family of fields (every key of every kind of point, the header,
    the host, the overhead, the caches, the peaks, the trust record) set to
    one hostile value: an error naming the file, or a finite prediction."""
    errors = 0
    for base, fields in ((SMALL, FAMILIES), (SMALL_CUDA, CUDA_FAMILIES)):
        for path in fields:
            data = copy.deepcopy(base)
            set_path(data, path, value)
            if outcome(data) is not None:
                errors += 1
    assert errors     # every hostile value is refused somewhere (the format, the version)


def test_every_field_family_removed():
    for base, fields in ((SMALL, FAMILIES), (SMALL_CUDA, CUDA_FAMILIES)):
        for path in fields:
            data = copy.deepcopy(base)
            set_path(data, path, None, delete=True)
            outcome(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from([p for p in paths(SMALL) if p]),
       value=st.one_of(st.sampled_from(HOSTILE), st.integers(), st.floats(),
                       st.text(max_size=20), st.lists(st.integers(-3, 3), max_size=3)))
def test_any_field_any_value(path, value):
    """Hypothesis: any field of the profile, anywhere (every point, not one
    per family), set to any value."""
    data = copy.deepcopy(SMALL)
    set_path(data, path, value)
    outcome(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from([p for p in paths(SMALL_CUDA) if p]),
       value=st.one_of(st.sampled_from(HOSTILE), st.floats(), st.integers(-1, 10 ** 20)))
def test_any_field_of_a_gpu_profile_any_value(path, value):
    data = copy.deepcopy(SMALL_CUDA)
    set_path(data, path, value)
    outcome(data)


@pytest.mark.parametrize("field,value,message", [
    (("tables", "fp32", "conv", 3, "stride"), [0, 0],
     "field tables.fp32.conv[3].stride: must be two integers from 1 to 1,024. Received: [0, 0]"),
    (("tables", "fp32", "conv", 0, "groups"), 0, "field tables.fp32.conv[0].groups: must be"),
    (("tables", "fp32", "conv", 0, "groups"), 3, "must divide cin and cout"),
    (("bandwidth", 0, "bandwidth"), 0, "field bandwidth[0].bandwidth: must be a number"),
    (("bandwidth", 0, "bandwidth"), 10 ** 400, "an integer of 401 digits"),
    (("overhead", "forward_s"), float("nan"), "must be a finite number"),
    (("device_name",), "\ud800", "field device_name: text with a lone surrogate"),
    (("device_name",), "\x1b]0;pwned\x07",
     "field device_name: must be plain text (no control characters)"),
    (("tables", "fp32", "ops", "relu"), [], "field tables.fp32.ops.relu: must be a list of at "
                                            "least 1 item"),
    (("tables", "fp32", "linear", 0, "m"), 8.5, "field tables.fp32.linear[0].m: must be an "
                                                "integer"),
    (("tables",), {}, "field tables: must be an object of tables by name"),
    (("tables", "fp32", "conv", 0, "kernel"), [99, 99], "larger than the padded input"),
    (("compile",), {"train": {"speedup": 1, "elementwise_factor": 2}},
     "field compile.train.elementwise_factor: must be a number from 0 to 1"),
])
def test_messages_name_the_file_and_the_field(field, value, message):
    data = copy.deepcopy(SMALL)
    set_path(data, field, value)
    line = outcome(data)
    assert line is not None and line.startswith(SOURCE + ": ") and message in line, line


def test_a_missing_table_the_prediction_needs_is_an_error_naming_it():
    """`"conv": []` once predicted ResNet-18 at a quarter of its time without a word."""
    for kind, needs in (("conv", RESNET), ("linear", LENET), ("ops", RESNET)):
        data = copy.deepcopy(SMALL)
        data["tables"]["fp32"][kind] = {} if kind == "ops" else []
        line = outcome(data, needs)
        assert line and f"table fp32 has no {kind} points" in line, line
    # a table the spec does not need may be empty: NIN (convs, pools) needs no GEMM
    data = copy.deepcopy(SMALL)
    data["tables"]["fp32"]["linear"] = []
    assert outcome(data, archcalc.load(spec_path("nin_cifar.toml")), "train") is None


# --------------------------------------------------------------------------
# files that are no profiles, through the command line


def run_cli(args, timeout=20, cpu_s=10, memory=3 << 30):
    """archcalc in a subprocess, with its CPU time and address space bounded."""
    def limit():
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return subprocess.run([sys.executable, "-m", "archcalc", *args], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit, cwd=ROOT,
                          errors="replace")


def check_refused(result, *needles):
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_a_fifo_and_dev_zero_are_refused_at_once(tmp_path):
    fifo = tmp_path / "profile.json"
    os.mkfifo(fifo)
    lenet = spec_path("lenet5.toml")
    # 1.5 GB and 5 s of CPU: the pass rule for a command that loads no torch
    check_refused(run_cli(["predict", lenet, "--profile", str(fifo)], cpu_s=5,
                          memory=1536 << 20), str(fifo), "not a regular file")
    check_refused(run_cli(["predict", lenet, "--profile", "/dev/zero"], cpu_s=5,
                          memory=1536 << 20), "/dev/zero", "not a regular file")
    check_refused(run_cli(["predict", lenet, "--profile", str(tmp_path)]), "a directory")


def test_deep_huge_and_broken_files(tmp_path):
    lenet = spec_path("lenet5.toml")
    cases = {
        "deep.json": ("[" * 100_000 + "]" * 100_000, "nests"),
        "deep_valid.json": (json.dumps(dict(SMALL, extra=deep(30))),
                            "ARCHCALC_MAX_PROFILE_DEPTH"),
        "digits.json": ('{"format": ' + "9" * 5000 + "}", "not a readable profile"),
        "latin1.json": (None, "not UTF-8"),
        "surrogate.json": (json.dumps(SMALL).replace('"device_name": "',
                                                     '"device_name": "\\ud800'),
                           "lone surrogate"),
        "empty.json": ("", "invalid JSON"),
    }
    for name, (text, needle) in cases.items():
        path = tmp_path / name
        if text is None:
            path.write_bytes(b'{"format": "\xe9"}')
        else:
            path.write_text(text)
        check_refused(run_cli(["predict", lenet, "--profile", str(path)], cpu_s=5,
                              memory=1536 << 20), str(path), needle)
    big = tmp_path / "big.json"
    with open(big, "w") as fh:
        fh.write(" " * (9 << 20) + "{}")
    check_refused(run_cli(["predict", lenet, "--profile", str(big)]), "ARCHCALC_MAX_PROFILE_BYTES")


def test_the_schemas_extremes_predict_finite_times(tmp_path):
    """The slowest profile the schema admits (1 byte/s, every time an hour)
    and the fastest (10^18/s, every time 0) predict finite steps: JSON output
    never holds NaN or Infinity."""
    for rate, seconds in ((1, 3600), (1e18, 0)):
        data = copy.deepcopy(SMALL)
        data["bandwidth"] = [{"bytes": 1, "bandwidth": rate}, {"bytes": 2 ** 50, "bandwidth": rate}]
        for _, point, key in timed(data):
            point[key] = seconds
        path = tmp_path / f"extreme{rate:g}.json"
        path.write_text(json.dumps(data))
        result = CliRunner().invoke(main, ["predict", spec_path("vgg16.toml"), "--profile",
                                           str(path), "--format", "json", "--mode", "train",
                                           "--batch", "1,64"])
        assert result.exit_code == 0, result.stderr
        out = json.loads(result.stdout, parse_constant=no_constants)
        assert all(math.isfinite(r["step_ms"]) for r in out["results"])


def timed(data):
    """(path, the object, key) of every time in a profile."""
    for path in paths(data):
        if path and isinstance(path[-1], str) and path[-1].endswith("_s") and \
                path[-1] not in ("budget_s", "elapsed_s", "wall_s", "flops_per_s"):
            target = data
            for p in path[:-1]:
                target = target[p]
            yield path, target, path[-1]


def test_float_options_refuse_nan_and_infinity():
    for value in ("nan", "inf", "-inf", "0", "1e400"):
        result = CliRunner().invoke(main, ["calibrate", "--budget-s", value, "-o",
                                           "/nonexistent/p.json"])
        assert result.exit_code == 2 and "--budget-s" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_calibrate_refuses_an_unwritable_output_before_measuring(tmp_path):
    result = run_cli(["calibrate", "--quick", "-o", str(tmp_path / "missing" / "p.json")])
    check_refused(result, "no such folder")


def test_the_schema_reference_in_the_docs_is_current():
    page = open(os.path.join(ROOT, "docs", "profiles.md"), encoding="utf-8").read()
    assert schema.markdown() in page, "regenerate: python -m archcalc.profiles.schema"


def test_load_profile_by_name_and_missing():
    assert load_profile("cpu-xeon-1t").device == "cpu"
    with pytest.raises(SpecError, match="no such profile"):
        load_profile("no-such-profile")
