#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): run it first in a session lent a GPU, from the repository root:
#   bash bench/gpu_check.sh            # writes $OUT/gpu_check.json (./gpu_check.json without $OUT)
# Needs only torch, safetensors and numpy (nvrag's model package is imported from this tree, not installed).
# Sized for under 8 minutes on one H200; the real-shape checkpoint (15.7 GB) goes to $NVRAG_GPU_CHECKPOINT
# (default /tmp/nvrag-realshape) and is reused by a second run. Extra arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-.}/gpu_check.json"
"${PYTHON:-python3}" bench/gpu_check.py --folder "${NVRAG_GPU_CHECKPOINT:-/tmp/nvrag-realshape}" --out "$out" "$@"
