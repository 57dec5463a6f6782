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
source bench/gpu_common.sh
mkdir -p "$results"
synthetic_512 || exit 1
"$PY" -c 'from utils.execution import prepare_gsplat; prepare_gsplat()' || exit 1
small=/tmp/gh_syn64
[ -f "$small/transforms.json" ] || "$PY" tools/make_synthetic.py "$small" --frames 60 --res 64 \
    --seed 1 --novel_last 8 || exit 1
"$PY" bench/fidelity.py --data "$small" --minutes 0 --test_frames 8 --train_every 4 \
    --out "$results/smoke" --tag smoke -- --iterations 300 || exit 1
"$PY" bench/fidelity_matrix.py "$@" --out "$results"
