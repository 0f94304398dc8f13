"""Train a compiled spec: the lectures' optimizers and schedules, per-epoch
metrics, atomic checkpoints, resume, Ctrl-C, and DistributedDataParallel
under torchrun (nccl on GPU, gloo on CPU; only rank 0 prints and writes).

Data order is a seeded permutation per epoch; rank r of W takes every W-th
sample of each global batch, so W processes see exactly the batches one
process would, and their averaged losses equal its losses.
"""
from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import RunError, SpecError
from .build import build_model
from .checkpoint import (CHECKPOINT_FORMAT, RESUME_SETTINGS, _first_line, read_checkpoint,
                         restore, spec_identity)
from .measure import SavedBytes
from .data import check_source, load_data


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
    force: bool = False           # replace a run already in `out`
    memory_check: bool = True     # refuse before allocating when it cannot fit
    threads: int | None = None    # CPU threads; None: chosen from the step's work (threads.py)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float          # a fraction; shown as a percentage
    lr: float
    time_s: float
    samples_per_s: float
    peak_memory_bytes: int        # torch's tensors (see tensor_memory), not the process RSS
    step_losses: list = field(default_factory=list)
    predicted_memory_bytes: int = 0   # the analysis's training memory, to compare


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

    def step(self, loss: float, stop: bool) -> tuple[float, bool]:
        """The mean loss of a step over the processes, and whether any of them
        was asked to stop (Ctrl-C): they all stop after the same step."""
        if self.world == 1:
            return loss, stop
        import torch.distributed as dist
        t = torch.tensor([loss, float(stop)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t[0].item() / self.world, t[1].item() > 0

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


def augment(x, transforms, generator):
    """Random crop (pad by H/8, crop back) and horizontal flip, per sample."""
    if "flip" in transforms:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
    if "crop" in transforms:
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return x


def save_atomic(obj, path, write=None):
    """A checkpoint (torch.save) or, with ``write(obj, fh)``, any file, through
    the one atomic writer (archcalc.output): a reader never sees half a file,
    and a failed or interrupted write leaves the old file and no temporary."""
    from ..output import write_atomic
    try:
        write_atomic(path, lambda fh: (write or torch.save)(obj, fh))
    except RuntimeError as e:  # torch.save's stream writer fails with RuntimeError
        raise RunError(f"cannot write {path}: {_first_line(e)}") from None


def remove_stale_temporaries(folder):
    """Temporary files that a killed run left (their process is gone)."""
    from ..output import remove_stale_temporaries as remove
    remove(folder)


RUN_FILES = ("checkpoint.pt", "metrics.json", "metrics.csv")


def refuse_overwrite(folder, resume: bool, force: bool) -> None:
    """A folder that holds a run is continued (--resume) or replaced (--force),
    never overwritten by accident."""
    if resume or force or not os.path.isdir(folder):
        return
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]
    if found:
        raise SpecError(f"-o {folder} already holds a run ({', '.join(found)}); --resume "
                        "continues it, --force starts over and replaces it, or give another -o")


def prepare_out(folder):
    """The --out folder exists and takes files, or a one-line error (exit 2)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        raise SpecError(f"--out {folder}: a file is in the way; give a folder") from None
    except OSError as e:
        raise SpecError(f"--out {folder}: cannot create the folder ({e.strerror or e})") from None
    if not os.path.isdir(folder):
        raise SpecError(f"--out {folder}: not a folder")
    import tempfile
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise SpecError(f"--out {folder}: cannot write there ({e.strerror or e})") from None
    remove_stale_temporaries(folder)


def check_config(config: TrainConfig):
    """Values the CLI validates too, for callers of the library."""
    for name, value, low, high in (("--lr", config.lr, 0, None),
                                   ("--weight-decay", config.weight_decay, 0, None),
                                   ("--label-smoothing", config.label_smoothing, 0, 1)):
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f"{name} must be a finite number. Received: {value!r}")
        if value < low or (name == "--lr" and value == 0) or (high is not None and value >= high):
            raise SpecError(f"{name} is out of range. Received: {value!r}")


class _StopRequest:
    """Ctrl-C during training: the first one asks to stop after the current
    step (so what is saved is a whole step), a second one stops at once."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.signal(signal.SIGINT, self._handle)
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                self.previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


@dataclass
class _Position:
    """Where the loop is: what an interrupt may save."""
    epoch: int
    step: int = 0               # steps of this epoch done
    in_update: bool = False     # between zero_grad and the recorded loss, or at the epoch's end
    epoch_done: bool = False    # this epoch's metrics are in the history
    moved: bool = False         # any step taken since the start (or the resume)


def train(graph, config: TrainConfig, say=print, progress=None) -> list[EpochMetrics]:
    """Train the spec's model; ``say`` receives the header, each epoch's
    EpochMetrics and the notes of a resume or an interrupt (the main process
    only), ``progress(epoch, step, steps)`` the steps as they go."""
    check_config(config)
    dist = Dist(config.device)
    threads = torch.get_num_threads()   # the run's choice is not left on the caller's process
    try:
        return _train(graph, config, dist, say, progress)
    finally:
        torch.set_num_threads(threads)
        dist.close()


def _train(graph, config, dist: Dist, say, progress):
    run = _Run(graph, config, dist)
    history, start, resume_at = run.begin(say)
    with _StopRequest() as stop:
        try:
            for epoch in range(start, config.epochs + 1):
                run.epoch(epoch, history, resume_at, stop, progress)
                if dist.main:
                    run.saver.save(history, epoch)
                    write_metrics(config.out, history)
                    say(history[-1])
                if epoch < config.epochs and dist.step(0.0, stop.requested)[1]:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if dist.main:
                pos = run.pos
                say(run.saver.on_interrupt(pos, history, run.order if pos.step else None,
                                           run.losses,
                                           time.perf_counter() - run.t0 if pos.step else 0.0,
                                           run.steps, config.out))
            raise
    if dist.main and config.plot:
        plot_curves(history, os.path.join(config.out, "curves.png"), graph.name)
    return history


class _Run:
    """One training run: its checks, model, data and optimizer, set up once
    (the constructor), then stepped epoch by epoch from _train; ``pos``,
    ``order``, ``losses`` and ``t0`` say where it is, for an interrupt's
    checkpoint."""

    def __init__(self, graph, config, dist: Dist):
        if config.batch % dist.world:
            raise SpecError(f"--batch {config.batch} must divide among {dist.world} processes")
        self.graph, self.config, self.dist = graph, config, dist
        self.local = local = config.batch // dist.world
        samples, train_samples = check_source(config.data)
        if train_samples is not None and config.batch > train_samples:
            raise SpecError(f"--batch {config.batch} is larger than the {train_samples} "
                            "training samples")
        if config.memory_check:
            from . import memory
            memory.guard(memory.for_train(graph, batch=local, optimizer=config.optimizer,
                                          device=dist.device, samples=samples),
                         command="train", hint="lower --batch")
        if dist.main:
            refuse_overwrite(config.out, config.resume, config.force)
            prepare_out(config.out)
        self.ckpt = os.path.join(config.out, "checkpoint.pt")
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        model = build_model(graph)
        self.identity = spec_identity(graph, model)
        classes = _classes(graph, model)
        self.state = read_checkpoint(self.ckpt, model, config, self.identity) \
            if config.resume else None
        self.train_x, self.train_y, self.test_x, self.test_y = \
            load_data(config.data, graph.input, classes, config.seed)
        if int(self.train_y.max()) >= classes:
            raise SpecError(f"the data has {int(self.train_y.max()) + 1} classes but the "
                            f"model's last layer gives {classes} outputs")
        self.device = dist.device
        self.model = self.net = model.to(self.device)
        if dist.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dist.local] if self.device.startswith("cuda") else None)
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(), config.lr,
                                        config.weight_decay)
        self.steps = len(self.train_y) // config.batch     # per epoch
        if self.steps == 0:
            raise SpecError(f"--batch {config.batch} is larger than the {len(self.train_y)} "
                            "training samples")
        self.scheduler, self.per_batch = make_schedule(config.schedule, self.optimizer,
                                                       config.epochs, self.steps)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.gen = torch.Generator().manual_seed(config.seed + 1)
        self.saved_bytes = None   # what autograd keeps in a step: measured on the first one

    def begin(self, say):
        """The threads, the header, and a resumed run's state: (history, first
        epoch, where in an epoch a resumed run picks up or None)."""
        config, dist = self.config, self.dist
        # the header first: a resumed run then says where it picks up
        totals = analysis_totals(self.graph, self.local, config.optimizer)
        self.predicted = totals["train_memory_bytes"]
        from .threads import choose_threads, load_average
        threads = choose_threads(totals["macs"] * self.local, self.device, config.threads,
                                 load=load_average(), current=torch.get_num_threads(),
                                 processes=int(os.environ.get("LOCAL_WORLD_SIZE", dist.world)))
        torch.set_num_threads(threads.threads)
        if dist.main:
            say(header(self.graph, self.model, config, len(self.train_y), len(self.test_y),
                       self.steps, self.device, self.predicted, threads.describe()))
        history, start, resume_at = [], 1, None
        state = self.state
        if state is not None:
            history, start, resume_at = restore(state, self.ckpt, self.model, self.optimizer,
                                                self.scheduler, self.gen, self.device,
                                                len(self.train_y), self.steps)
            if dist.main:
                where = (f"after epoch {state['epoch']}" if resume_at is None else
                         f"in epoch {resume_at['epoch']} at step {resume_at['step']} of "
                         f"{self.steps}")
                say(f"resumed from {self.ckpt} {where}")
                if start > config.epochs:
                    say(f"the checkpoint has {state['epoch']} epochs already; "
                        f"--epochs {config.epochs} asks for no more")
        self.pos = _Position(start)
        self.order, self.losses, self.t0 = None, [], time.perf_counter()
        self.saver = _Saver(self.ckpt, self.model, self.optimizer, self.scheduler, self.gen,
                            self.identity, config, self.device)
        return history, start, resume_at

    def epoch(self, epoch, history, resume_at, stop, progress):
        """One epoch: its steps (from where a resumed run stopped), the test
        loss and accuracy, the schedule's step; its metrics onto ``history``."""
        config, dist, pos = self.config, self.dist, self.pos
        pos.epoch, pos.step, pos.epoch_done = epoch, 0, False
        self.t0 = time.perf_counter()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        if resume_at is not None and resume_at["epoch"] == epoch:
            self.order, self.losses = resume_at["order"], list(resume_at["losses"])
            pos.step = resume_at["step"]
            self.t0 -= resume_at["elapsed"]
        else:
            self.order = epoch_order(len(self.train_y), config.seed, epoch)
            self.losses = []
        self.net.train()
        if progress and dist.main:
            progress(epoch, pos.step, self.steps)  # the bar knows its length at once
        for step in range(pos.step, self.steps):
            self.step(epoch, step, history, stop, progress)
        test_loss, accuracy = evaluate(self.net, self.test_x, self.test_y, self.loss_fn,
                                       self.local, self.device, dist)
        if not math.isfinite(test_loss):
            raise RunError(diverged(epoch, self.steps, self.steps, test_loss,
                                    self.optimizer, self.ckpt, history, "test loss"))
        pos.in_update = True   # the epoch's end: the schedule steps, the history grows
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step(test_loss) if config.schedule == "plateau" \
                else self.scheduler.step()
        elapsed = time.perf_counter() - self.t0
        history.append(EpochMetrics(
            epoch, sum(self.losses) / len(self.losses), test_loss, accuracy, lr, elapsed,
            self.steps * config.batch / elapsed,
            tensor_memory(self.model, self.optimizer, self.saved_bytes, self.device),
            self.losses, self.predicted))
        pos.in_update, pos.epoch_done = False, True

    def step(self, epoch, step, history, stop, progress):
        """One optimizer step on this process's share of the step's batch."""
        config, dist, pos = self.config, self.dist, self.pos
        batch = self.order[step * config.batch:(step + 1) * config.batch][dist.rank::dist.world]
        pos.in_update = True
        x, y = self.train_x[batch].to(self.device), self.train_y[batch].to(self.device)
        if config.augment:
            x = augment(x, config.augment, self.gen)
        self.optimizer.zero_grad(set_to_none=True)
        if self.saved_bytes is None:
            with SavedBytes(self.model) as saved:
                loss = self.loss_fn(_logits(self.net(x)), y)
            self.saved_bytes = saved.total
        else:
            loss = self.loss_fn(_logits(self.net(x)), y)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()
        value, stopping = dist.step(loss.item(), stop.requested)
        self.losses.append(value)
        pos.step, pos.in_update, pos.moved = step + 1, False, True
        if not math.isfinite(value):
            raise RunError(diverged(epoch, step + 1, self.steps, value, self.optimizer,
                                    self.ckpt, history))
        if progress and dist.main:
            progress(epoch, step + 1, self.steps)
        if stopping:
            raise KeyboardInterrupt


def epoch_order(n, seed, epoch):
    """The data order of an epoch: a seeded permutation, the same in every run."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))


def diverged(epoch, step, steps, value, optimizer, ckpt, history, what="loss") -> str:
    lr = optimizer.param_groups[0]["lr"]
    kept = (f"{ckpt} keeps epoch {history[-1].epoch}" if history
            else "no checkpoint was written")
    return (f"training diverged: the {what} is {value} at epoch {epoch}, step {step} of "
            f"{steps} (--lr {lr:g}); try a lower --lr; {kept}")


class _Saver:
    """Checkpoints: the last finished epoch, or an interrupted epoch with its
    step, its data order and its random states, so that --resume continues
    exactly where the run stopped."""

    def __init__(self, path, model, optimizer, scheduler, gen, identity, config, device):
        self.path, self.model, self.optimizer, self.scheduler = path, model, optimizer, scheduler
        self.gen, self.identity, self.config, self.device = gen, identity, config, device
        self.saved_epoch = None

    def save(self, history, epoch, position=None):
        state = {
            "archcalc": CHECKPOINT_FORMAT,
            "spec": self.identity,
            "config": {k: getattr(self.config, k) for k in RESUME_SETTINGS},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "history": [asdict(m) for m in history],
            "epoch": epoch,
            "position": position,
            "rng": torch.get_rng_state(),
            "augment_rng": self.gen.get_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.startswith("cuda") else None,
        }
        state["config"]["augment"] = list(state["config"]["augment"])
        save_atomic(state, self.path)
        self.saved_epoch = epoch

    def on_interrupt(self, pos: _Position, history, order, losses, elapsed, steps, out) -> str:
        """Save what is true now, and say exactly what it is."""
        have = (f"{self.path} holds epoch {self.saved_epoch}" if self.saved_epoch is not None
                else f"{self.path} is unchanged" if os.path.exists(self.path)
                else "no checkpoint was written")
        if pos.in_update:
            return (f"interrupted in the middle of an update in epoch {pos.epoch}: "
                    f"nothing newer is saved; {have}")
        if not pos.moved:
            return f"interrupted before any step: nothing new to save; {have}"
        if pos.epoch_done:
            if self.saved_epoch != pos.epoch:
                self.save(history, pos.epoch)
                write_metrics(out, history)
            return (f"interrupted after epoch {pos.epoch}: checkpoint of epoch {pos.epoch} "
                    f"saved to {self.path}; continue with --resume")
        done = history[-1].epoch if history else 0
        if pos.step == 0:  # the epoch had not started: the last one is what is saved
            if self.saved_epoch != done:
                self.save(history, done)
            return (f"interrupted at the start of epoch {pos.epoch}: checkpoint of epoch "
                    f"{done} saved to {self.path}; continue with --resume")
        self.save(history, done, {"epoch": pos.epoch, "step": pos.step, "order": order,
                                  "losses": list(losses), "elapsed": float(elapsed)})
        if history:
            write_metrics(out, history)
        return (f"interrupted in epoch {pos.epoch} after step {pos.step} of {steps}: saved "
                f"to {self.path} with its data order; --resume continues at step "
                f"{pos.step + 1}")


def _classes(graph, model) -> int:
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, *graph.input))
    return _logits(out).shape[1]


def _logits(out):
    if isinstance(out, dict):
        raise SpecError(f"train fits one classifier output; this spec has {len(out)} named "
                        f"outputs ({', '.join(out)}): detection losses are not built in")
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


def tensor_memory(model, optimizer, saved_bytes, device: str) -> int:
    """What torch holds for training, comparable with the prediction: on CUDA
    the allocator's peak; on the CPU (which keeps no allocator statistics)
    the bytes of the weights, their gradients and the optimizer's state, plus
    what autograd saved in a step (measured with saved_tensors_hooks).
    Not the process's RSS, which counts the interpreter and libraries."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        if p.grad is not None:
            total += p.grad.numel() * p.grad.element_size()
    for state in optimizer.state.values():
        for v in state.values():
            if torch.is_tensor(v) and v.dim() > 0:
                total += v.numel() * v.element_size()
    return total + (saved_bytes or 0)


# the analysis counts optimizer state as copies of the weights: 0, 1 or 2
STATE_COPIES = {"sgd": "sgd", "momentum": "momentum", "nesterov": "momentum",
                "adagrad": "momentum", "rmsprop": "momentum", "adam": "adam"}


def analysis_totals(graph, batch: int, optimizer: str) -> dict:
    """The analysis's totals for this run (one process's batch): its training
    memory to compare with the measured one, its MACs to choose the threads."""
    from ..analysis import analyze
    return analyze(graph, batch=batch, optimizer=STATE_COPIES[optimizer]).totals


def header(graph, model, config, n_train, n_test, steps, device, predicted,
           threads="") -> str:
    """What a run is about to do, before its first step."""
    from ..sym import human_bytes
    params = sum(p.numel() for p in model.parameters())
    return (f"training {graph.name}: {n_train:,} training and {n_test:,} test samples "
            f"({config.data}), {steps:,} steps of {config.batch} per epoch, {config.epochs} "
            f"epoch{'s' if config.epochs > 1 else ''} on {device}; {params:,} params; "
            f"predicted training memory {human_bytes(predicted)} ({config.optimizer})"
            + (f"; {threads}" if threads else ""))


def write_metrics(folder, history):
    import csv
    import io
    rows = [asdict(m) for m in history]
    text = io.StringIO()
    names = [k for k in rows[0] if k != "step_losses"] if rows else []
    writer = csv.DictWriter(text, names, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    from ..output import write_atomic
    from ..render.safe import json_text
    write_atomic(os.path.join(folder, "metrics.json"), json_text(rows, indent=1))
    write_atomic(os.path.join(folder, "metrics.csv"), text.getvalue())


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
    from ..output import write_atomic
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format="png"))
    finally:
        plt.close(fig)


__all__ = ["TrainConfig", "EpochMetrics", "train", "OPTIMIZERS", "SCHEDULES", "AUGMENTS"]
