#!/usr/bin/env bash
# Set up .venv (if needed), lint, and run the test suite. Extra arguments go to pytest.
# Run as root where apt-get works (CI), it also installs Debian's chromium for the viewer's
# browser test (tests/test_viewer.py), which is skipped where no Chromium is found;
# GH_SKIP_BROWSER=1 leaves the system alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# playwright (requirements-dev.txt) drives Debian's chromium; it never downloads a browser
if [ "${GH_SKIP_BROWSER:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1 \
        && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "tools/test.sh: installing Debian's chromium for the viewer's browser test"
        log=$(mktemp)
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                chromium; } >"$log" 2>&1; then
            tail -n 5 "$log" >&2
            echo "tools/test.sh: chromium could not be installed; the browser test will be" \
                 "skipped" >&2
        fi
        rm -f "$log"
    else
        echo "tools/test.sh: no chromium here, so the viewer's browser test will be skipped" \
             "(install it with: sudo apt-get install chromium)"
    fi
fi
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest "$@"
