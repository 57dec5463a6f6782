"""bench/reenactment.py end to end on the CPU at a tiny size and a few iterations: it runs and
writes its JSON and strip (the numbers' quality is measured on a GPU, docs/reenactment.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_reenactment_bench_runs_and_writes_its_fields(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from preprocessing.landmarks import "
                        "import_mediapipe; import_mediapipe()"], cwd=REPO, capture_output=True,
                       text=True)
    if r.returncode:
        pytest.skip("MediaPipe is not installed (bash tools/setup.sh installs it)")
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, "bench/reenactment.py", "--out", str(out), "--res", "128",
                        "--size", "64", "--frames_a", "40", "--frames_b", "20", "--minutes", "0",
                        "--iterations", "20", "--max_frames", "15", "--tag", "tiny", "--",
                        "--init_points", "1000", "--body_points", "200", "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((out / "reenactment.json").read_text())
    assert res["tag"] == "tiny" and res["frames"] == 15 and res["iterations_reached"] == 20
    for key in ("psnr", "psnr_mouth", "psnr_eyes"):
        assert math.isfinite(res[key]) and res[key] > 5, key
    for key in ("mouth_opening_vs_jaw", "eye_closure_vs_blink"):
        assert set(res[key]) == {"render", "gt"}
    # the ground truth's own mouth measure follows the jaw it was made with
    assert res["mouth_opening_vs_jaw"]["gt"] > 0.7
    own = res["self_test"]  # A's held-out tenth
    assert own["frames"] == 4 and math.isfinite(own["psnr"]) and own["psnr"] > 5
    assert own["psnr_mouth"] is not None and own["psnr_eyes"] is not None
    assert len(res["per_frame"]) == 15 and {"jaw_open", "blink", "mouth_opening"} <= set(
        res["per_frame"][0])
    strip = cv2.imread(str(out / "strip.png"))
    assert strip.shape[0] == 3 * 64 and strip.shape[1] % 64 == 0
