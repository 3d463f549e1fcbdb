#!/usr/bin/env bash
# The CUDA tables of docs/benchmarks.md in one run (a GPU session has
# little time: this is the whole check). Model table for X3D-XS and X3D-M,
# ours against MMAction2's X3D, fp32 and bf16, contiguous and
# channels-last, peak memory of a batch-8 training step; then the profiler's
# top operators for X3D-M. Writes into ${OUT:-work_dirs/gpu_tables}.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-work_dirs/gpu_tables}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PYTHON tools/benchmark/model_speed.py --device cuda --archs xs m --batch 8 \
    --rounds 5 --warmup 3 --precision fp32 bf16 --memory-batch 8 \
    2>&1 | tee "$OUT/model_cuda.txt" | grep -E '^\||outputs agree|device:'
$PYTHON tools/benchmark/profile_ops.py --device cuda --arch m --batch 8 \
    --top 8 2>&1 | tee "$OUT/profile_cuda.txt" | grep -E '^\||one train step'
