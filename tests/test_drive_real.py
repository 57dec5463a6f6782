"""bench/drive_real.py on constructed frames: a render whose mouth opens with the driver's
jawOpen and whose eyes close with its blink correlates; one that does not, does not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.drive_real import analyse  # noqa: E402
from utils.regions import encode_regions  # noqa: E402

NAMES = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight"]
S = 64


def _face(opening: float, closure: float) -> np.ndarray:
    """A skin-coloured square, a dark mouth of ``opening`` share of its box, two white eyes
    of which ``closure`` is covered (RGB)."""
    img = np.full((S, S, 3), (200, 150, 120), np.uint8)
    h = int(round(opening * 10))
    if h:
        img[40:40 + h, 24:40] = (20, 10, 10)
    for x0 in (16, 40):
        img[20:26, x0:x0 + 8] = (250, 250, 250)
        c = int(round(closure * 6))
        if c:
            img[20:20 + c, x0:x0 + 8] = (200, 150, 120)
    return img


def _dataset(root: Path, jaw, blink, opening_of=None) -> None:
    (root / "ori_imgs").mkdir(parents=True)
    (root / "regions").mkdir()
    mouth = np.zeros((S, S), bool)
    mouth[38:52, 22:42] = True
    eyes = np.zeros((S, S), bool)
    eyes[18:28, 14:26] = eyes[18:28, 38:50] = True
    frames = []
    for i, (j, b) in enumerate(zip(jaw, blink)):
        o = j if opening_of is None else opening_of[i]
        cv2.imwrite(str(root / "ori_imgs" / f"{i}.jpg"), _face(o, b)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 100])
        cv2.imwrite(str(root / "regions" / f"{i}.png"),
                    encode_regions({"mouth": mouth, "eyes": eyes}))
        frames.append({"img_id": i, "exp_ori": [float(j), float(b), float(b)],
                       "transform_matrix": np.eye(4).tolist()})
    (root / "transforms.json").write_text(json.dumps({"exp_names": NAMES, "frames": frames}))


def _renders(folder: Path, opening, closure) -> None:
    folder.mkdir(parents=True)
    for i, (o, c) in enumerate(zip(opening, closure)):
        cv2.imwrite(str(folder / f"{i:05d}.png"), _face(o, c)[..., ::-1])


def test_drive_real_follows_and_not(tmp_path):
    rng = np.random.default_rng(0)
    jaw = rng.uniform(0, 1, 30)
    blink = (rng.uniform(0, 1, 30) > 0.7).astype(float)
    _dataset(tmp_path / "A", jaw[::-1], np.zeros(30))
    _dataset(tmp_path / "B", jaw, blink)
    _renders(tmp_path / "follow", jaw, blink)
    r = analyse(tmp_path / "A", tmp_path / "B", tmp_path / "follow", tmp_path / "out_f")
    assert r["frames"] == 30
    assert r["mouth_opening_vs_jaw"]["render"] > 0.95
    assert r["mouth_opening_vs_jaw"]["driver"] > 0.95
    assert r["eye_closure_vs_blink"]["render"] > 0.9
    strip = cv2.imread(str(tmp_path / "out_f" / "strip.png"))
    assert strip.shape[0] == 2 * 160 and strip.shape[1] % 160 == 0
    # a render that ignores the driver: a fixed mouth, eyes that never close
    _renders(tmp_path / "still", rng.uniform(0, 1, 30), np.zeros(30))
    r = analyse(tmp_path / "A", tmp_path / "B", tmp_path / "still", tmp_path / "out_s")
    assert abs(r["mouth_opening_vs_jaw"]["render"]) < 0.5
    assert r["eye_closure_vs_blink"]["render"] is None  # no variation at all


def test_drive_real_needs_named_codes(tmp_path):
    _dataset(tmp_path / "A", np.zeros(5), np.zeros(5))
    _dataset(tmp_path / "B", np.linspace(0, 1, 5), np.zeros(5))
    meta = json.loads((tmp_path / "B" / "transforms.json").read_text())
    del meta["exp_names"]
    (tmp_path / "B" / "transforms.json").write_text(json.dumps(meta))
    _renders(tmp_path / "r", np.linspace(0, 1, 5), np.zeros(5))
    with pytest.raises(SystemExit, match="named expressions"):
        analyse(tmp_path / "A", tmp_path / "B", tmp_path / "r", tmp_path / "o")
