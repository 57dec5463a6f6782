"""A split of a dataset by head yaw: train on the frames whose head turns little, test on the
frames turned further (and, as usual, on the last frames within the range).

Real footage has no ground truth from a turned camera, but the head turns in it: frames turned
further than any training frame are a novel view of the trained avatar (with the expression
and the body of that frame). :func:`write_yaw_split` writes the dataset again (links to its
image folders, ``transforms.json`` reordered so that the held-out frames are last) for
train.py's usual ``--test_frames`` split.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from utils.errors import DatasetError
from utils.io_utils import atomic_write_json

LINKED = ("ori_imgs", "mask", "parsing", "regions", "points3d.ply")
SPLIT_FILE = "yaw_split.json"


@dataclass
class YawSplit:
    """Which frames (img_id) went where, and the yaws (degrees from the clip's median)."""

    max_yaw: float
    train: list[int]
    test: list[int]  # the last frames within the range
    turned: list[int]  # frames turned further than max_yaw
    yaw: dict[int, float]

    @property
    def held_out(self) -> int:
        """train.py's --test_frames for the split dataset (test and turned frames)."""
        return len(self.test) + len(self.turned)


def frame_yaws(c2ws: np.ndarray) -> np.ndarray:
    """The camera's azimuth about the head's vertical (y) axis, degrees, of camera-to-head
    matrices [F, 4, 4]: 0 in front of the face (+z), positive towards +x."""
    c = np.asarray(c2ws)[:, :3, 3]
    return np.degrees(np.arctan2(c[:, 0], c[:, 2]))


def plan_yaw_split(img_ids: list[int], c2ws: np.ndarray, max_yaw: float | None,
                   test_frames: int, turned_fraction: float = 0.15) -> YawSplit:
    """Frames turned more than ``max_yaw`` degrees from the median yaw are ``turned`` (None:
    the ``turned_fraction`` of frames turned most); of the others, the last ``test_frames``
    are ``test`` and the rest ``train``."""
    d = frame_yaws(c2ws)
    d = d - np.median(d)
    if max_yaw is None:
        max_yaw = float(np.quantile(np.abs(d), 1.0 - turned_fraction))
    turned = np.abs(d) > max_yaw
    within = [i for i, t in zip(img_ids, turned) if not t]
    if len(within) <= test_frames:
        raise DatasetError(f"a yaw split at {max_yaw:.1f} degrees leaves {len(within)} frames "
                           f"within the range, not more than the {test_frames} test frames. "
                           "Fix: a larger --yaw_split or fewer test frames.")
    return YawSplit(max_yaw=float(max_yaw), train=within[:len(within) - test_frames],
                    test=within[len(within) - test_frames:],
                    turned=[i for i, t in zip(img_ids, turned) if t],
                    yaw={i: round(float(y), 3) for i, y in zip(img_ids, d)})


def write_yaw_split(source: str | Path, out: str | Path, max_yaw: float | None,
                    test_frames: int) -> YawSplit:
    """The dataset ``source`` split by yaw (:func:`plan_yaw_split`) as the dataset ``out``:
    ``transforms.json`` with the frames in the order train, test, turned (train.py's
    ``--test_frames`` = :attr:`YawSplit.held_out`), links to the source's image folders, and
    ``yaw_split.json``."""
    source, out = Path(source).resolve(), Path(out)
    path = source / "transforms.json"
    try:
        meta = json.loads(path.read_text())
        frames = meta["frames"]
        ids = [int(f["img_id"]) for f in frames]
        c2ws = np.asarray([f["transform_matrix"] for f in frames], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: cannot be read for a yaw split ({err}). Fix: point "
                           "--data at a dataset folder with a valid transforms.json.") from None
    if c2ws.shape[1:] != (4, 4) or not np.isfinite(c2ws).all():
        raise DatasetError(f"{path}: every transform_matrix must be a finite 4x4 matrix.")
    split = plan_yaw_split(ids, c2ws, max_yaw, test_frames)
    by_id = {int(f["img_id"]): f for f in frames}
    meta = dict(meta, frames=[by_id[i] for i in split.train + split.test + split.turned])
    out.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if (source / name).exists() and not (out / name).exists():
            os.symlink(source / name, out / name)
    atomic_write_json(out / "transforms.json", meta)
    atomic_write_json(out / SPLIT_FILE, {**asdict(split), "source": str(source),
                                         "yaw": {str(k): v for k, v in split.yaw.items()}})
    return split


def describe(split: YawSplit) -> str:
    """One line: the range and how many frames each part holds, with their yaws."""
    def span(ids: list[int]) -> str:
        if not ids:
            return "none"
        y = [abs(split.yaw[i]) for i in ids]
        return f"{len(ids)} (|yaw| {min(y):.1f}-{max(y):.1f})"
    return (f"yaw split at +-{split.max_yaw:.1f} degrees from the median: train "
            f"{span(split.train)}, test {span(split.test)}, turned {span(split.turned)}")
