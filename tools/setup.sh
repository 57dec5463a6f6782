#!/usr/bin/env bash
# Create (or update) the virtual environment at .venv and the preprocessing packages at .ppdeps.
# Idempotent: pip runs again only when a requirements file changed since the last successful
# setup (or .ppdeps is missing). GH_SKIP_PREPROCESS=1 skips the optional preprocessing packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is needed, found " + sys.version.split()[0]'
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
have=$(cat .venv/.setup-stamp 2>/dev/null || true)
if [ "$want" != "$have" ]; then
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
