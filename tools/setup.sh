#!/usr/bin/env bash
# Create (or update) the virtual environment at .venv and the preprocessing packages at .ppdeps.
# Idempotent: pip runs again only when a requirements file changed since the last successful
# setup (or .ppdeps is missing). GH_SKIP_PREPROCESS=1 skips the optional preprocessing packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is needed, found " + sys.version.split()[0]'
created=0
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    created=1
fi
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
have=$(cat .venv/.setup-stamp 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    # A first install (torch's CUDA build and its libraries) fills about 6.3 GB; fail before pip
    # does, with the fix, rather than half-way with "No space left on device".
    if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
        free_kb=$(df -Pk .venv | awk 'NR==2 {print $4}')
        if [ "$free_kb" -lt 6815744 ]; then
            echo "tools/setup.sh: installing into $(pwd)/.venv needs about 6.5 GB free on its" \
                 "disk; $((free_kb / 1048576)) GB are free. Free some (old clones, caches) and run" \
                 "it again." >&2
            if [ "$created" = 1 ]; then rm -rf .venv; fi
            exit 1
        fi
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements-dev.txt
    echo "$want" > .venv/.setup-stamp
fi
# The preprocessing packages live apart from .venv: see requirements-preprocess.txt for why.
if [ "${GH_SKIP_PREPROCESS:-0}" != "1" ]; then
    want=$(sha256sum requirements-preprocess.txt | cut -d' ' -f1)
    have=$(cat .ppdeps/.setup-stamp 2>/dev/null || true)
    if [ "$want" != "$have" ] || [ ! -d .ppdeps/mediapipe ]; then
        .venv/bin/python -m pip install --quiet --no-deps --upgrade --target .ppdeps \
            -r requirements-preprocess.txt
        echo "$want" > .ppdeps/.setup-stamp
    fi
fi
# On a machine with a CUDA GPU, build gsplat's CUDA kernels now (about 1-2 minutes, once)
# rather than at the first training run; GH_SKIP_GSPLAT_BUILD=1 leaves it to that run.
if [ "${GH_SKIP_GSPLAT_BUILD:-0}" != "1" ] && command -v nvidia-smi >/dev/null 2>&1 \
        && .venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        2>/dev/null; then
    .venv/bin/python -c 'from utils.execution import prepare_gsplat; prepare_gsplat()' || \
        echo "tools/setup.sh: gsplat's CUDA kernels could not be built now; train.py will try" \
             "again (or pass --backend torch)" >&2
fi
# The ImageNet VGG16 weights of the perceptual loss and of LPIPS (528 MB, once, into the torch
# hub cache) where a network answers; without them training and metrics.py go on without those
# terms and say so. GH_SKIP_WEIGHTS=1 (or GH_NO_DOWNLOAD=1) leaves them out.
if [ "${GH_SKIP_WEIGHTS:-0}" != "1" ]; then
    .venv/bin/python -c 'from utils.weights import fetch_backbone
path, how = fetch_backbone("vgg16")
print("tools/setup.sh: VGG16 weights " + how if path else
      "tools/setup.sh: VGG16 weights not fetched (" + how + "); training runs without the "
      "perceptual term until they are in the torch cache")' || \
        echo "tools/setup.sh: the VGG16 weights could not be fetched now; train.py and" \
             "metrics.py will try again" >&2
fi
