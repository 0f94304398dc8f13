"""Reading a training checkpoint back (`train --resume`): what it is for (the
spec's identity), and every check before a byte of it is trusted; a refusal
is one line, exit 2. train.py writes it (_Saver)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, fields

import torch

from ..errors import SpecError

CHECKPOINT_FORMAT = 2   # what `--resume` reads: see train._Saver.save


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _first_sentence(e) -> str:
    return _first_line(e).split(". ")[0]


RESUME_SETTINGS = ("optimizer", "schedule", "batch", "seed", "data", "augment", "epochs")
EXACT_SETTINGS = ("batch", "seed", "data", "augment")  # an interrupted epoch needs these


def spec_identity(graph, model) -> dict:
    """What a checkpoint is for: the spec's name, a fingerprint of the model
    (its module tree with every argument, and the input), and the shapes."""
    text = f"{tuple(graph.input)}\n{model!r}"
    return {"name": str(graph.name), "input": [int(d) for d in graph.input],
            "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16],
            "shapes": {k: list(v.shape) for k, v in model.state_dict().items()}}


def max_checkpoint_bytes(model) -> int:
    """A checkpoint holds the weights, at most three optimizer tensors per
    weight, and small things; anything far larger is not ours."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 4 * weights + 512 * 2**20


def read_checkpoint(path, model, config, identity) -> dict:
    """Load with weights_only=True (tensors and plain data; no object is ever
    built, no code runs), then check that it is this spec's, with this
    optimizer and schedule. Every refusal is one line, exit 2."""
    import pickle
    if not os.path.isfile(path):
        raise SpecError(f"--resume: no checkpoint at {path}")
    size = os.path.getsize(path)
    if size > max_checkpoint_bytes(model):
        raise SpecError(f"--resume: {path} is {size / 1e9:.1f} GB, far more than a checkpoint "
                        f"of this spec holds; it is not one")
    import warnings
    try:
        with warnings.catch_warnings():   # torch warns about pickle protocols: one line only
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        refused = next((line.strip() for line in text.splitlines()
                        if "Unsupported global" in line), "")
        if refused:
            detail = refused.split("Unsupported global:")[-1].split(" was not")[0].strip()
            raise SpecError(f"--resume: {path} was refused: it names Python objects "
                            f"({detail[:120]}), not only tensors and plain data; nothing in it "
                            "was run") from None
        raise SpecError(f"--resume: {path} is not a checkpoint archcalc reads (a pickle it "
                        f"refuses: {_first_line(text.split('error:')[-1])}); nothing in it was "
                        "run") from None
    except Exception as e:
        raise SpecError(f"--resume: {path} is not a readable checkpoint "
                        f"({type(e).__name__}: {_first_sentence(e)}); truncated, or another "
                        "kind of file") from None
    bad = f"--resume: {path} is not an archcalc checkpoint"
    if not isinstance(state, dict) or state.get("archcalc") != CHECKPOINT_FORMAT:
        old = isinstance(state, dict) and "model" in state and "archcalc" not in state
        raise SpecError(bad + (" of this version (it was written by an older archcalc)"
                               if old else ""))
    theirs = state.get("spec")
    if not isinstance(theirs, dict):
        raise SpecError(bad + " (no spec identity)")
    if theirs.get("fingerprint") != identity["fingerprint"]:
        raise SpecError(f"--resume: {path} is for another model: {spec_difference(theirs, identity)}")
    saved = state.get("config") if isinstance(state.get("config"), dict) else {}
    differs = [f"--{k} {_show(saved.get(k))} there, {_show(getattr(config, k))} here"
               for k in ("optimizer", "schedule") if saved.get(k) != getattr(config, k)]
    position = state.get("position")
    if position is not None:
        mine = {k: list(v) if isinstance(v, tuple) else v
                for k, v in ((k, getattr(config, k)) for k in EXACT_SETTINGS)}
        differs += [f"--{k} {_show(saved.get(k))} there, {_show(mine[k])} here"
                    for k in EXACT_SETTINGS if saved.get(k) != mine[k]]
    if differs:
        raise SpecError(f"--resume: {path} was written with other settings: "
                        + "; ".join(differs) + " (use the same ones, or another --out folder)")
    return state


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(none)"
    return str(value)


def spec_difference(theirs: dict, mine: dict) -> str:
    """What differs between the checkpoint's model and this one, briefly."""
    parts = []
    if theirs.get("name") != mine["name"]:
        parts.append(f"it was written for {str(theirs.get('name'))[:80]!r}, this spec is "
                     f"{mine['name'][:80]!r}")
    if theirs.get("input") != mine["input"]:
        parts.append(f"input {theirs.get('input')} there, {mine['input']} here")
    shapes = theirs.get("shapes") if isinstance(theirs.get("shapes"), dict) else {}
    here = mine["shapes"]
    changed = [f"{k} {shapes[k]} there, {here[k]} here" for k in here
               if k in shapes and shapes[k] != here[k]]
    missing = [k for k in here if k not in shapes]
    extra = [k for k in shapes if k not in here]
    if changed:
        parts.append("; ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3
                                               else ""))
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing there ({', '.join(missing[:3])})")
    if extra:
        parts.append(f"{len(extra)} tensor(s) not in this model ({', '.join(str(k)[:40] for k in extra[:3])})")
    if not parts:
        parts.append("the same tensors, but other layer arguments (strides, padding, "
                     "pooling or activations)")
    return "; ".join(parts)


def restore(state, path, model, optimizer, scheduler, gen, device, n_train, steps):
    """Load a checked checkpoint into the model, optimizer, schedule and random
    states. Returns (history, first epoch, interrupted position or None)."""
    bad = f"--resume: {path}"
    try:
        model.load_state_dict(state["model"])
    except Exception as e:
        raise SpecError(f"{bad}: the weights do not fit this model ({_first_line(e)})") from None
    check_optimizer_state(state.get("optimizer"), model, bad)
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
    except Exception as e:
        raise SpecError(f"{bad}: the optimizer state does not fit ({_first_line(e)})") from None
    from .train import EpochMetrics   # train imports this module first
    names = {f.name for f in fields(EpochMetrics)}
    try:
        history = [EpochMetrics(**m) for m in state["history"]]
        for m in history:
            values = [v for k, v in asdict(m).items() if k != "step_losses"] + m.step_losses
            if set(asdict(m)) != names or not all(_number(v) for v in values):
                raise TypeError("metrics that are not numbers")
        epoch = state["epoch"]
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0 \
                or [m.epoch for m in history] != list(range(1, epoch + 1)):
            raise ValueError(f"epoch {epoch!r} does not match its history")
        torch.set_rng_state(state["rng"])
        gen.set_state(state["augment_rng"])
        if device.startswith("cuda") and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
    except SpecError:
        raise
    except Exception as e:
        raise SpecError(f"{bad}: damaged ({type(e).__name__}: {_first_line(e)})") from None
    position = state.get("position")
    if position is None:
        return history, epoch + 1, None
    try:
        step, order = position["step"], position["order"]
        losses, at = [float(v) for v in position["losses"]], position["epoch"]
        elapsed = float(position["elapsed"])
        if at != epoch + 1 or not isinstance(step, int) or not 0 < step <= steps \
                or len(losses) != step:
            raise ValueError(f"step {step!r} of epoch {at!r}")
        if not torch.is_tensor(order) or order.dtype != torch.int64 or order.dim() != 1 \
                or len(order) != n_train \
                or not torch.equal(order.sort().values, torch.arange(n_train)):
            raise ValueError(f"its data order is not a permutation of the {n_train} samples")
    except Exception as e:
        raise SpecError(f"{bad}: damaged position ({type(e).__name__}: {_first_line(e)})") \
            from None
    return history, at, {"epoch": at, "step": step, "order": order, "losses": losses,
                         "elapsed": elapsed}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_optimizer_state(saved, model, bad):
    """Every per-parameter tensor in the optimizer state has its parameter's shape."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise SpecError(f"{bad}: no optimizer state")
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    for index, tensors in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params) \
                or not isinstance(tensors, dict):
            raise SpecError(f"{bad}: the optimizer state names parameter {index!r}, which "
                            f"this model (with {len(params)}) does not have")
        for key, value in tensors.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != params[index].shape:
                raise SpecError(f"{bad}: optimizer state {key!r} of {names[index]} has shape "
                                f"{list(value.shape)}, the parameter {list(params[index].shape)}")
