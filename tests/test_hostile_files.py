"""Hostile specs, checkpoints and options on the torch side (issue 9): no code
from a spec or a checkpoint ever runs, an interrupted run resumes exactly, a
model too large for the machine is refused before anything is allocated (and
the estimate bounds what a run really uses), and every bad value or output
path ends in one line with exit 2 (exit 1 for a run that fails)."""
import ast
import builtins
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from archcalc.cli import main
from conftest import ROOT, spec_path

torch = pytest.importorskip("torch")

# strings that break naive code generation: quotes that close a docstring,
# escapes that do not parse, newlines that leave a comment, code that would run
HOSTILE = [
    'a"""\nopen("PWNED_1", "w").write("x")\n"""',
    "b'''\nopen('PWNED_2', 'w')\n'''",
    "c\\N{LATIN SMALL LETTER A} \\N \\x \\u12",
    "d\\",
    "e\r\nopen('PWNED_3', 'w')  # \u2028 \x0b \x0c",
    "f ü 中文 \U0001F600",
    "__import__('os').system('touch PWNED_4')",
    "g\"; open('PWNED_5', 'w'); x = \"",
]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def toml_string(text: str) -> str:
    """A TOML basic string holding any text (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


TINY = """
[model]
name = "tiny"
input = [1, 8, 8]
layers = [
  {name = "c1", conv = 4, kernel = 3, activation = "relu"},
  {name = "drop", dropout = 0.25},
  {name = "fc", fc = 10},
]
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


# -- export: spec strings never become code ----------------------------------

ALLOWED_CALLS = {"super", "float", "PartialConv2d", "Subsample", "LocallyConnected2d",
                 "SqueezeExcitation", "Maxout", "PadShortcut"}


def check_exported(text: str, class_name_hint: str = "") -> ast.ClassDef:
    """The file's statements are the model's and nothing else: a docstring,
    three imports, copied modules, the class, the __main__ block. Inside the
    class, every call is to nn.<Module>, self.<layer>, torch.cat or super()."""
    tree = ast.parse(text)
    body = tree.body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    assert [ast.unparse(n) for n in body[1:4]] == [
        "import torch", "from torch import nn", "from torch.nn import functional as F"]
    assert all(isinstance(n, ast.ClassDef) for n in body[4:-1])
    main_block = body[-1]
    assert isinstance(main_block, ast.If) and ast.unparse(main_block.test) == \
        "__name__ == '__main__'"
    assert [ast.unparse(s) for s in main_block.body][1] == \
        "print(sum((p.numel() for p in model.parameters())))"
    model = body[-2]
    for node in ast.walk(model):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            ok = (func in ALLOWED_CALLS or func == "torch.cat" or func == "super().__init__"
                  or (func.startswith("nn.") and hasattr(torch.nn, func[3:]))
                  or (func.startswith("self.") and func[5:].isidentifier()))
            assert ok, func
        if isinstance(node, ast.Name):
            assert node.id in {"self", "x", "torch", "nn", "super", "float", *ALLOWED_CALLS} \
                or node.id.startswith(("x", "indices_")), node.id
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value in ("inf", "-inf", "nan", "same", "valid", "zeros", "nearest",
                                  "bilinear"), node.value
    return model


def test_export_python_quotes_every_spec_string(tmp_path):
    """Through the CLI: hostile model name, source, notes and spec file name."""
    name, source, notes = HOSTILE[0] + HOSTILE[2], HOSTILE[1] + HOSTILE[4], \
        " ".join(HOSTILE[3:])
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = folder / 'x"""\nopen("PWNED_6","w")\n\\N.toml'
    spec.write_text(TINY.replace('name = "tiny"', f"name = {toml_string(name)}\n"
                                 f"source = {toml_string(source)}\n"
                                 f"notes = {toml_string(notes)}"))
    out = tmp_path / "exported.py"
    code, _, err = run("export", spec, "-o", out)
    assert code == 0, err
    text = out.read_text()
    assert text.isascii()
    check_exported(text)
    doc = ast.get_docstring(ast.parse(text), clean=False)
    for s in (name, source, notes, spec.name):   # kept exactly, as data
        assert s in doc
    proc = subprocess.run([sys.executable, str(out)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(4 * 9 + 4 + 144 * 10 + 10)
    assert not list(tmp_path.glob("PWNED*"))


def test_export_sanitizes_module_names_and_runs_nothing(tmp_path):
    """Defence in depth: layer names the spec side would refuse, fed straight
    to the exporter, become unique identifiers; the model still works."""
    from torch import nn

    from archcalc.torch.build import SpecModel, SpecSequential
    from archcalc.torch.export import to_python
    body = SpecSequential()
    # torch refuses "forward" itself, not "forward!": sanitized, it would shadow the method
    names = [*HOSTILE, "forward!", "training?", "__init__ ", "class", "match", "1x", "", "_",
             "a b", "a-b"]
    width = 2
    for i, name in enumerate(n.replace(".", "_dot_") for n in names if n):  # torch refuses dots
        body.add_module(name, nn.Conv2d(width, width, 1) if i % 2 else nn.ReLU())
    model = SpecModel(body, {}, HOSTILE[6])
    text = to_python(model, source=HOSTILE[0], cite=HOSTILE[4], notes=HOSTILE[7])
    tree = check_exported(text)
    attributes = [t.attr for n in ast.walk(tree) if isinstance(n, ast.Assign)
                  for t in n.targets if isinstance(t, ast.Attribute)]
    assert len(attributes) == len(set(attributes)) == len([n for n in names if n])
    assert not {"forward", "training", "__init__"} & set(attributes)
    script = tmp_path / "m.py"
    script.write_text(text + textwrap.dedent(f"""
        m = {tree.name}()
        ref = [mod for mod in m.children()]
        y = m(torch.randn(1, {width}, 3, 3))
        assert y.shape == (1, {width}, 3, 3), y.shape
        print("ran", len(ref))
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"ran {len(attributes)}" in proc.stdout
    assert not list(tmp_path.glob("PWNED*"))


def test_export_of_a_huge_model_allocates_nothing(tmp_path):
    spec = tmp_path / "huge.toml"
    spec.write_text('[model]\nname = "huge"\ninput = [3, 224, 224]\n'
                    'layers = [{conv = 1000000, kernel = 3}, {global_avgpool = true}, {fc = 10}]\n')
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, err = run("export", spec)
    assert code == 0, err
    assert "nn.Conv2d(3, 1000000" in out
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KB


# -- checkpoints: loaded as data, checked, refused in one line ---------------

def trained(spec, folder, *extra):
    code, _, err = run("train", spec, "--epochs", "1", "--out", folder, *extra)
    assert code == 0, err
    return folder / "checkpoint.pt"


class Payload:
    """Unpickling this would create a file: it must never happen."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.path!r}, 'w').write('ran')",))


@pytest.mark.parametrize("form", ["torch.save", "pickle"])
def test_a_checkpoint_with_code_is_refused_unrun(tmp_path, tiny, form):
    folder = tmp_path / "run"
    ckpt = trained(tiny, folder)
    sentinel = tmp_path / "PWNED"
    payload = {"archcalc": 2, "model": Payload(sentinel), "epoch": 1}
    if form == "torch.save":
        torch.save(payload, ckpt)
    else:
        with open(ckpt, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    code, _, err = run("train", tiny, "--epochs", "2", "--out", folder, "--resume")
    line = one_line(err)
    assert code == 2 and "refused" in line and "nothing in it was run" in line, line
    assert not sentinel.exists()


def test_checkpoint_of_another_spec_optimizer_or_a_damaged_file(tmp_path, tiny):
    folder = tmp_path / "run"
    ckpt = trained(tiny, folder)
    good = ckpt.read_bytes()
    wider = tmp_path / "wider.toml"
    wider.write_text(TINY.replace("conv = 4", "conv = 6"))
    tanh = tmp_path / "tanh.toml"
    tanh.write_text(TINY.replace('"relu"', '"tanh"'))
    cases = [
        ((wider,), "c1.0.weight [4, 1, 3, 3] there, [6, 1, 3, 3] here"),
        ((tanh,), "the same tensors, but other layer arguments"),
        ((tiny, "--optimizer", "sgd"), "--optimizer adam there, sgd here"),
        ((tiny, "--schedule", "cosine"), "--schedule none there, cosine here"),
    ]
    for args, fragment in cases:
        code, _, err = run("train", *args, "--epochs", "2", "--out", folder, "--resume")
        assert code == 2 and fragment in one_line(err), err
    damaged = [(good[:len(good) // 2], "not a readable checkpoint"),
               (os.urandom(5000), "not a"),
               (b"", "not a readable checkpoint")]
    for data, fragment in damaged:
        ckpt.write_bytes(data)
        code, _, err = run("train", tiny, "--epochs", "2", "--out", folder, "--resume")
        assert code == 2 and fragment in one_line(err), err
    # plain data of the wrong form: loads as data, then refused by its checks
    for payload, fragment in [([1, 2, 3], "not an archcalc checkpoint"),
                              ({"model": {}}, "older archcalc")]:
        torch.save(payload, ckpt)
        code, _, err = run("train", tiny, "--epochs", "2", "--out", folder, "--resume")
        assert code == 2 and fragment in one_line(err), err
    state = torch.load(io_bytes(good), weights_only=True)
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
    torch.save(state, ckpt)
    code, _, err = run("train", tiny, "--epochs", "2", "--out", folder, "--resume")
    assert code == 2 and "optimizer state 'exp_avg' of c1.0.weight has shape [3]" in one_line(err)


def io_bytes(data: bytes):
    import io
    return io.BytesIO(data)


# -- interrupted training resumes exactly ------------------------------------

def train_run(graph, folder, **kw):
    from archcalc.torch.train import TrainConfig, train
    config = TrainConfig(data="synthetic", epochs=2, batch=32, optimizer="adam",
                         schedule="cyclic", augment=("crop", "flip"), out=str(folder), **kw)
    messages = []
    return config, messages, lambda **more: train(graph, config, say=messages.append,
                                                  **more)


@pytest.fixture
def tiny_graph(tiny):
    import archcalc
    from archcalc.graph import build_graph
    return build_graph(archcalc.load(str(tiny)))


def step_losses(history):
    return [loss for m in history for loss in m.step_losses]


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_graph):
    """Ctrl-C (a real SIGINT) in epoch 2: the step under way finishes, that
    state is saved with its data order and random states (dropout, crop and
    flip), and --resume gives the uninterrupted run's losses."""
    _, _, go = train_run(tiny_graph, tmp_path / "straight")
    straight = go()
    config, messages, go = train_run(tiny_graph, tmp_path / "cut")

    def sigint(epoch, step, total):
        if (epoch, step) == (2, 3):
            os.kill(os.getpid(), signal.SIGINT)  # handled: the run stops after the next step
    with pytest.raises(KeyboardInterrupt):
        go(progress=sigint)
    assert "interrupted in epoch 2 after step 4 of 16" in messages[-1], messages[-1]
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["position"]["step"] == 4
    assert [m["epoch"] for m in json.loads((tmp_path / "cut" / "metrics.json").read_text())] == [1]
    config.resume = True
    resumed = go()
    assert "resumed from" in messages[-2] and "in epoch 2 at step 4 of 16" in messages[-2]
    assert [m.epoch for m in resumed] == [1, 2]
    a, b = step_losses(straight), step_losses(resumed)
    assert len(a) == len(b) == 32
    assert max(abs(p - q) for p, q in zip(a, b)) < 1e-6
    assert abs(straight[-1].test_loss - resumed[-1].test_loss) < 1e-6
    assert sorted(os.listdir(tmp_path / "cut")) == ["checkpoint.pt", "metrics.csv",
                                                    "metrics.json"]


def test_interrupt_inside_an_update_saves_nothing_false(tmp_path, tiny_graph, monkeypatch):
    """A KeyboardInterrupt inside a step (the weights may be half updated):
    the checkpoint keeps the last finished epoch, and the message says so.
    A stale temporary file of a dead run is removed."""
    import archcalc.torch.train as train_module
    folder = tmp_path / "run"
    folder.mkdir()
    stale = folder / "checkpoint.pt.tmp4194305"   # above Linux's largest pid
    stale.write_bytes(b"half a checkpoint")
    calls = []
    real = train_module.augment

    def augment(x, kinds, generator):
        calls.append(1)
        if len(calls) == 16 + 5:   # epoch 2, step 5, between zero_grad and the loss
            raise KeyboardInterrupt
        return real(x, kinds, generator)
    monkeypatch.setattr(train_module, "augment", augment)
    config, messages, go = train_run(tiny_graph, folder)
    with pytest.raises(KeyboardInterrupt):
        go()
    assert "in the middle of an update in epoch 2" in messages[-1]
    assert "holds epoch 1" in messages[-1]
    saved = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["position"] is None
    assert not stale.exists()
    assert not [n for n in os.listdir(folder) if ".tmp" in n]


# -- memory: refuse before allocating; the estimate bounds the real peak -----

HUGE = ('[model]\nname = "huge"\ninput = [3, 224, 224]\n'
        'layers = [{conv = 1000000, kernel = 3, padding = 1}, {global_avgpool = true}, '
        '{fc = 10}]\n')


@pytest.mark.parametrize("command", [["train", "--out", "RUN"], ["bench", "--steps", "1"],
                                     ["bench", "--mode", "train"]])
def test_a_model_too_large_is_refused_with_figures_before_allocating(tmp_path, command):
    spec = tmp_path / "huge.toml"
    spec.write_text(HUGE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    args = [tmp_path / "run" if a == "RUN" else a for a in command[1:]]
    code, _, err = run(command[0], spec, *args)
    line = one_line(err)
    assert code == 2, line
    assert "GB of RAM" in line and "GB is available" in line and "--no-memory-check" in line
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KB
    assert not (tmp_path / "run").exists()


def test_check_measures_a_model_too_large_on_the_meta_device(tmp_path):
    spec = tmp_path / "huge.toml"
    spec.write_text(HUGE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, err = run("check", spec)
    assert code == 0, err
    assert "meta device" in out and "--no-memory-check" in out
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300 * 1024  # KB


MEASURE = textwrap.dedent("""
    import gc, json, sys, tempfile
    import archcalc
    from archcalc.graph import build_graph
    from archcalc.torch import memory
    from archcalc.torch.bench import run_bench
    from archcalc.torch.train import TrainConfig, train

    def peak():
        return memory._proc_kb("/proc/self/status", "VmHWM")

    def reset():  # the high-water mark starts again from the present RSS
        gc.collect()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    out = []
    for kind, spec, batch, mode, size in json.loads(sys.argv[1]):
        graph = build_graph(archcalc.load(spec), input=size)
        reset()
        if kind == "bench":
            estimate = memory.for_bench(graph, batch, mode, None, "cpu")
            run_bench(graph, batches=[batch], mode=mode, warmup=1, steps=1)
        else:
            estimate = memory.for_train(graph, batch=batch, optimizer=mode, device="cpu",
                                        samples=640)
            train(graph, TrainConfig(epochs=1, batch=batch, optimizer=mode,
                                     augment=("crop", "flip"), out=tempfile.mkdtemp()),
                  say=lambda m: None)
        out.append([kind, spec, batch, mode, size, estimate.total, peak()])
    print(json.dumps(out))
""")


def test_the_memory_estimate_bounds_the_measured_peak(tmp_path):
    """Peak RSS of a real process (VmHWM) against the guard's estimate, on
    specs whose CPU convolutions unfold their input (LeNet-5's 1-channel
    conv1 at a large batch: bench predicted 1.9 GB for a 4.3 GB peak at
    batch 50,000 before the estimate counted the workspace)."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak")
    configs = [["bench", spec_path("lenet5.toml"), 3000, "inference", None],
               ["bench", spec_path("resnet18.toml"), 16, "train", "3x64x64"],
               ["train", spec_path("lenet5.toml"), 256, "adam", None]]
    proc = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(configs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind, spec, batch, mode, size, estimate, measured in rows:
        assert estimate >= measured, (kind, os.path.basename(spec), batch, mode,
                                      estimate / 2**20, measured / 2**20)
        assert estimate < 4 * measured, (kind, spec, batch, estimate, measured)  # still useful


# -- options and outputs -----------------------------------------------------

@pytest.mark.parametrize("option, value", [("--lr", "inf"), ("--lr", "nan"), ("--lr", "-inf"),
                                           ("--weight-decay", "nan"),
                                           ("--weight-decay", "inf"),
                                           ("--label-smoothing", "nan")])
def test_float_options_refuse_nan_and_infinity(tiny, option, value):
    code, _, err = run("train", tiny, option, value)
    assert code == 2 and option in one_line(err)


def test_threads_are_capped_with_a_note(tiny):
    code, _, err = run("bench", tiny, "--threads", str(10**9), "--steps", "1", "--warmup", "0")
    assert code == 0, err
    assert f"capped at {min(1024, 4 * (os.cpu_count() or 1))}" in err
    code, _, err = run("bench", tiny, "--threads", "0")
    assert code == 2 and "--threads" in one_line(err)


def test_training_that_diverges_fails_in_one_line(tmp_path, tiny):
    code, _, err = run("train", tiny, "--optimizer", "sgd", "--lr", "1e30", "--epochs", "1",
                       "--out", tmp_path / "run")
    line = one_line(err)
    assert code == 1 and "training diverged" in line and "--lr" in line, line


def test_unwritable_outputs_fail_in_one_line(tmp_path, tiny):
    missing = tmp_path / "no" / "such" / "folder"
    cases = [
        (["export", tiny, "-o", missing / "m.py"], 2, "no such folder"),
        (["export", tiny, "-o", tmp_path], 2, "is a directory"),
        (["export", tiny, "-o", "/proc/archcalc-x.py"], 2, "/proc/archcalc-x.py"),
        # a device is never replaced by a rename nor written in place: refused up front
        (["export", tiny, "-o", "/dev/full"], 2, "is a character device"),
        (["bench", tiny, "--steps", "1", "-o", missing / "b.json"], 2, "no such folder"),
        (["bench", tiny, "--steps", "1", "--warmup", "0", "-o", "/dev/full"], 2,
         "is a character device"),
        (["plot", tiny, "-o", missing / "p.png"], 2, "no such folder"),
        (["plot", tiny, "-o", "/proc/archcalc-x.png"], 2, "/proc/archcalc-x.png"),
        (["train", tiny, "--out", "/dev/full"], 2, "--out /dev/full"),
        (["train", tiny, "--out", "/proc/archcalc-x"], 2, "--out /proc/archcalc-x"),
    ]
    for args, status, fragment in cases:
        code, _, err = run(*args)
        line = one_line(err)
        assert code == status and fragment in line, (args, code, line)
    assert not missing.parent.exists()
