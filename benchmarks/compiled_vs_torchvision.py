"""Training-step throughput of archcalc's compiled models over torchvision's
same models, measured in one run (target: ratio >= 0.97).

A step is forward + cross-entropy + backward + SGD-momentum step. The two
models alternate step by step so machine noise hits both alike; CUDA timing
synchronizes before reading the clock. Runs on the CPU, and on CUDA too when
one is available.

    python benchmarks/compiled_vs_torchvision.py [--models resnet50,vgg16]
        [--batch 8] [--cuda-batch 64] [--steps 6] [--warmup 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def trainer(model, batch, size, device, amp):
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return step


def timed(step):
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def compare(name, batch, device, steps, warmup, amp):
    import torchvision
    import archcalc
    torch.manual_seed(0)
    ours = archcalc.load(os.path.join(ROOT, "specs", name + ".toml")).build()
    theirs = getattr(torchvision.models, name)(weights=None)
    a, b = trainer(ours, batch, 224, device, amp), trainer(theirs, batch, 224, device, amp)
    for _ in range(warmup):
        a(), b()
    ta, tb = [], []
    for _ in range(steps):  # alternate: noise hits both alike
        ta.append(timed(a))
        tb.append(timed(b))
    ma, mb = statistics.median(ta), statistics.median(tb)
    ratio = (batch / ma) / (batch / mb)
    print(f"{name:9} {device:4} batch {batch:3}{' bf16' if amp else ' fp32'}: archcalc "
          f"{batch / ma:8.1f} samples/s, torchvision {batch / mb:8.1f} samples/s, "
          f"ratio {ratio:.3f} (target >= 0.97: {'ok' if ratio >= 0.97 else 'BELOW'})",
          flush=True)
    del ours, theirs
    return ratio


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,vgg16")
    ap.add_argument("--batch", type=int, default=8, help="CPU batch")
    ap.add_argument("--cuda-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-cpu", action="store_true", help="CUDA only")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    for name in args.models.split(","):
        if not args.no_cpu:
            compare(name, args.batch, "cpu", args.steps, args.warmup, amp=False)
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True
            compare(name, args.cuda_batch, "cuda", args.steps * 3, args.warmup * 3, amp=True)


if __name__ == "__main__":
    main()
