#!/usr/bin/env bash
# Set up .venv (if needed), lint, and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest "$@"
