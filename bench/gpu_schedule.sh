#!/usr/bin/env bash
# On a CUDA machine, alone on the GPU: the default training schedule timed end to end
# (train.py with default options, --eval), its model on disk and Gaussian count, and the live
# viewer's frame time at page sizes on that model (bench/viewer_frame.py).
#
#   bash bench/gpu_schedule.sh RESULTS_DIR [train.py options ...]
#
# Environment: PYTHON (default python3), GH_SYN_DATA (default /tmp/gh_syn512, made when missing).
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:?results folder}
shift
source bench/gpu_common.sh
mkdir -p "$results"
syn=$SYN512
synthetic_512 || exit 1
"$PY" -c 'from utils.execution import prepare_gsplat; prepare_gsplat()' || exit 1
run=$(mktemp -d)/default
t0=$(date +%s.%N)
"$PY" train.py -s "$syn" -m "$run" --eval --quiet "$@" > "$results/schedule_train.log" 2>&1 \
    || { tail -n 20 "$results/schedule_train.log"; exit 1; }
t1=$(date +%s.%N)
"$PY" - "$run" "$t0" "$t1" "$results" <<'PY'
import json, sys
from pathlib import Path
from bench.common import commit
from scene.run_folder import available_iterations, load_model, model_file_sizes
run, t0, t1, results = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
it = available_iterations(Path(run))[-1]
model, _ = load_model(run, it, device="cpu")
sizes = model_file_sizes(run, it)
log = json.loads((Path(run) / "eval_log.json").read_text())
r = {"commit": commit(), "wall_seconds": round(t1 - t0, 1), "iteration": it,
     "gaussians": model.num_gaussians,
     "body_gaussians": model.body.num_gaussians if model.body is not None else 0,
     "model_bytes": sizes, "model_mb": round(sum(sizes.values()) / 1e6, 2), "eval_log": log}
(results / "schedule_default.json").write_text(json.dumps(r, indent=1))
print(json.dumps({k: v for k, v in r.items() if k != "eval_log"}))
PY
"$PY" bench/viewer_frame.py -m "$run" --out "$results" --tag default
