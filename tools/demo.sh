#!/usr/bin/env bash
# The README's first command: set up .venv, make a small synthetic talking head, train an avatar
# on it, render its test frames and a novel-view orbit (PNGs and videos), compute the metrics and
# print where everything is.
#
#   bash tools/demo.sh
#
# Idempotent: the dataset is reused when it exists, a finished run is not trained again (an
# interrupted one is resumed), and rendering overwrites its own earlier output.
# On a CUDA GPU it trains a larger head for longer; DEMO_ITERATIONS overrides the length.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
PY=.venv/bin/python
DATA=data/demo
RUN=output/demo

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    res=256 frames=400 test=40 iters=${DEMO_ITERATIONS:-12000} warm=600 points=10000 body=5000
else
    res=64 frames=120 test=12 iters=${DEMO_ITERATIONS:-1200} warm=100 points=2000 body=1000
fi

if [ ! -f "$DATA/transforms.json" ]; then
    "$PY" tools/make_synthetic.py "$DATA" --frames "$frames" --res "$res" --seed 0 \
        --novel_last "$test"
fi

train_args=(-s "$DATA" -m "$RUN" --eval --iterations "$iters" --warm_up "$warm"
            --test_frames "$test" --eval_frames "$test" --init_points "$points"
            --body_points "$body"
            --test_iterations "$iters" --save_iterations "$iters")
if [ -f "$RUN/checkpoint.pt" ]; then
    train_args+=(--resume)
fi
"$PY" train.py "${train_args[@]}"
"$PY" render.py -m "$RUN" --skip_train --novel_view
"$PY" metrics.py -m "$RUN"

it=$("$PY" -c 'import sys; from scene.run_folder import resolve_iteration; print(resolve_iteration(sys.argv[1]))' "$RUN")
echo
echo "Done. The avatar is in $RUN (iteration $it):"
echo "  test renders      $RUN/test/ours_$it/renders/  (video: test.mp4, with ground truth: test_gt_render.mp4)"
echo "  novel-view orbit  $RUN/novel_view/ours_$it/novel_view.mp4"
echo "  novel views       $RUN/novel/ours_$it/  (turned +-15 and +-30 degrees, with ground truth)"
echo "  metrics           $RUN/results.json"
"$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
for k, v in r.items():
    if isinstance(v, dict):
        print(f"  {k}: " + ", ".join(f"{m.upper()} {x:.4f}" for m, x in v.items() if isinstance(x, float)))' \
    "$RUN/results.json"
