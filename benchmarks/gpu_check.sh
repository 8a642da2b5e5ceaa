#!/usr/bin/env bash
# The GPU half of the speed work, as one command for a lent GPU machine (a few minutes).
#
# 1. recur's tests of the unroll, the fused backward and the cells, run on the GPU;
# 2. the speed table and sweep with torch on cuDNN, and the choices behind recur's per-backend
#    defaults measured side by side: autodiff of the scan against recur.fused's backward, each
#    with the input projection hoisted out of the scan (one large matmul) and inside each step.
#
# Usage, from the repository root:  bash benchmarks/gpu_check.sh [more benchmarks.speed flags]
# Results go to $OUT (or /tmp/recur_gpu): gpu.txt, tests.log, speed.log, speed/speed.json,
# parallel_scan.log, parallel_scan/parallel_scan.json.
#
# Where the machine lacks a Python package recur imports (a machine without network access),
# put its wheels in .whl/ first; they are installed without dependencies to /tmp/site. On an
# image with JAX, flax, optax, orbax-checkpoint and torch, recur's imports still need
# ml_collections and tensorboardX:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl ml_collections tensorboardX
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/recur_gpu}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# One process at a time on the GPU, each taking memory as it needs it (JAX's default is to
# take most of the GPU's memory up front).
export XLA_PYTHON_CLIENT_PREALLOCATE=false

{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv
  python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    || true
} 2>&1 | tee "$out/gpu.txt"

# Correctness first: scan against Python loops, masks, reverse, fused against autodiff
# (float64 included), every cell against its reference, with float32 matmuls at full precision
# (JAX may use TF32 on a GPU by default; the tests' tolerances are float32's). A failure is
# reported, and the speed run still goes ahead. Warnings are shown, not raised: the machine's
# own versions of JAX and flax may warn where the ones CI installs do not.
JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest -q -p no:cacheprovider -o addopts="" \
  -W default tests/test_scan.py tests/test_cells.py \
  2>&1 | tee "$out/tests.log" || echo "tests failed: see tests.log" | tee -a "$out/gpu.txt"

python3 -m benchmarks.speed --steps=20 --warmup=3 --sweep_lengths=50,200,800 \
  --impls=recur,recur_autodiff_inside,recur_fused_hoisted,recur_fused_inside,flax,torch \
  --out="$out/speed" "$@" 2>&1 | tee "$out/speed.log"

# The parallel-scan cells (minGRU, minLSTM, LRU): linear / associative / sequential paths
# against the GRU, LSTM and tanh RNN at matched parameters, T from 100 to 10,000 (where the
# associative scan's log-depth should pay on a GPU, unlike on the 2-core CPU).
python3 -m benchmarks.parallel_scan --lengths=100,1000,10000 --steps=5 \
  --out="$out/parallel_scan" 2>&1 | tee "$out/parallel_scan.log"
