#!/usr/bin/env bash
# GPU figures (issue: build-and-benchmark): ResNet-50 and VGG-16 at batch 64,
# bf16 autocast, training steps: throughput, share of the device's peak, and
# peak memory measured (torch.cuda.max_memory_allocated) vs predicted (target:
# within 15%); then inference, a per-layer roofline, and the compiled models
# against torchvision's. Needs a CUDA GPU.
#   bash benchmarks/gpu_bench.sh [RESULTS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
$py -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())'
for spec in resnet50 vgg16; do
  $py -m archcalc bench "specs/$spec.toml" --device cuda --batch 64 --mode train --amp bf16 \
      --warmup 5 --steps 20 --format json -o "$out/${spec}_train_bf16.json"
  $py -m archcalc bench "specs/$spec.toml" --device cuda --batch 1,64,256 --amp bf16 \
      --warmup 5 --steps 20 --format json -o "$out/${spec}_inference_bf16.json"
done
$py -m archcalc bench specs/resnet50.toml --device cuda --batch 64 --mode train --amp bf16 --peak measure --steps 10
$py -m archcalc bench specs/vgg16.toml --device cuda --batch 64 --amp bf16 --per-layer --steps 10
$py benchmarks/compiled_vs_torchvision.py --no-cpu
