"""archcalc train and bench on the CPU: accuracy on the bundled digits, the
DDP path (gloo, 2 processes) against one process, checkpoints and resume, the
bench JSON, and one-line errors for bad options."""
import json
import os
import pickle
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from archcalc.cli import main
from conftest import ROOT, spec_path

torch = pytest.importorskip("torch")


def run(*args):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as fh:
        return json.load(fh)


def test_lenet5_learns_the_digits(tmp_path):
    pytest.importorskip("sklearn")
    code, out, err = run("train", spec_path("lenet5.toml"), "--data", "digits", "--epochs", "3",
                         "--seed", "0", "--out", str(tmp_path), "--plot")
    assert code == 0, err
    history = metrics(tmp_path)
    assert len(history) == 3
    assert history[-1]["test_accuracy"] >= 0.90
    assert "accuracy" in out and "%" in out
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,train_loss,test_loss")
    assert (tmp_path / "checkpoint.pt").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_with_gloo_matches_one_process(tmp_path):
    common = ["train", spec_path("lenet5.toml"), "--data", "synthetic", "--epochs", "2",
              "--batch", "16", "--seed", "3"]
    one = tmp_path / "one"
    code, _, err = run(*common, "--out", str(one))
    assert code == 0, err
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                           "-m", "archcalc", *common, "--out", str(two)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 1/2") == 1  # only rank 0 prints
    a, b = metrics(one), metrics(two)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert len(x["step_losses"]) == len(y["step_losses"]) == 32
        assert max(abs(p - q) for p, q in zip(x["step_losses"], y["step_losses"])) < 1e-5
        assert abs(x["test_loss"] - y["test_loss"]) < 1e-5
        assert x["test_accuracy"] == y["test_accuracy"]


def test_resume_continues_and_interrupt_saves(tmp_path):
    import archcalc
    from archcalc.graph import build_graph
    from archcalc.torch.train import TrainConfig, train
    graph = build_graph(archcalc.load(spec_path("lenet5.toml")))
    config = TrainConfig(data="synthetic", epochs=3, batch=32, out=str(tmp_path))

    def interrupt(epoch, step, total):
        if epoch == 2 and step == 3:
            raise KeyboardInterrupt
    messages = []
    with pytest.raises(KeyboardInterrupt):
        train(graph, config, say=messages.append, progress=interrupt)
    assert "interrupted in epoch 2 after step 3 of 16" in messages[-1]
    assert [m["epoch"] for m in metrics(tmp_path)] == [1]
    config.resume = True
    history = train(graph, config, say=messages.append)
    assert [m.epoch for m in history] == [1, 2, 3]
    assert "resumed from" in messages[-3]  # then epochs 2 and 3


@pytest.mark.parametrize("schedule", ["step", "exponential", "inverse", "cosine", "plateau",
                                      "cyclic"])
@pytest.mark.parametrize("optimizer", ["momentum"])
def test_schedules_change_the_learning_rate(tmp_path, schedule, optimizer):
    code, _, err = run("train", spec_path("lenet5.toml"), "--epochs", "3", "--optimizer",
                       optimizer, "--lr", "0.01", "--schedule", schedule, "--augment", "crop,flip",
                       "--label-smoothing", "0.1", "--out", str(tmp_path))
    assert code == 0, err
    lrs = [m["lr"] for m in metrics(tmp_path)]
    if schedule in ("exponential", "inverse", "cosine"):
        assert lrs[1] < lrs[0] and lrs[2] < lrs[1]
    if schedule == "exponential":
        assert lrs[1] == pytest.approx(0.009)
    if schedule == "inverse":
        assert lrs[1] == pytest.approx(0.01 / 1.5)


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adagrad", "rmsprop", "adam"])
def test_every_optimizer_trains(tmp_path, optimizer):
    code, _, err = run("train", spec_path("lenet5.toml"), "--epochs", "2", "--optimizer",
                       optimizer, "--out", str(tmp_path))
    assert code == 0, err
    history = metrics(tmp_path)
    assert history[1]["train_loss"] < history[0]["train_loss"]


def test_cifar10_pickles_from_a_local_folder(tmp_path):
    folder = tmp_path / "cifar"
    folder.mkdir()
    rng = torch.Generator().manual_seed(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = torch.randint(0, 256, (20, 3072), generator=rng, dtype=torch.uint8).numpy()
        labels = torch.randint(0, 10, (20,), generator=rng).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
    code, out, err = run("train", spec_path("lenet5.toml"), "--data", f"cifar10:{folder}",
                         "--epochs", "1", "--batch", "20", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert metrics(tmp_path / "run")[0]["samples_per_s"] > 0


def test_bench_json_on_cpu():
    # batch 2 and 3 steps: the JSON's arithmetic is the same as at 8 and 5, at a fifth of the work
    code, out, err = run("bench", spec_path("resnet18.toml"), "--device", "cpu", "--batch", "1,2",
                         "--steps", "3", "--warmup", "1", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == "ResNet-18"
    results = data["results"]
    assert [r["batch"] for r in results] == [1, 2]
    for r in results:
        assert set(r) >= {"latency_ms", "latency_p90_ms", "throughput", "flops_per_step",
                          "achieved_tflops", "predicted_memory_bytes", "measured_memory_bytes"}
        assert r["latency_ms"] > 0 and r["latency_p90_ms"] >= r["latency_ms"] * 0.999
        assert r["throughput"] == pytest.approx(r["batch"] / (r["latency_ms"] / 1e3), rel=1e-9)
        assert r["flops_per_step"] == 3_637_805_568 * r["batch"]  # calculated forward FLOPs
        assert r["achieved_tflops"] == pytest.approx(
            r["flops_per_step"] / (r["latency_ms"] / 1e3) / 1e12, rel=1e-9)
        assert r["measured_memory_bytes"] > 0 and r["predicted_memory_bytes"] > 0


def test_bench_train_mode_and_per_layer():
    code, out, err = run("bench", spec_path("lenet5.toml"), "--batch", "4", "--mode", "train",
                         "--steps", "2", "--warmup", "1", "--per-layer", "--peak", "measure")
    assert code == 0, err
    assert "Per layer at batch 4" in out and "FLOP/byte" in out
    assert "forward + backward per layer kind" in out


@pytest.mark.parametrize("args, fragment", [
    (["train", "--optimizer", "adamw"], "'adamw' is not one of"),
    (["train", "--data", "mnist"], "--data takes one of synthetic, digits, digits-distorted, cifar10:DIR"),
    (["train", "--data", "cifar10:/nonexistent/folder"], "no such folder"),
    (["train", "--augment", "rotate"], "--augment takes crop and/or flip"),
    (["train", "--batch", "100000"], "larger than the 512 training samples"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--device", "cuda"], "no CUDA device is available"),
    (["bench", "--batch", "0"], "must be positive integers"),
    (["bench", "--batch", "100000000", "--mode", "train"], "the largest batch that fits is"),
    (["bench", "--mode", "fast"], "'fast' is not one of"),
    (["bench", "--amp", "fp16"], "--amp fp16 needs a GPU"),
    (["bench", "--max-batch"], "--max-batch needs a CUDA device"),
])
def test_bad_train_and_bench_options(args, fragment):
    command, *rest = args
    code, out, err = run(command, spec_path("lenet5.toml"), *rest)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


def test_unbound_variables_cannot_be_trained(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[vars]\nC = "?"\n[model]\ninput = [1, 8, 8]\n'
                    'layers = [{conv = "C", kernel = 3}, {fc = 10}]\n')
    for command in ("train", "bench"):
        code, out, err = run(command, str(path))
        assert code == 2 and "unbound variables (C)" in err and "--set" in err, err


def test_imagefolder_from_generated_pngs(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image
    rng = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(8):
                pixels = torch.randint(0, 256, (20, 20, 3), generator=rng, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    code, out, err = run("train", spec_path("lenet5.toml"), "--data",
                         f"imagefolder:{tmp_path / 'images'}", "--epochs", "1", "--batch", "8",
                         "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert metrics(tmp_path / "run")[0]["samples_per_s"] > 0
    code, out, err = run("train", spec_path("lenet5.toml"), "--data", f"imagefolder:{tmp_path}")
    assert code == 2 and "needs train/ and test/" in err
