#!/usr/bin/env bash
# The GPU acceptance of `archcalc predict` (issue 14): calibrate this GPU
# (bf16 and fp32 tables), then every acceptance and held-out net at batch 64
# under bf16 autocast, inference and train, predicted vs measured in the same
# run; the allocator's peak beside the predicted memory for every point.
# Writes the profile, the results (JSON) and the log under RESULTS_DIR.
#   bash benchmarks/gpu_predict.sh [RESULTS_DIR] [extra predict_accuracy.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/predict-gpu}
shift || true
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm \
    --format=csv || true
$py -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())'
$py benchmarks/predict_accuracy.py --device cuda --amp bf16 --tables bf16,fp32 --batches 64 \
    --budget-s "${BUDGET_S:-150}" --warmup 3 --steps 10 --repeats 3 --out "$out" "$@" \
    2>&1 | tee "$out/run.log"
