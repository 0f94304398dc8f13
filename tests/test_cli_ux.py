"""The command line's manners: usage on a bare call, any output encoding,
bad input in one line with exit 2, an example in every --help."""
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from archcalc.cli import main
from conftest import ROOT, spec_path


def run(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "archcalc", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})})


def test_bare_archcalc_prints_its_usage():
    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: archcalc")
    assert "table" in done.stdout and "error" not in done.stderr


def test_every_command_has_help_with_an_example():
    for name, command in main.commands.items():
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in result.output and f"archcalc {name}" in result.output, name


def test_check_under_an_ascii_encoding():
    pytest.importorskip("torch")
    done = run("check", spec_path("lenet5.toml"), env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr[-1500:]
    assert "all figures agree" in done.stdout
    done.stdout.encode("ascii")


def test_table_under_an_ascii_encoding():
    done = run("table", spec_path("vgg16.toml"), env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr[-1500:]
    assert "138,357,544" in done.stdout


@pytest.mark.parametrize("args", [
    ("table", "no_such.toml"),
    ("table", spec_path("vgg16.toml"), "--input", "3xbig"),
    ("lint", "no_such.toml"),
    ("report", "no_such.toml", "-o", "x.html"),
    ("plot", spec_path("vgg16.toml"), "-o", "x.gif"),
    ("table", spec_path("vgg16.toml"), "--columns", "layer,bogus"),
])
def test_bad_input_is_one_line_and_exit_2(args, tmp_path):
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ")


# -- issue 13: one name per layer, the same flags everywhere, training feedback --

def test_one_name_per_layer_everywhere(tmp_path):
    """The module path (layer1.0.conv1 style) in the table, JSON, CSV, errors
    and the built model; explain takes any spelling."""
    import json as _json
    out = CliRunner().invoke(main, ["table", spec_path("resnet50.toml"), "--format", "json"])
    names = [r["name"] for r in _json.loads(out.stdout)["layers"]]
    assert "layer1.bottleneck1.conv1" in names and not any("/" in n or ">" in n for n in names)
    csv = CliRunner().invoke(main, ["table", spec_path("resnet50.toml"), "--format", "csv"]).stdout
    assert ",layer1.bottleneck1.conv1," in csv
    for spelling in ("layer1.bottleneck1.conv1", "layer1/bottleneck1/conv1",
                     "layer1 > bottleneck1 > conv1"):
        r = CliRunner().invoke(main, ["explain", spec_path("resnet50.toml"), spelling])
        assert r.exit_code == 0 and "layer1.bottleneck1.conv1 (conv+batch_norm+relu)" in r.stdout
    bad = tmp_path / "b.toml"
    bad.write_text('[model]\ninput = [3, 8, 8]\nlayers = [{name = "blk", concat = '
                   '[[{relu = true}], [{name = "c2", conv = 4, kernal = 3}]]}]\n')
    r = CliRunner().invoke(main, ["table", str(bad)])
    assert "layer blk.b2.c2:" in r.stderr
    torch = pytest.importorskip("torch")
    from archcalc.spec.loader import load
    model = load(spec_path("resnet50.toml")).build()
    assert "layer1.bottleneck1.conv1" in dict(model.named_modules())
    del torch


@pytest.mark.parametrize("args", [
    ["kinds", "--format", "json"], ["kinds", "--format", "csv"], ["kinds", "--format", "markdown"],
    ["explain", "specs/vgg16.toml", "conv3_1", "--format", "json"],
    ["explain", "specs/vgg16.toml", "conv3_1", "--format", "markdown"],
    ["compare", "specs/vgg16.toml", "specs/vgg19.toml", "--input", "3x32x32", "--format", "csv"],
])
def test_format_and_input_on_every_command(args):
    args = [spec_path(a[len("specs/"):]) if a.startswith("specs/") else a for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    if "json" in args:
        import json as _json
        data = _json.loads(r.stdout)
        if args[0] == "kinds":
            assert {"conv", "attention", "layer_norm"} <= {k["kind"] for k in data["rows"]}
        else:
            assert data["layer"] == "conv3_1" and data["row"]["params"] == 295_168
    if "csv" in args and args[0] == "compare":
        header, params = r.stdout.splitlines()[:2]
        # at 32x32 VGG-16's fc6 sees 1x1x512: 37,694,248 params; VGG-19 43,003,944
        assert params.startswith("params,37694248,43003944,1.14086,")


def test_check_has_a_machine_format():
    pytest.importorskip("torch")
    import json as _json
    r = CliRunner().invoke(main, ["check", spec_path("lenet5.toml"), "--format", "json"])
    assert r.exit_code == 0, r.output
    data = _json.loads(r.stdout)
    assert data["ok"] is True
    assert {t["figure"] for t in data["totals"]} >= {"params"}
    assert next(t for t in data["totals"] if t["figure"] == "params")["measured"] == 61_706


def test_train_header_memory_and_no_overwrite(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    args = ["train", spec_path("lenet5.toml"), "--data", "digits", "--epochs", "1",
            "-o", str(out), "--seed", "0"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "1,438 training and 359 test samples" in r.stdout and "61,706 params" in r.stdout
    assert "predicted training memory 2.6 MB" in r.stdout
    # torch's tensors (weights, grads, Adam state, saved for backward), not the RSS
    assert "memory 2.6 MB measured / 2.6 MB predicted" in r.stdout
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "already holds a run" in again.stderr
    assert CliRunner().invoke(main, args + ["--force"]).exit_code == 0
