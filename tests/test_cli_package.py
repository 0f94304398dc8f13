"""The command line's package and the rules it shares with the Python API:
--set parsing, the import-target form, the fp16 rule, calibrate's --tables
grammar, and the one render(result, fmt) every command prints through."""
from __future__ import annotations

import ast
import csv
import io
import json
import os

import pytest
from hypothesis import given, strategies as st

from archcalc.errors import SpecError
from archcalc.options import check_variables, is_import_target, parse_sets, refuse_fp16_on_cpu
from archcalc.profiles.schema import parse_table_names
from archcalc.render import RENDERERS, Records, render

CLI = os.path.join(os.path.dirname(__file__), "..", "archcalc", "cli")


def _cli_modules():
    return sorted(os.path.join(CLI, f) for f in os.listdir(CLI) if f.endswith(".py"))


def test_cli_modules_are_small():
    """No file over 800 lines, no function over 80 (the project's standard)."""
    for path in _cli_modules():
        text = open(path, encoding="utf-8").read()
        assert text.count("\n") <= 800, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 80, f"{path}: {node.name}"


def test_cli_writes_no_file_itself():
    """Every file a command writes goes through archcalc.output.write_atomic."""
    for path in _cli_modules():
        tree = ast.parse(open(path, encoding="utf-8").read())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "open"]
        assert not calls, path


def test_parse_sets_reads_integers_and_floats():
    assert parse_sets(["C=256", " width = 1.1 ", "use_se=0"]) == \
        {"C": 256, "width": 1.1, "use_se": 0}
    assert isinstance(parse_sets(["C=256"])["C"], int)


@pytest.mark.parametrize("item", ["C", "=3", "1x=3", "C=abc", "C=-1", "C=nan", "C=inf",
                                  "C=-0.5", "C=0.0", "a.b=1"])
def test_parse_sets_refuses_bad_bindings(item):
    with pytest.raises(SpecError, match="--set"):
        parse_sets([item])


@pytest.mark.parametrize("value, message", [(-1, "must not be negative"),
                                            (float("nan"), "finite and positive"),
                                            (0.0, "finite and positive"),
                                            ("64", "must be a number")])
def test_the_python_api_binds_by_the_same_rules(value, message):
    import archcalc
    with pytest.raises(SpecError, match=f"archcalc.load C: .*{message}"):
        archcalc.load("specs/tricks/7x7-vs-3x3/three_3x3.toml", C=value)
    with pytest.raises(SpecError, match=message):
        check_variables({"C": value}, "here")


def test_the_python_api_binds_numbers():
    import archcalc
    spec = archcalc.load("specs/tricks/7x7-vs-3x3/three_3x3.toml", C=64, H=7, W=7)
    # three 3x3 convs of 64 -> 64 channels, no bias: 3 * 9 * 64 * 64
    assert spec.analyze().totals["params"] == 3 * 9 * 64 * 64


@given(st.integers(min_value=0, max_value=10 ** 12))
def test_parse_sets_any_non_negative_integer(n):
    assert parse_sets([f"N={n}"]) == {"N": n}


@pytest.mark.parametrize("text, expected", [
    ("torchvision.models:resnet50", True),
    ("path/to/net.py:Net", True),
    ("mypkg.nets:build_net", True),
    ("specs/vgg16.toml", False),
    ("vgg16", False),
    (":resnet50", False),
    ("torchvision.models:", False),
    ("torchvision models:resnet50", False),
    ("torchvision.models:1net", False),
])
def test_is_import_target(text, expected):
    assert is_import_target(text) is expected


def test_an_existing_file_with_a_colon_is_a_spec(tmp_path):
    path = tmp_path / "a:b"
    path.write_text("")
    assert not is_import_target(str(path))


def test_fp16_needs_a_gpu():
    refuse_fp16_on_cpu("--amp", ["fp16"], on_cpu=False)
    refuse_fp16_on_cpu("--amp", [None], on_cpu=True)
    refuse_fp16_on_cpu("--tables", ["fp32", "bf16-cl"], on_cpu=True)
    with pytest.raises(SpecError, match=r"^--amp fp16 needs a GPU; on the CPU use --amp bf16$"):
        refuse_fp16_on_cpu("--amp", ["fp16"], on_cpu=True, instead="--amp bf16")
    with pytest.raises(SpecError, match="--tables fp16 needs a GPU"):
        refuse_fp16_on_cpu("--tables", ["fp32", "fp16-cl"], on_cpu=True)


def test_table_names():
    assert parse_table_names("fp32, bf16-cl,fp32,,fp16") == ["fp32", "bf16-cl", "fp16"]
    for bad in ("", ",", "fp64", "fp32-nhwc", "fp32-cl-cl", "FP32"):
        with pytest.raises(SpecError, match="--tables takes dtypes"):
            parse_table_names(bad)


ROWS = [{"kind": "conv", "params": 1728}, {"kind": "relu", "params": 0}]


def test_render_records_in_each_format():
    assert json.loads(render(Records(ROWS), "json")) == {"rows": ROWS}
    assert list(csv.reader(io.StringIO(render(Records(ROWS), "csv")))) == \
        [["kind", "params"], ["conv", "1728"], ["relu", "0"]]
    assert render(Records(ROWS), "markdown") == \
        "| kind | params |\n|---|---|\n| conv | 1728 |\n| relu | 0 |\n"


def test_render_dispatches_by_type_not_by_command():
    class Subclass(Records):
        pass
    assert render(Subclass(ROWS), "json") == render(Records(ROWS), "json")
    with pytest.raises(TypeError, match="no renderer for dict"):
        render({"rows": ROWS}, "json")
    # every result the commands print has a renderer
    assert {"Report", "Comparison", "CheckResult", "SweepResult", "BenchRun", "Prediction",
            "Records", "LintResults", "Explanation"} <= set(RENDERERS)
