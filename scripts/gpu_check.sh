#!/usr/bin/env bash
# The GPU check (issue 14): run on a lent GPU machine from the repository root, results under $OUT.
#   bash scripts/gpu_check.sh [extra arguments for benchmarks/gpu.py]
# The machine has torch, torchvision, timm, opencv and scikit-image; segment-anything, diffusers and
# kornia travel as wheels in .whl/ (see benchmarks/RESULTS.md, "GPU check", for how to fetch them).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/benchmarks/results/gpu}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "[gpu-check] installing the wheels in .whl failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 | tee "$out/nvidia-smi.txt"
python3 benchmarks/gpu.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
