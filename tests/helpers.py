"""Small builders shared by tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

# the original-release checkpoint fixture, beside the checkout in ../shared; GH_FIXTURE points
# elsewhere (e.g. on a GPU machine)
FIXTURE = Path(os.environ.get("GH_FIXTURE") or Path(__file__).resolve().parents[2] / "shared"
               / "fixtures" / "original_checkpoint")
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "model" / "cfg_args").is_file(),
    reason=f"the original-release fixture is not at {FIXTURE}; set GH_FIXTURE to its folder")


def look_at_c2w(eye, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera-to-world with OpenGL axes (looking down -z) at ``eye`` towards ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    back = eye - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye
    return c2w


def write_tiny_dataset(root: Path, n: int = 6, size: int = 16, exp_dim: int = 5,
                       mask_offset: int = 1, parsing: bool = True, cx: float | None = None,
                       seed: int = 0) -> Path:
    """A minimal dataset in the released layout: a disc on a black background per frame."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for d in ("ori_imgs", "mask", "parsing"):
        (root / d).mkdir(exist_ok=True)
    frames = []
    for i in range(n):
        yaw = np.radians(-10 + 20 * i / max(1, n - 1))
        c2w = look_at_c2w([0.5 * np.sin(yaw), 0.0, 0.5 * np.cos(yaw)])
        frames.append({"img_id": i, "aud_id": i, "transform_matrix": c2w.tolist(),
                       "exp_ori": rng.random(exp_dim).round(4).tolist()})
        img = np.zeros((size, size, 3), np.uint8)
        cv2.circle(img, (size // 2, size // 2), size // 3, (40, 120, 200), -1)
        cv2.imwrite(str(root / "ori_imgs" / f"{i}.jpg"), img)
        mask = np.zeros((size, size), np.uint8)
        cv2.circle(mask, (size // 2, size // 2), size // 3, 255, -1)
        cv2.imwrite(str(root / "mask" / f"{i + mask_offset}.png"), mask)
        if parsing:
            par = np.full((size, size, 3), 255, np.uint8)
            cv2.circle(par, (size // 2, size // 2), size // 3, (255, 0, 0), -1)  # BGR: RGB blue
            cv2.imwrite(str(root / "parsing" / f"{i}.png"), par)
    meta = {"h": size, "w": size, "fx": 1.45 * size, "fy": 1.45 * size,
            "cx": size / 2 if cx is None else cx, "cy": size / 2, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def edit_transforms(root: Path, fn) -> None:
    """Apply ``fn(meta)`` to transforms.json in place."""
    meta = json.loads((root / "transforms.json").read_text())
    fn(meta)
    (root / "transforms.json").write_text(json.dumps(meta))
