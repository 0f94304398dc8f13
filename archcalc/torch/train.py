"""Train a compiled spec: the lectures' optimizers and schedules, per-epoch
metrics, atomic checkpoints, resume, Ctrl-C, and DistributedDataParallel
under torchrun (nccl on GPU, gloo on CPU; only rank 0 prints and writes).

Data order is a seeded permutation per epoch; rank r of W takes every W-th
sample of each global batch, so W processes see exactly the batches one
process would, and their averaged losses equal its losses.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SpecError
from .build import build_model
from .data import load_data

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
DEFAULT_LR = {"sgd": 0.05, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01,
              "rmsprop": 1e-3, "adam": 1e-3}
SCHEDULES = ("none", "step", "exponential", "inverse", "cosine", "plateau", "cyclic")
AUGMENTS = ("crop", "flip")


@dataclass
class TrainConfig:
    data: str = "synthetic"
    epochs: int = 5
    batch: int = 32
    optimizer: str = "adam"
    lr: float | None = None
    weight_decay: float = 0.0
    schedule: str = "none"
    label_smoothing: float = 0.0
    augment: tuple = ()
    seed: int = 0
    device: str = "cpu"
    out: str = "runs"
    plot: bool = False
    resume: bool = False


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float          # a fraction; shown as a percentage
    lr: float
    time_s: float
    samples_per_s: float
    peak_memory_bytes: int
    step_losses: list = field(default_factory=list)


class Dist:
    """torch.distributed when launched by torchrun, a single process otherwise."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = device
        if self.world > 1:
            import torch.distributed as dist
            backend = "nccl" if device == "cuda" else "gloo"
            dist.init_process_group(backend)
            if device == "cuda":
                torch.cuda.set_device(self.local)
                self.device = f"cuda:{self.local}"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.item() / self.world

    def sum(self, values: list) -> list:
        if self.world == 1:
            return values
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def _comm_device(self):
        return self.device if self.device.startswith("cuda") else "cpu"

    def close(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()
            dist.destroy_process_group()


def make_optimizer(name, params, lr, weight_decay):
    if name not in OPTIMIZERS:
        raise SpecError(f"--optimizer takes one of {', '.join(OPTIMIZERS)}. Received: {name!r}")
    lr = DEFAULT_LR[name] if lr is None else lr
    opt = torch.optim
    return {
        "sgd": lambda: opt.SGD(params, lr=lr, weight_decay=weight_decay),
        "momentum": lambda: opt.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay),
        "nesterov": lambda: opt.SGD(params, lr=lr, momentum=0.9, nesterov=True,
                                    weight_decay=weight_decay),
        "adagrad": lambda: opt.Adagrad(params, lr=lr, weight_decay=weight_decay),
        "rmsprop": lambda: opt.RMSprop(params, lr=lr, alpha=0.99, weight_decay=weight_decay),
        "adam": lambda: opt.Adam(params, lr=lr, weight_decay=weight_decay),
    }[name]()


def make_schedule(name, optimizer, epochs, steps_per_epoch):
    """Returns (scheduler, steps per batch?)."""
    s = torch.optim.lr_scheduler
    if name == "none":
        return None, False
    if name == "step":
        return s.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1), False
    if name == "exponential":
        return s.ExponentialLR(optimizer, gamma=0.9), False
    if name == "inverse":  # lr_t = lr / (1 + t / 2), the lectures' 1/t decay
        return s.LambdaLR(optimizer, lambda t: 1.0 / (1.0 + 0.5 * t)), False
    if name == "cosine":
        return s.CosineAnnealingLR(optimizer, T_max=max(1, epochs)), False
    if name == "plateau":
        return s.ReduceLROnPlateau(optimizer, factor=0.5, patience=1), False
    if name == "cyclic":
        base = optimizer.param_groups[0]["lr"]
        momentum = "momentum" in optimizer.defaults and optimizer.defaults["momentum"] > 0
        return s.CyclicLR(optimizer, base_lr=base / 10, max_lr=base,
                          step_size_up=max(1, steps_per_epoch // 2),
                          cycle_momentum=momentum), True
    raise SpecError(f"--schedule takes one of {', '.join(SCHEDULES)}. Received: {name!r}")


def augment(x, kinds, generator):
    """Random crop (pad by H/8, crop back) and horizontal flip, per sample."""
    if "flip" in kinds:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
    if "crop" in kinds:
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return x


def save_atomic(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a reader never sees half a checkpoint


def train(graph, config: TrainConfig, report=print, progress=None) -> list[EpochMetrics]:
    dist = Dist(config.device)
    try:
        return _train(graph, config, dist, report, progress)
    finally:
        dist.close()


def _train(graph, config, dist: Dist, report, progress):
    if config.batch % dist.world:
        raise SpecError(f"--batch {config.batch} must divide among {dist.world} processes")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = build_model(graph)
    classes = _classes(graph, model)
    train_x, train_y, test_x, test_y = load_data(config.data, graph.input, classes, config.seed)
    if int(train_y.max()) >= classes:
        raise SpecError(f"the data has {int(train_y.max()) + 1} classes but the model's last "
                        f"layer gives {classes} outputs")
    device = dist.device
    model = model.to(device)
    net = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local] if device.startswith("cuda") else None)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr,
                               config.weight_decay)
    steps_per_epoch = len(train_y) // config.batch
    if steps_per_epoch == 0:
        raise SpecError(f"--batch {config.batch} is larger than the {len(train_y)} training samples")
    scheduler, per_batch = make_schedule(config.schedule, optimizer, config.epochs, steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    os.makedirs(config.out, exist_ok=True) if dist.main else None
    ckpt = os.path.join(config.out, "checkpoint.pt")
    history, start = [], 1
    if config.resume:
        if not os.path.isfile(ckpt):
            raise SpecError(f"--resume: no checkpoint at {ckpt}")
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        history = [EpochMetrics(**m) for m in state["history"]]
        start = state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        if dist.main:
            report(f"resumed from {ckpt} after epoch {state['epoch']}")
    local = config.batch // dist.world
    gen = torch.Generator().manual_seed(config.seed + 1)
    epoch = start - 1
    try:
        for epoch in range(start, config.epochs + 1):
            t0 = time.perf_counter()
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(
                config.seed * 1000 + epoch))
            net.train()
            losses = []
            for step in range(steps_per_epoch):
                batch = order[step * config.batch:(step + 1) * config.batch][dist.rank::dist.world]
                x, y = train_x[batch].to(device), train_y[batch].to(device)
                if config.augment:
                    x = augment(x, config.augment, gen)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(_logits(net(x)), y)
                loss.backward()
                optimizer.step()
                if scheduler is not None and per_batch:
                    scheduler.step()
                losses.append(dist.mean(loss.item()))
                if progress and dist.main:
                    progress(epoch, step + 1, steps_per_epoch)
            test_loss, accuracy = evaluate(net, test_x, test_y, loss_fn, local, device, dist)
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None and not per_batch:
                scheduler.step(test_loss) if config.schedule == "plateau" else scheduler.step()
            elapsed = time.perf_counter() - t0
            m = EpochMetrics(epoch, sum(losses) / len(losses), test_loss, accuracy, lr, elapsed,
                             steps_per_epoch * config.batch / elapsed, peak_memory(device), losses)
            history.append(m)
            if dist.main:
                report(m)
                _checkpoint(ckpt, model, optimizer, scheduler, history, epoch)
                write_metrics(config.out, history)
    except KeyboardInterrupt:
        if dist.main:
            done = history[-1].epoch if history else start - 1
            _checkpoint(ckpt, model, optimizer, scheduler, history, done)
            write_metrics(config.out, history)
            report(f"interrupted during epoch {epoch}: checkpoint of epoch {done} saved to "
                   f"{ckpt}; continue with --resume")
        raise
    if dist.main and config.plot:
        plot_curves(history, os.path.join(config.out, "curves.png"), graph.name)
    return history


def _checkpoint(path, model, optimizer, scheduler, history, epoch):
    save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None,
                 "history": [asdict(m) for m in history], "epoch": epoch,
                 "rng": torch.get_rng_state()}, path)


def _classes(graph, model) -> int:
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, *graph.input))
    return _logits(out).shape[1]


def _logits(out):
    return out.flatten(1) if out.dim() > 2 else out


@torch.no_grad()
def evaluate(net, x, y, loss_fn, batch, device, dist: Dist):
    net.eval()
    shard = torch.arange(dist.rank, len(y), dist.world)
    total_loss = correct = 0.0
    for i in range(0, len(shard), batch):
        idx = shard[i:i + batch]
        logits = _logits(net(x[idx].to(device)))
        target = y[idx].to(device)
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    total_loss, correct, count = dist.sum([total_loss, correct, float(len(shard))])
    return total_loss / count, correct / count


def peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # process peak RSS


def write_metrics(folder, history):
    rows = [asdict(m) for m in history]
    with open(os.path.join(folder, "metrics.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    import csv
    with open(os.path.join(folder, "metrics.csv"), "w", newline="") as fh:
        fields = [k for k in rows[0] if k != "step_losses"] if rows else []
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(history, path, title):
    from ..errors import require
    matplotlib = require("matplotlib", "plot", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [m.epoch for m in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [m.train_loss for m in history], label="train")
    ax1.plot(epochs, [m.test_loss for m in history], label="test")
    ax1.set_title("loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [100 * m.test_accuracy for m in history])
    ax2.set_title("test accuracy (%)")
    ax2.set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["TrainConfig", "EpochMetrics", "train", "OPTIMIZERS", "SCHEDULES", "AUGMENTS"]
