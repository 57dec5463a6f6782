"""Image measures of a face's mouth and eyes, shared by the reenactment benchmarks
(bench/reenactment.py, bench/drive_real.py): how open a mouth is and how closed the eyes are,
read from the pixels in boxes about the regions of utils/regions.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DARK = 0.45  # mouth: darker than this fraction of the box's bright (90th percentile) level
WHITE_MIN, WHITE_SPREAD = 0.7, 0.12  # eyes: every channel above, channels this close


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return img[..., ::-1] if img.ndim == 3 else img


def box(mask: np.ndarray, grow: float = 0.25) -> tuple[slice, slice]:
    """The bounding box of a mask, grown by ``grow`` of its size on each side."""
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    y0, y1 = int(ys.min() - grow * h), int(ys.max() + grow * h) + 1
    x0, x1 = int(xs.min() - grow * w), int(xs.max() + grow * w) + 1
    return slice(max(y0, 0), y1), slice(max(x0, 0), x1)


def mouth_opening(img: np.ndarray, box: tuple[slice, slice]) -> float:
    """Share of dark pixels in the mouth box (the open mouth's interior is dark)."""
    lum = img[box].astype(np.float64).mean(-1)
    return float(np.mean(lum < DARK * np.percentile(lum, 90)))


def eye_closure(img: np.ndarray, boxes: list[tuple[slice, slice]], open_share: float) -> float:
    """One minus the share of white, unsaturated pixels (the sclera) in the eye boxes,
    relative to ``open_share`` (the share with the eyes open)."""
    shares = []
    for b in boxes:
        px = img[b].astype(np.float64) / 255.0
        white = (px.min(-1) > WHITE_MIN) & (px.max(-1) - px.min(-1) < WHITE_SPREAD)
        shares.append(white.mean())
    return float(1.0 - np.mean(shares) / max(open_share, 1e-9))


def eye_boxes(eyes: np.ndarray) -> list[tuple[slice, slice]]:
    """One box per eye: the halves of the eye region left and right of its centre."""
    xs = np.nonzero(eyes)[1]
    mid = int(np.median(xs))
    left, right = eyes.copy(), eyes.copy()
    left[:, mid:], right[:, :mid] = False, False
    return [box(m, 0.1) for m in (left, right) if m.any()]


def corr(x: list[float], y: list[float]) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
