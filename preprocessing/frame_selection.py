"""From the tracked landmarks: one square crop for the whole clip (so the camera stays fixed and
nothing jitters), and which frames to keep, to fill in across short gaps or to drop (and why)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from preprocessing.frames import FrameSource
from preprocessing.geometry import FaceLayout
from preprocessing.options import PreprocessOptions
from preprocessing.tracking import Tracked
from utils.errors import InputError, first_few

# Why a frame was dropped (or filled in), as reported.
REASONS = {
    "no_face": "no face found",
    "several_faces": "several faces",
    "outside_crop": "face outside the crop",
    "failed_track": "failed track (landmarks jump away and back)",
    "occluded": "occluded (a hand or an object over the face or in the person mask)",
}
JUMP = 0.25  # landmark motion between neighbouring frames, in face heights, that is a jump


@dataclass
class Crop:
    """The square [x0, x0 + side) x [y0, y0 + side) of the source frames, resized to size."""

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / self.side

    def to_output(self, pts: np.ndarray) -> np.ndarray:
        """Source (u, v, z) pixels [..., 3] -> output pixels."""
        return (pts - np.array([self.x0, self.y0, 0.0])) * self.scale

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        img = rgb[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side]
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_CUBIC
        return cv2.resize(img, (self.size, self.size), interpolation=interp)


def face_heights(lm: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """Forehead-to-chin distance [F] in pixels (NaN where no landmarks)."""
    return np.linalg.norm(lm[:, layout.forehead, :2] - lm[:, layout.chin, :2], axis=-1)


def choose_crop(lm: np.ndarray, layout: FaceLayout, width: int, height: int, size: int,
                crop_scale: float) -> Crop:
    """One square crop for the clip from the tracked landmarks [F, N, 3] (source pixels).

    Its side is ``crop_scale`` median face heights (at most the frame's shorter side); its
    centre is the median face centre, a tenth of a face height lower so that the neck and
    shoulders are included, moved inside the frame where needed.
    """
    fh = float(np.median(face_heights(lm, layout)))
    lo, hi = lm[:, :, :2].min(1), lm[:, :, :2].max(1)
    centre = np.median(0.5 * (lo + hi), axis=0) + np.array([0.0, 0.1 * fh])
    side = int(min(round(crop_scale * fh), width, height))
    x0 = int(np.clip(round(centre[0] - side / 2), 0, width - side))
    y0 = int(np.clip(round(centre[1] - side / 2), 0, height - side))
    return Crop(x0, y0, side, size)


def _shape_distance(a: np.ndarray, b: np.ndarray, fh: float) -> float:
    """Mean landmark distance between two frames (2D), in face heights."""
    return float(np.linalg.norm(a[:, :2] - b[:, :2], axis=-1).mean() / fh)


def mark_failed_tracks(status: np.ndarray, lm: np.ndarray, fh: float) -> None:
    """Mark single tracked frames whose landmarks jump away from both neighbours while the
    neighbours agree (a tracking glitch, not a cut) as failed_track, in place."""
    ok = np.flatnonzero(status == "ok")
    for a, i, b in zip(ok[:-2], ok[1:-1], ok[2:]):
        if (_shape_distance(lm[i], lm[a], fh) > JUMP and _shape_distance(lm[i], lm[b], fh) > JUMP
                and _shape_distance(lm[a], lm[b], fh) < JUMP / 2):
            status[i] = "failed_track"


def fill_gaps(status: np.ndarray, lm: np.ndarray, fh: float, max_gap: int) -> list[int]:
    """Interpolate the landmarks across runs of at most ``max_gap`` failed frames between two
    tracked frames that agree (no cut in between). Marks them interpolated; returns them."""
    ok = np.flatnonzero(status == "ok")
    filled = []
    for a, b in zip(ok[:-1], ok[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap and _shape_distance(lm[a], lm[b], fh) < JUMP:
            for i in range(a + 1, b):
                u = (i - a) / (b - a)
                lm[i] = (1 - u) * lm[a] + u * lm[b]
                status[i] = "interpolated"
                filled.append(int(i))
    return filled


def segments(kept: np.ndarray, lm: np.ndarray, fh: float) -> list[slice]:
    """Runs of consecutive kept frames (slices into the kept list), split at cuts."""
    out, start = [], 0
    for j in range(1, len(kept) + 1):
        if j == len(kept) or kept[j] != kept[j - 1] + 1 or _shape_distance(
                lm[kept[j]], lm[kept[j - 1]], fh) > JUMP:
            out.append(slice(start, j))
            start = j
    return out


def select_frames(tracked: Tracked, layout: FaceLayout, source: FrameSource,
                  opts: PreprocessOptions) -> tuple[Crop, np.ndarray, float, list[int]]:
    """Choose the crop and which frames to keep, fill or drop (updates tracked.status).

    Returns the crop, the landmarks [F, N, 3] in output pixels (interpolated where filled),
    the median face height (output pixels) and the filled frames. Raises InputError when too
    few frames are usable.
    """
    status, n = tracked.status, len(tracked.status)
    ok = status == "ok"
    if not ok.any():
        raise InputError(
            f"no single face was found in any of the {n} frames of {source.path} "
            f"({_count_reasons(status)}). Fix: use a clip where one face is clearly visible "
            "(frontal or turned less than about 60 degrees, at least ~100 pixels high).")
    crop = choose_crop(tracked.landmarks[ok], layout, tracked.width, tracked.height, opts.size,
                       opts.crop_scale)
    lm = crop.to_output(tracked.landmarks)
    inside = np.all((lm[:, :, :2] >= 0) & (lm[:, :, :2] <= opts.size), axis=(1, 2))
    status[ok & ~inside] = "outside_crop"
    fh = float(np.nanmedian(face_heights(lm, layout)))
    mark_failed_tracks(status, lm, fh)
    filled = fill_gaps(status, lm, fh, opts.max_gap)
    check_enough(status, source, opts)
    return crop, lm, fh, filled


def check_enough(status: np.ndarray, source: FrameSource, opts: PreprocessOptions) -> None:
    """Raise InputError when fewer than --min_kept of the frames can be used."""
    n = len(status)
    usable = np.isin(status, ["ok", "interpolated"])
    need = max(2, math.ceil(opts.min_kept * n))
    if usable.sum() < need:
        failed = [source.describe(i) for i in np.flatnonzero(~usable)]
        fixes = "trim the clip to the part where one face is visible"
        if (status == "occluded").any():
            fixes += " and nothing covers it, pass --occlusion keep (or a higher " \
                     "--occlusion_threshold)"
        raise InputError(
            f"only {usable.sum()} of the {n} frames of {source.path} can be used (need {need}): "
            f"{_count_reasons(status)}; first failed frames: {first_few(failed, 3)}. Fix: "
            f"{fixes}, raise --max_gap to fill longer gaps, or lower --min_kept.")


def _count_reasons(status: np.ndarray) -> str:
    parts = [f"{REASONS[k]}: {int((status == k).sum())}" for k in REASONS if (status == k).any()]
    return "; ".join(parts) or "none failed"
