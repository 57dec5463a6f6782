#!/usr/bin/env bash
# On a CUDA machine: the GPU tests (CUDA graphs against eager, gsplat vs the torch backend, the
# release fixture through gsplat, training quality of the fast paths), then bench/run.py on a
# 512x512 synthetic head for each path in GH_BENCH_PATHS, all at the same iteration count.
#
#   bash bench/gpu_check.sh [RESULTS_DIR] [ITERATIONS]
#
# Environment: PYTHON (default python3), GH_FIXTURE (the original-release fixture, default
# ../shared/fixtures/original_checkpoint), GH_BENCH_DATA (dataset to benchmark; made with
# tools/make_synthetic.py, 600 frames at 512x512, when missing), GH_BENCH_FRAMES,
# GH_BENCH_PATHS (default "default reference mixed"; also fp32, tf32 = --precision NAME; ""
# skips the benchmark), GH_SKIP_TESTS=1, GH_COMMIT (recorded where the tree has no .git).
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-bench/results}
iterations=${2:-6000}
PY=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export PYTHONUNBUFFERED=1
mkdir -p "$results"
data=${GH_BENCH_DATA:-/tmp/gh_bench_syn512}
if [ ! -f "$data/transforms.json" ]; then
    "$PY" tools/make_synthetic.py "$data" --frames "${GH_BENCH_FRAMES:-600}" --res 512 --seed 0 \
        --workers "$(nproc)" || exit 1
fi
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())' || exit 1
# compile gsplat's kernels once, outside the timed and tested parts
"$PY" -c 'from utils.execution import prepare_gsplat; prepare_gsplat()' || exit 1
rc=0
if [ "${GH_SKIP_TESTS:-0}" != 1 ]; then
    "$PY" -m pytest -m gpu -q -s -rfE -p no:cacheprovider tests 2>&1 | tee "$results/gpu_tests.log"
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
for path in ${GH_BENCH_PATHS-default reference mixed}; do
    case $path in
        default) flags=() ;;
        reference) flags=(--reference) ;;
        *) flags=(--precision "$path") ;;
    esac
    "$PY" bench/run.py --data "$data" --iterations "$iterations" ${flags[@]+"${flags[@]}"} \
        --out "$results" \
        --tag "$path" 2>&1 | tee "$results/bench_$path.log"
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
done
exit $rc
