"""Issue 18, families 1 and 5: no output is ever destroyed, and nothing a spec
says is injected into what others open.

Family 1: every command with -o writes through one atomic writer (temporary
in the same folder, fsync, rename), so a write that fails midway (a file-size
limit: RLIMIT_FSIZE makes write() fail with EFBIG partway through) leaves the
old file byte for byte; a path that cannot be written is refused before any
work, in one line, exit 2, creating nothing (a FIFO must not hang).

Family 5: CSV cells never begin a formula (OWASP), markdown rows keep their
columns, SVG stays XML, JSON has no lone surrogate nor NaN, and the terminal
gets no control characters, whatever the spec's name, source and notes hold.
"""
import contextlib
import csv
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from archcalc.cli import main
from archcalc.errors import RunError, SpecError
from archcalc.output import check_output_path, default_output, write_atomic
from archcalc.render.safe import clean, csv_cell, csv_row, json_text, md_cell
from conftest import ROOT, SLOW

TINY = ('[model]\nname = "tiny"\ninput = [3, 8, 8]\n'
        'layers = [{conv = 4, kernel = 3, name = "conv1"}, {relu = true}]\n')
NET_PY = ("from torch import nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
          "        super().__init__()\n        self.conv = nn.Conv2d(3, 4, 3)\n\n"
          "    def forward(self, x):\n        return self.conv(x).relu()\n")
OLD = b"the old file, which must survive byte for byte\n" * 4


def tree(folder) -> dict:
    """Every file under ``folder`` with its bytes (FIFOs and folders by kind)."""
    out = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path) or not os.path.isfile(path):
                out[rel] = "link" if os.path.islink(path) else "dir/fifo"
            else:
                with open(path, "rb") as fh:
                    out[rel] = fh.read()
    return out


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def cli(args, cwd, timeout=120, file_limit=None):
    """archcalc in a subprocess (a FIFO would hang an in-process call forever);
    ``file_limit``: RLIMIT_FSIZE in bytes, SIGXFSZ ignored so write() fails."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "archcalc", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit if file_limit else None)


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE in this process (for commands that load torch: one import,
    not one per subprocess); SIGXFSZ ignored so an over-long write raises EFBIG."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.fixture
def work(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "net.py").write_text(NET_PY)
    return tmp_path


# -- the writer itself ------------------------------------------------------------

def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(OLD)

    def half_then_full_disk(fh):
        fh.write(b"new" * 1000)
        fh.flush()
        raise OSError(28, "No space left on device")
    with pytest.raises(RunError, match="cannot write .*out.bin: No space left on device"):
        write_atomic(str(target), half_then_full_disk)
    assert tree(tmp_path) == {"out.bin": OLD}


def test_an_interrupt_midway_keeps_the_old_file_and_propagates(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(OLD)

    def interrupted(fh):
        fh.write(b"partial")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(target), interrupted)
    assert tree(tmp_path) == {"out.txt": OLD}


@settings(max_examples=60)
@given(old=st.binary(max_size=3000), new=st.binary(max_size=3000),
       cut=st.integers(0, 3000), how=st.sampled_from(["write", "fsync", "replace"]))
def test_any_failure_point_leaves_old_bytes_or_new_bytes(tmp_path_factory, old, new, cut,
                                                         how):
    """Whatever fails (the write after ``cut`` bytes, the fsync, the rename),
    the file holds the old bytes or, on success, the new ones: never a mix."""
    folder = tmp_path_factory.mktemp("atomic")
    target = folder / "f"
    target.write_bytes(old)
    real_fsync, real_replace = os.fsync, os.replace

    def writer(fh):
        fh.write(new[:cut])
        if how == "write" and cut < len(new):
            raise OSError(27, "File too large")
        fh.write(new[cut:])

    def fsync(fd):
        raise OSError(5, "Input/output error")

    def replace(a, b):
        raise OSError(18, "Invalid cross-device link")
    try:
        if how == "fsync":
            os.fsync = fsync
        elif how == "replace":
            os.replace = replace
        failed = False
        try:
            write_atomic(str(target), writer)
        except RunError:
            failed = True
    finally:
        os.fsync, os.replace = real_fsync, real_replace
    expected_fail = how != "write" or cut < len(new)
    assert failed == expected_fail
    assert tree(folder) == {"f": old if failed else new}


def test_permissions_and_symlinks_survive_a_rewrite(tmp_path):
    target = tmp_path / "kept.txt"
    target.write_bytes(OLD)
    os.chmod(target, 0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_atomic(str(link), "new text ü")
    assert os.path.islink(link) and target.read_text(encoding="utf-8") == "new text ü"
    assert os.stat(target).st_mode & 0o777 == 0o640


def test_a_long_multibyte_name_gets_a_temporary_that_fits(tmp_path):
    target = tmp_path / ("\u4e2d" * 80 + ".txt")     # 244 bytes, within NAME_MAX
    target.write_bytes(OLD)
    write_atomic(str(target), "new")
    assert tree(tmp_path) == {target.name: b"new"}


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    from archcalc.output import remove_stale_temporaries
    dead = tmp_path / ".checkpoint.pt.archcalc-4194305.tmp"   # above Linux's largest pid
    live = tmp_path / f".x.archcalc-{os.getppid()}.tmp"       # its writer still runs
    other = tmp_path / "notes.tmp"
    for path in (dead, live, other):
        path.write_bytes(b"x")
    remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])


def test_a_default_output_name_holds_no_control_character():
    assert default_output("specs/a\x1bb\n.toml", ".html") == "a_b_.html"
    assert default_output("vgg16", ".png") == "vgg16.png"


# -- bad output paths: refused before any work, one line, nothing created ----------

# (name, the command line with OUT for the path, the suffix it takes)
COMMANDS = [
    ("report", ["report", "tiny.toml", "-o", "OUT"], ".html"),
    ("plot", ["plot", "tiny.toml", "-o", "OUT"], ".png"),
    ("predict", ["predict", "tiny.toml", "-o", "OUT"], ".json"),
    ("export python", ["export", "tiny.toml", "-o", "OUT"], ".py"),
    ("export onnx", ["export", "tiny.toml", "--to", "onnx", "-o", "OUT"], ".onnx"),
    ("import", ["import", "net.py:Net", "--input", "3x8x8", "-o", "OUT"], ".toml"),
    ("bench", ["bench", "tiny.toml", "--steps", "1", "--warmup", "0", "-o", "OUT"], ".json"),
    ("calibrate", ["calibrate", "--quick", "-o", "OUT"], ".json"),
]


def bad_paths(folder, suffix):
    """(path, what the one line must say); each case built in ``folder``."""
    (folder / "afile").write_text("x")
    (folder / ("adir" + suffix)).mkdir()
    os.mkfifo(folder / ("fifo" + suffix))
    (folder / ("dev" + suffix)).symlink_to("/dev/full")
    cases = [
        (f"no/such/folder/out{suffix}", "no such folder"),
        (f"afile/out{suffix}", "is not a folder"),
        (f"adir{suffix}", "is a directory"),
        (f"fifo{suffix}", "FIFO"),
        (f"dev{suffix}", "character device"),
        (f"new\nline{suffix}", "control character"),
        (f"esc\x1b[31m{suffix}", "control character"),
        ("n" * 300 + suffix, "longer than 255 bytes"),
        ("", ""),                           # -o '': refused, not the default name
        (f"/proc/self/archcalc-x{suffix}", "no file can be created"),
        # root ignores permission bits; a read-only pseudo file system does not
        (f"/sys/archcalc-x{suffix}", "no file can be created"),
    ]
    if os.geteuid() != 0:  # as root chmod stops nothing: /sys above covers read-only
        ro = folder / "readonly"
        ro.mkdir()
        os.chmod(ro, 0o500)
        cases.append((f"readonly/out{suffix}", "no file can be created"))
    return cases


@pytest.mark.parametrize("name, args, suffix", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_bad_output_path_is_refused_before_any_work(work, name, args, suffix):
    cases = bad_paths(work, suffix)
    if name != "report" and not SLOW:
        # one shared check (check_output_path): every case for one command; for
        # the others, that each calls it before any work (all under ARCHCALC_SLOW=1)
        cases = [c for c in cases if c[1] in ("no such folder", "FIFO", "control character")][:3]
    before = tree(work)
    wrong = []
    for path, fragment in cases:
        proc = cli([path if a == "OUT" else a for a in args], work, timeout=60)
        line = one_line(proc.stderr)
        if proc.returncode != 2 or fragment not in line or "-o" not in line:
            wrong.append((path, proc.returncode, line))
        assert "\x1b" not in line and "calibrating" not in proc.stderr
        assert tree(work) == before, (name, path)       # nothing created, nothing touched
    assert not wrong, wrong
    assert not os.path.exists("/proc/self/archcalc-x" + suffix)


def test_calibrate_refuses_the_path_before_measuring(work, monkeypatch):
    import archcalc.torch.calibrate as calibration
    calls = []
    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: calls.append(1) or {})
    result = CliRunner().invoke(main, ["calibrate", "--quick", "-o", str(work / "no" / "p.json")])
    assert result.exit_code == 2 and "no such folder" in one_line(result.stderr)
    assert calls == []


def test_check_output_path_on_an_existing_read_only_file(tmp_path):
    target = tmp_path / "ro.json"
    target.write_bytes(OLD)
    os.chmod(target, 0o444)
    if os.geteuid() == 0:
        check_output_path(str(target))      # root may write it: accepted
    else:
        with pytest.raises(SpecError, match="read-only"):
            check_output_path(str(target))
    assert target.read_bytes() == OLD


# -- a write that fails midway, for every command with -o ---------------------------

PURE = [  # no torch: each in a subprocess under RLIMIT_FSIZE
    ("report", ["report", "tiny.toml", "-o", "OUT"], "r.html"),
    ("report default name", ["report", "tiny.toml"], "tiny.html"),
    ("plot png", ["plot", "tiny.toml", "-o", "OUT"], "p.png"),
    ("plot svg", ["plot", "tiny.toml", "-o", "OUT"], "p.svg"),
    ("plot default name", ["plot", "tiny.toml"], "tiny.png"),
    ("predict", ["predict", "tiny.toml", "-o", "OUT"], "p.json"),
]


@pytest.mark.parametrize("name, args, out", PURE, ids=[c[0] for c in PURE])
def test_a_write_that_fails_midway_keeps_the_old_output(work, name, args, out):
    (work / out).write_bytes(OLD)
    before = tree(work)
    # 1 KiB: each of these outputs is larger (report 25 KB, plot 20-60 KB, predict 3 KB)
    proc = cli([out if a == "OUT" else a for a in args], work, file_limit=1024)
    lines = [x for x in proc.stderr.splitlines() if not x.startswith("note:")]
    assert proc.returncode == 1 and len(lines) == 1, (name, proc.stderr)
    assert f"cannot write {out}: File too large" in lines[0] and "Traceback" not in proc.stderr
    assert tree(work) == before         # the old bytes, and no temporary left


def invoke_limited(args, nbytes):
    with file_size_limit(nbytes):
        return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def in_work(work, monkeypatch):
    monkeypatch.chdir(work)
    return work


TORCH = [  # load torch: in this process (one import), under RLIMIT_FSIZE
    ("export python", ["export", "tiny.toml", "-o", "OUT"], "m.py", 256),
    ("import", ["import", "net.py:Net", "--input", "3x8x8", "-o", "OUT"], "n.toml", 128),
    ("bench", ["bench", "tiny.toml", "--steps", "1", "--warmup", "0", "--format", "json",
               "-o", "OUT"], "b.json", 128),
]


@pytest.mark.parametrize("name, args, out, limit", TORCH, ids=[c[0] for c in TORCH])
def test_a_torch_command_s_failed_write_keeps_the_old_output(in_work, name, args, out, limit):
    pytest.importorskip("torch")
    (in_work / out).write_bytes(OLD)
    before = tree(in_work)
    result = invoke_limited([out if a == "OUT" else a for a in args], limit)
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("note:")]
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert f"cannot write {out}: File too large" in lines[0]
    after = tree(in_work)
    after.pop("__pycache__", None)
    assert {k: v for k, v in after.items() if "__pycache__" not in k} == before


def test_export_onnx_s_failed_write_keeps_the_old_output(in_work):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    (in_work / "m.onnx").write_bytes(OLD)
    result = invoke_limited(["export", "tiny.toml", "--to", "onnx", "-o", "m.onnx"], 256)
    assert result.exit_code == 1 and "cannot write m.onnx" in one_line(result.stderr)
    assert (in_work / "m.onnx").read_bytes() == OLD
    assert sorted(os.listdir(in_work)) == ["m.onnx", "net.py", "tiny.toml"]


def test_calibrate_s_failed_write_keeps_the_old_profile(in_work, monkeypatch):
    pytest.importorskip("torch")
    import archcalc.torch.calibrate as calibration
    monkeypatch.setattr(calibration, "calibrate",
                        lambda *a, **k: {"device_name": "fake", "pad": "x" * 10_000})
    (in_work / "p.json").write_bytes(OLD)
    result = invoke_limited(["calibrate", "--quick", "-o", "p.json"], 1024)
    assert result.exit_code == 1, result.stderr
    assert "cannot write p.json: File too large" in one_line(result.stderr)
    assert tree(in_work)["p.json"] == OLD and not [n for n in os.listdir(in_work) if ".tmp" in n]


def test_train_s_failed_writes_keep_the_old_run(in_work):
    """A finished run, then --force under a 1 KiB file limit: the checkpoint
    cannot be written (exit 1), and the old run's files are intact."""
    pytest.importorskip("torch")
    args = ["train", "tiny.toml", "--data", "synthetic", "--epochs", "1", "--out", "run"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.stderr
    before = tree(in_work / "run")
    assert set(before) == {"checkpoint.pt", "metrics.csv", "metrics.json"}
    result = invoke_limited([*args, "--force"], 1024)
    errors = [x for x in result.stderr.splitlines() if not x.startswith("epoch ")]
    assert result.exit_code == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors == ["error: cannot write run/checkpoint.pt: File too large"], errors
    assert tree(in_work / "run") == before


def test_train_s_library_writers_are_atomic(tmp_path):
    torch = pytest.importorskip("torch")
    from archcalc.torch.train import EpochMetrics, plot_curves, save_atomic, write_metrics
    names = ("checkpoint.pt", "metrics.json", "metrics.csv", "curves.png")
    for name in names:
        (tmp_path / name).write_bytes(OLD)
    history = [EpochMetrics(e, 1.0 / e, 1.1 / e, 0.5, 1e-3, 1.0, 100.0, 1000)
               for e in range(1, 40)]
    with file_size_limit(len(OLD) + 16):
        with pytest.raises(RunError, match="File too large"):
            save_atomic({"w": torch.zeros(10_000)}, str(tmp_path / "checkpoint.pt"))
        with pytest.raises(RunError, match="File too large"):
            write_metrics(str(tmp_path), history)
        if _has("matplotlib"):
            with pytest.raises(RunError, match="File too large"):
                plot_curves(history, str(tmp_path / "curves.png"), "tiny")
    assert tree(tmp_path) == {name: OLD for name in names}


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


# -- family 5: user strings are data in every format ------------------------------

FORMULA = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")   # all but TAB and LF
SURROGATE = re.compile("[\ud800-\udfff]")


def assert_no_formula(text: str):
    for row in csv.reader(io.StringIO(text)):
        for cell in row:
            assert not cell.startswith(FORMULA) or NUMBER.fullmatch(cell), (cell, row)
            assert not CONTROL.search(cell), cell


def md_cells(line: str) -> list:
    """A GFM table row's cells: '|' splits unless backslash-escaped."""
    cells, cell, i = [], "", 0
    body = line.strip()
    assert body.startswith("|") and body.endswith("|"), line
    body = body[1:]
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            cell += body[i:i + 2]
            i += 2
            continue
        if c == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += c
        i += 1
    assert cell.strip() == "", line
    return cells


def assert_markdown_tables(text: str):
    """Each table keeps the header's column count on every row; no raw HTML."""
    width = None
    for line in text.split("\n"):
        if not line.startswith("|"):
            width = None
            continue
        n = len(md_cells(line))
        width = width or n
        assert n == width, (line, width)
    assert "<" not in text and not CONTROL.search(text)


def assert_terminal_safe(text: str):
    assert not CONTROL.search(text) and not SURROGATE.search(text), ascii(text)


def strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in JSON output")
    text.encode("utf-8")              # a lone surrogate cannot be encoded
    return json.loads(text, parse_constant=refuse)


@settings(max_examples=300)
@given(st.lists(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False)), max_size=6))
def test_csv_cells_never_begin_a_formula(values):
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(csv_row(values))
    assert_no_formula(out.getvalue())
    parsed = next(csv.reader(io.StringIO(out.getvalue())), [])
    for value, cell in zip(values, parsed):
        if isinstance(value, int):
            assert int(cell) == value               # numbers stay numbers
        elif isinstance(value, float) and abs(value) != float("inf"):
            assert float(cell) == value             # -1.5 too


@pytest.mark.parametrize("text, cell", [
    ("=1+1", "'=1+1"), ("+1", "+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "' x"), ("\rx", "'\\x0dx"), ("-1.5", "-1.5"), ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("plain", "plain"), ("", ""),
])
def test_owasp_examples(text, cell):
    assert csv_cell(text) == cell


@settings(max_examples=300)
@given(st.lists(st.text(), min_size=1, max_size=5))
def test_markdown_cells_keep_the_row_s_columns(values):
    line = "| " + " | ".join(md_cell(v) for v in values) + " |"
    assert "\n" not in line and "<" not in line
    assert len(md_cells(line)) == len(values)


def test_an_escaped_pipe_in_a_name_stays_text():
    assert md_cells("| " + md_cell("a\\|b") + " | x |") == [" a\\\\\\|b ", " x "]
    assert md_cell("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"


@settings(max_examples=300)
@given(st.text())
def test_clean_text_is_safe_for_a_terminal_and_for_xml(text):
    shown = clean(text)
    assert_terminal_safe(shown)
    assert "\n" not in shown
    shown.encode("utf-8")
    from xml.sax.saxutils import escape
    ET.fromstring(f"<svg><text>{escape(shown)}</text></svg>")


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=300)
@given(json_values)
def test_json_text_is_strict_json(value):
    strict_json(json_text(value))
    strict_json(json_text(value, indent=2, ensure_ascii=False))


# names a TOML file can hold (no lone surrogates), with every kind of control
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


def toml_string(text: str) -> str:
    return '"' + "".join(c if 0x20 <= ord(c) < 0x7f and c not in '"\\'
                         else f"\\U{ord(c):08x}" for c in text) + '"'


def spec_text(name: str, notes: str) -> str:
    return (f"[model]\nname = {toml_string(name)}\nsource = {toml_string(notes)}\n"
            f"notes = {toml_string(notes)}\ninput = [3, 8, 8]\n"
            'layers = [{conv = 4, kernel = 3, name = "conv1"}, {relu = true}]\n')


def run_in(folder, *args):
    result = CliRunner(env={"COLUMNS": "200"}).invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def hostile_names_in_every_text_format(folder, name, notes):
    spec = folder / "s.toml"
    spec.write_text(spec_text(name, notes), encoding="utf-8")
    other = folder / "o.toml"
    other.write_text(spec_text(notes, name), encoding="utf-8")
    code, out, err = run_in(folder, "table", spec, "--format", "json")
    if code == 2:                   # the loader refused the name: one clean line
        assert_terminal_safe(one_line(err))
        return
    assert code == 0, err
    assert strict_json(out)["model"] == name     # JSON keeps the name exactly
    for args, check in [
        (["table", spec, "--format", "csv"], assert_no_formula),
        (["compare", spec, other, "--format", "csv"], assert_no_formula),
        (["predict", spec, "--format", "csv"], assert_no_formula),
        (["table", spec, "--format", "markdown"], assert_markdown_tables),
        (["compare", spec, other, "--format", "markdown"], assert_markdown_tables),
        (["compare", spec, other, "--format", "json"], strict_json),
        (["table", spec], assert_terminal_safe),
        (["compare", spec, other], assert_terminal_safe),
        (["explain", spec, "conv1"], assert_terminal_safe),
        (["explain", spec, "conv1", "--format", "markdown"], assert_terminal_safe),
        (["lint", spec], assert_terminal_safe),
    ]:
        code, out, err = run_in(folder, *args)
        assert code == 0, (args, err)
        check(out)
        assert_terminal_safe(err)


@settings(max_examples=8)
@given(name=names, notes=names)
def test_hostile_names_in_every_text_format(tmp_path_factory, name, notes):
    hostile_names_in_every_text_format(tmp_path_factory.mktemp("names"), name, notes)


@pytest.mark.slow
@settings(max_examples=150)
@given(name=names, notes=names)
def test_hostile_names_in_every_text_format_at_length(tmp_path_factory, name, notes):
    hostile_names_in_every_text_format(tmp_path_factory.mktemp("names"), name, notes)


def hostile_names_make_valid_svg(folder, name):
    pytest.importorskip("matplotlib")
    spec = folder / "s.toml"
    spec.write_text(spec_text(name, name), encoding="utf-8")
    out = folder / "p.svg"
    code, _, err = run_in(folder, "plot", spec, spec, "-o", out)
    if code == 2:
        return
    assert code == 0, err
    ET.parse(out)                       # well-formed XML whatever the name held
    assert_terminal_safe(err)


@settings(max_examples=3)
@given(name=names)
def test_hostile_names_make_valid_svg(tmp_path_factory, name):
    hostile_names_make_valid_svg(tmp_path_factory.mktemp("svg"), name)


@pytest.mark.slow
@settings(max_examples=40)
@given(name=names)
def test_hostile_names_make_valid_svg_at_length(tmp_path_factory, name):
    hostile_names_make_valid_svg(tmp_path_factory.mktemp("svg"), name)


@pytest.mark.parametrize("name", ["\ufffe", "\uffff", "a\x01b", "\x1b[31mred", "x\x0by\x0c"])
def test_svg_from_names_xml_forbids(tmp_path, name):
    pytest.importorskip("matplotlib")
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text(name, name), encoding="utf-8")
    code, _, err = run_in(tmp_path, "plot", spec, spec, "-o", tmp_path / "p.svg")
    assert code == 0, err
    ET.parse(tmp_path / "p.svg")


def test_wrote_lines_and_default_names_carry_no_control_characters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hostile = "a\x1b]0;pwned\x07b.toml"
    (tmp_path / hostile).write_text(TINY)
    for command, made in (("report", "a_]0;pwned_b.html"), ("plot", "a_]0;pwned_b.png")):
        code, out, err = run_in(tmp_path, command, hostile)
        assert code == 0, err
        assert_terminal_safe(out + err)
        assert f"wrote {made}" in err and (tmp_path / made).exists()


def test_a_lone_surrogate_in_a_profile_s_device_name_never_reaches_json(tmp_path):
    from archcalc import profiles
    with open(os.path.join(profiles.root(), profiles.default("cpu") + ".json")) as fh:
        data = json.load(fh)
    data["device_name"] = "cpu \ud800 \x1b[31m"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))      # ensure_ascii: the surrogate as \\ud800
    (tmp_path / "tiny.toml").write_text(TINY)
    code, out, err = run_in(tmp_path, "predict", tmp_path / "tiny.toml", "--profile", path,
                            "--format", "json")
    if code == 2:                           # refused as bad input: one clean line
        assert_terminal_safe(one_line(err))
        return
    assert code == 0, err
    assert not SURROGATE.search(json.dumps(strict_json(out), ensure_ascii=False))
    code, out, err = run_in(tmp_path, "predict", tmp_path / "tiny.toml", "--profile", path)
    assert code == 0, err
    assert_terminal_safe(out)


@pytest.mark.parametrize("command", [["table"], ["compare", "SPEC"], ["lint"]])
def test_markup_and_emoji_codes_in_a_name_are_printed_as_written(tmp_path, command):
    name = ":warning: [bold]x[/] :red_circle:"
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text(name, name), encoding="utf-8")
    args = [spec if a == "SPEC" else a for a in command]
    code, out, err = run_in(tmp_path, *args[:1], spec, *args[1:])
    assert code == 0, err
    assert name in out and "\u26a0" not in out, out


@pytest.mark.parametrize("args", [
    ["export", "tiny.toml", "-o", "tiny.toml"],
    ["export", "tiny.toml", "-o", "link.toml"],          # a symlink to the input
    ["predict", "tiny.toml", "-o", "tiny.toml"],
    ["import", "net.py:Net", "--input", "3x8x8", "-o", "net.py"],
    ["bench", "tiny.toml", "-o", "tiny.toml"],
])
def test_an_output_that_is_the_command_s_input_is_refused(in_work, args):
    (in_work / "link.toml").symlink_to(in_work / "tiny.toml")
    before = tree(in_work)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "is this command's input" in one_line(result.stderr)
    assert tree(in_work) == before
