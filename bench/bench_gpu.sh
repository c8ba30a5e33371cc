#!/usr/bin/env bash
# Training throughput on a GPU: InceptionV3 at 299 px, float32 vs mixed precision, with and without XLA, synthetic
# tensors vs the real tf.data pipeline. Writes bench/results/bench_gpu.json. One command, under 10 minutes:
#   bench/bench_gpu.sh            # on the GPU machine
#   bench/bench_gpu.sh --smoke    # anywhere (CPU): 75 px, a few steps, checks that it runs -> bench_gpu_smoke.json
# Extra arguments go to bench/bench_gpu.py (--batch-size, --steps, --warmup, --images, --size, --out).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader || echo "no nvidia-smi: CPU only"
exec timeout 590 python bench/bench_gpu.py "$@"
