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
