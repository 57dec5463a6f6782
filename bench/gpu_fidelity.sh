#!/usr/bin/env bash
# On a CUDA machine: make the 512 px synthetic head (600 frames, novel views of the last 100)
# in $GH_SYN_DATA (default /tmp/gh_syn512) when missing, compile gsplat once, check that a short
# default training run works, then compare variants with bench/fidelity_matrix.py.
#
#   bash bench/gpu_fidelity.sh RESULTS_DIR --data syn=/tmp/gh_syn512 [other=DIR ...] \
#       [fidelity_matrix.py options ...]
#
# Environment: PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:?results folder}
shift
PY=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export PYTHONUNBUFFERED=1
mkdir -p "$results"
syn=${GH_SYN_DATA:-/tmp/gh_syn512}
if [ ! -f "$syn/transforms.json" ]; then
    "$PY" tools/make_synthetic.py "$syn" --frames 600 --res 512 --seed 0 \
        --workers "$(nproc)" || exit 1
fi
"$PY" -c 'from utils.execution import prepare_gsplat; prepare_gsplat()' || exit 1
small=/tmp/gh_syn64
[ -f "$small/transforms.json" ] || "$PY" tools/make_synthetic.py "$small" --frames 60 --res 64 \
    --seed 1 --novel_last 8 || exit 1
"$PY" bench/fidelity.py --data "$small" --minutes 0 --test_frames 8 --train_every 4 \
    --out "$results/smoke" --tag smoke -- --iterations 300 || exit 1
"$PY" bench/fidelity_matrix.py "$@" --out "$results"
