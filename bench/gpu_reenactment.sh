#!/usr/bin/env bash
# On a CUDA machine: cross-identity reenactment against ground truth (bench/reenactment.py) at
# 512 px for two pairs of synthetic people, each avatar trained for MINUTES (default 10).
#
#   bash bench/gpu_reenactment.sh RESULTS_DIR [bench/reenactment.py options ...] [-- train.py options]
#
# Writes RESULTS_DIR/pair1/ and pair2/ (reenactment.json, strip.png; work/ holds the videos,
# datasets and runs) and prints each pair's summary. Environment: PYTHON (default python3),
# MINUTES.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:?results folder}
shift
PY=${PYTHON:-python3}
MINUTES=${MINUTES:-10}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export PYTHONUNBUFFERED=1
mkdir -p "$results"
"$PY" -c 'from utils.execution import prepare_gsplat; prepare_gsplat()' || exit 1
extra=("$@")
# each pair: name, A's identity, A's motion seed, B's identity, B's motion seed
for pair in "pair1 1 0 2 5" "pair2 3 1 4 6"; do
    read -r name ia sa ib sb <<< "$pair"
    "$PY" bench/reenactment.py --out "$results/$name" --res 512 --frames_a 600 \
        --frames_b 200 --identity_a "$ia" --seed_a "$sa" --identity_b "$ib" --seed_b "$sb" \
        --minutes "$MINUTES" --tag "$name" "${extra[@]}" || exit 1
done
