"""train's CPU threads (chosen from a step's work, --threads overrides, the
choice in the header) and its output in a real terminal: the header and each
epoch's line on lines of their own, never on the progress bar's line."""
import os
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

from archcalc.torch.threads import MACS_PER_THREAD, choose_threads
from conftest import ROOT, spec_path

# LeNet-5's forward multiply-accumulates per image, layer by layer from the
# paper's sizes: C1 6x28x28 outputs of 5x5x1, C3 16x10x10 of 5x5x6, C5 120 of
# 5x5x16, F6 84x120, output 10x84 (the pools have none)
LENET5_MACS = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 84 * 120 + 10 * 84
# ResNet-50 at 224: the paper's 3.8 G multiply-adds (torchvision's count: 4.09 G)
RESNET50_MACS = 4_089_184_256


def test_lenet5_arithmetic_is_the_analysis():
    from archcalc.analysis import analyze
    from archcalc.graph import build_graph
    from archcalc.spec.loader import load
    assert LENET5_MACS == 416_520
    assert analyze(build_graph(load(spec_path("lenet5.toml"))), batch=1).totals["macs"] \
        == LENET5_MACS


@pytest.mark.parametrize("cores", [1, 2, 16, 64])
def test_a_small_model_gets_one_thread_on_any_machine(cores):
    # the run: LeNet-5 at batch 32 ran 51-257 samples/s on the default
    # threads and 1,100-2,800 on one
    choice = choose_threads(LENET5_MACS * 32, "cpu", cores=cores, load=0.0, environment={})
    assert choice.threads == 1
    assert choice.describe().startswith("threads: 1 (auto: 13 M forward MACs a step")


def test_a_large_step_gets_every_idle_core():
    step = RESNET50_MACS * 32
    assert choose_threads(step, "cpu", cores=16, load=0.0, environment={}).threads == 16
    # other processes keep 12.4 of the 16 cores busy: 4 are left
    assert choose_threads(step, "cpu", cores=16, load=12.4, environment={}).threads == 4
    assert choose_threads(step, "cpu", cores=2, load=3.5, environment={}).threads == 1
    assert choose_threads(step, "cpu", cores=2, load=None, environment={}).threads == 2


def test_the_user_and_the_launcher_decide_first():
    step = RESNET50_MACS * 32
    assert choose_threads(step, "cpu", requested=3, cores=16, environment={}).describe() \
        == "threads: 3 (--threads)"
    # torchrun sets OMP_NUM_THREADS=1 for each of several processes
    omp = choose_threads(step, "cpu", cores=16, load=0.0, environment={"OMP_NUM_THREADS": "1"},
                         current=1)
    assert (omp.threads, omp.reason) == (1, "OMP_NUM_THREADS")
    gpu = choose_threads(step, "cuda:0", cores=16, environment={}, current=16)
    assert gpu.threads == 16 and "runs on cuda:0" in gpu.reason
    # processes launched without OMP_NUM_THREADS share the cores
    shared = choose_threads(step, "cpu", cores=16, load=0.0, environment={}, processes=4)
    assert shared.threads == 4 and shared.reason.endswith("16 cores, load 0.0, 4 processes")


@given(st.integers(0, 10**13), st.integers(0, 10**13), st.integers(1, 256),
       st.one_of(st.none(), st.floats(0, 512)), st.integers(1, 16))
def test_threads_grow_with_the_work_and_stay_within_the_idle_cores(a, b, cores, load,
                                                                   processes):
    small, large = sorted((a, b))
    n_small, n_large = (choose_threads(work, "cpu", cores=cores, load=load, environment={},
                                       processes=processes).threads for work in (small, large))
    assert 1 <= n_small <= n_large <= cores
    assert n_large == 1 or n_large * processes <= cores      # the processes never oversubscribe
    if small < 2 * MACS_PER_THREAD:
        assert n_small == 1
    if load is not None:
        assert n_large <= max(1, round(cores - load))


def test_library_train_sets_the_choice_and_restores_the_callers_threads(tmp_path):
    torch = pytest.importorskip("torch")
    from archcalc.graph import build_graph
    from archcalc.spec.loader import load
    from archcalc.torch.train import TrainConfig, train
    graph = build_graph(load(spec_path("lenet5.toml")))
    before = torch.get_num_threads()
    seen, lines = [], []

    def progress(epoch, step, total):
        seen.append(torch.get_num_threads())
    config = TrainConfig(data="synthetic", epochs=1, batch=64, out=str(tmp_path), threads=1,
                         memory_check=False)
    train(graph, config, say=lines.append, progress=progress)
    assert set(seen) == {1}
    assert torch.get_num_threads() == before
    assert "threads: 1 (--threads)" in lines[0]


def test_threads_zero_is_refused_in_one_line(tmp_path):
    from click.testing import CliRunner
    from archcalc.cli import main
    result = CliRunner().invoke(main, ["train", spec_path("lenet5.toml"), "--threads", "0",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--threads" in result.stderr and "Traceback" not in result.stderr


CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def terminal_screen(text: str, columns: int) -> list[str]:
    """The lines a terminal shows after `text`: carriage return, newline,
    auto-wrap at `columns`, erase line (ESC[K, ESC[2K) and cursor up (ESC[nA);
    colours and cursor visibility change nothing on the screen."""
    lines, row, col, i = [[]], 0, 0, 0
    while i < len(text):
        char = text[i]
        match = CONTROL.match(text, i) if char == "\x1b" else None
        if match:
            arg, command = match.groups()
            if command == "K":
                lines[row] = lines[row][:col] if arg in ("", "0") else []
            elif command == "A":
                row = max(0, row - int(arg or 1))
            i = match.end()
            continue
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
        elif char >= " ":
            if col >= columns:
                row, col = row + 1, 0
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = char
            col += 1
        while len(lines) <= row:
            lines.append([])
        i += 1
    return ["".join(line).rstrip() for line in lines]


def run_in_terminal(args, tmp_path, columns=100):
    """archcalc with stdout and stderr on one pseudo-terminal, as in a shell."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM",
                                                             "COLUMNS", "LINES", "CI")}
    env.update(TERM="xterm-256color", COLUMNS=str(columns), PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "archcalc", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=env, cwd=str(tmp_path))
    os.close(slave)
    chunks = []
    give_up = time.monotonic() + 300     # a hang guard, not a timing
    try:
        while time.monotonic() < give_up:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:   # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        try:
            code = proc.wait(timeout=max(1.0, give_up - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_header_and_epoch_lines_stand_on_their_own_lines_in_a_terminal(tmp_path):
    pytest.importorskip("torch")
    code, text = run_in_terminal(["train", spec_path("lenet5.toml"), "--data", "synthetic",
                                  "--epochs", "2", "--batch", "64", "--out", "run"], tmp_path)
    screen = terminal_screen(text, 100)
    shown = "\n".join(screen)
    assert code == 0, shown
    assert "━" in text   # the bar was drawn (rich saw a terminal) ...
    assert "━" not in shown   # ... and is gone at the end (transient)
    assert not re.search(r"\d:\d\d:\d\d\s*(epoch|training)", shown), shown
    assert screen[0].startswith("training LeNet-5: 512 training and 128 test samples"), shown
    for epoch in (1, 2):
        rows = [line for line in screen if f"epoch {epoch}/2" in line]
        assert len(rows) == 1 and rows[0].startswith(f"epoch {epoch}/2  train loss "), shown
    header = " ".join(screen[:screen.index(next(l for l in screen if l.startswith("epoch 1/2")))])
    assert re.search(r"threads: 1 \(auto: 27 M forward MACs a step, one thread per 100 M; "
                     r"\d+ cores?(, load \d+\.\d)?\)", " ".join(header.split())), header
