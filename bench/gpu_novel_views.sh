#!/usr/bin/env bash
# On a CUDA machine: the novel-view comparison of issue 18 on the 512 px synthetic head.
# Makes the head (600 frames, novel views of the last 100) in $GH_SYN_DATA when missing while two
# processes start gsplat's first build at once (they must wait for each other: the build lock),
# then trains, side by side (bench/fidelity_matrix.py), the head with and without the removal of
# the head Gaussians no training frame sees (--unseen_prune 0.5 / 0), and with it, smooth depth
# in turned views (--lambda_virtual_depth 0.1) and the shell start (--head_shell 0.15).
#
#   bash bench/gpu_novel_views.sh RESULTS_DIR [MINUTES] [SEEDS...] [-- more fidelity_matrix options]
#
# Environment: PYTHON (default python3), GH_SYN_DATA (default /tmp/gh_syn512).
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:?results folder}
minutes=${2:-5}
shift $(( $# < 2 ? $# : 2 ))
seeds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#seeds[@]} -eq 0 ] && seeds=(0 1)
source bench/gpu_common.sh
mkdir -p "$results"
syn=$SYN512
synthetic_512 &  # while gsplat compiles
t0=$(date +%s)
for who in A B; do
    "$PY" -c 'from utils.execution import prepare_gsplat; prepare_gsplat()' 2>&1 \
        | sed "s/^/[$who] /" &
done
wait
echo "gsplat ready after $(( $(date +%s) - t0 )) s (two processes started at once)"
[ -f "$syn/transforms.json" ] || { echo "no synthetic data in $syn" >&2; exit 1; }
"$PY" bench/fidelity_matrix.py --data syn="$syn" --variants "prune=--unseen_prune 0.5" \
    "keep=--unseen_prune 0" "vdepth01=--unseen_prune 0.5 --lambda_virtual_depth 0.1" \
    "shell=--unseen_prune 0.5 --head_shell 0.15" \
    --seeds "${seeds[@]}" --minutes "$minutes" --parallel 8 --out "$results" \
    --fidelity_args=--sheet_cell=192 "$@"
