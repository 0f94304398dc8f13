"""What `pip install .` installs: every module and every shipped spec is in
the wheel, and an installed archcalc (the wheel unpacked away from the clone)
finds its tricks and specs from the package."""
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT, SPECS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    source = build / "src"  # a copy: setuptools writes build/ and *.egg-info into the tree
    os.mkdir(source)
    for item in ("pyproject.toml", "README.md", "archcalc", "specs"):
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, item)) else shutil.copy
        copy(os.path.join(ROOT, item), source / item)
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(out)]
    if importlib.util.find_spec("setuptools"):
        command.append("--no-build-isolation")  # no download when setuptools is here
    env = {**os.environ, "TMPDIR": str(build)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=build, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    wheels = [f for f in os.listdir(out) if f.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(out, wheels[0])


def _files_under(folder, suffix):
    for dirpath, _, files in os.walk(folder):
        if "__pycache__" in dirpath:
            continue
        for f in files:
            if f.endswith(suffix):
                yield os.path.relpath(os.path.join(dirpath, f), folder).replace(os.sep, "/")


def test_wheel_holds_every_module_and_every_spec(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {"archcalc/" + f for f in _files_under(os.path.join(ROOT, "archcalc"), ".py")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)} " \
                             "(add the package to [tool.setuptools] packages in pyproject.toml)"
    specs = {"archcalc/specs/" + f for f in _files_under(SPECS, ".toml")}
    assert specs <= names, f"specs missing from the wheel: {sorted(specs - names)}"
    assert "archcalc/specs/tricks/5x5-vs-3x3/one_5x5.toml" in names
    assert "archcalc/specs/tricks/5x5-vs-3x3/two_3x3.toml" in names
    assert "archcalc/specs/vgg16.toml" in names and "archcalc/specs/lib/vgg.toml" in names


def _run_installed(site, cwd, *args):
    """`archcalc ARGS` with only the unpacked wheel on the path, away from the clone."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.argv = ['archcalc'] + sys.argv[2:]\n"
            "import archcalc; assert archcalc.__file__.startswith(sys.path[0]), archcalc.__file__\n"
            "from archcalc.cli import main; main()")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code, site, *args], capture_output=True,
                          text=True, cwd=cwd, env=env)


def test_installed_archcalc_finds_its_tricks_and_specs(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _run_installed(str(site), elsewhere, "trick", "5x5-vs-3x3")
    assert done.returncode == 0, done.stderr
    assert "25*C^2" in done.stdout and "18*C^2" in done.stdout
    # README command 1, run outside a clone: the shipped spec of that name
    done = _run_installed(str(site), elsewhere, "table", "specs/vgg16.toml", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert '"params": 138357544' in done.stdout
    done = _run_installed(str(site), elsewhere, "table", "specs/no_such_net.toml")
    assert done.returncode == 2 and "no such file" in done.stderr


def test_missing_sympy_names_the_extra_and_exits_2():
    code = ("import sys; sys.modules['sympy'] = None\n"
            "sys.argv = ['archcalc', 'trick', '5x5-vs-3x3']\n"
            "from archcalc.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert 'pip install "archcalc[sym]"' in lines[0] and "'C'" in lines[0]
