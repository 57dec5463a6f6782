"""Pass 1 of the preprocessing: the face and hand landmarks of every frame, on the full frame."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from preprocessing.frames import CONVERT_HINT, FrameSource
from preprocessing.landmarks import HAND_POINTS
from utils.errors import InputError


@dataclass
class Tracked:
    """Result of the first pass: per-frame status, face landmarks [F, N, 3] and hand
    landmarks [F, K, 21, 3] (source pixels, NaN where none)."""

    status: np.ndarray  # [F] str
    landmarks: np.ndarray
    width: int
    height: int
    hands: np.ndarray | None = None


def track(source: FrameSource, tracker: Callable, quiet: bool, console: TextIO | None = None,
          hand_tracker: Callable | None = None) -> Tracked:
    """Landmarks of the single face of every frame; status no_face / several_faces else; and
    the hands' landmarks when ``hand_tracker`` is given. The progress bar goes to ``console``
    (default stderr)."""
    from tqdm import tqdm

    status, lms, hands = [], [], []
    n_points = None
    for _, rgb in tqdm(source, total=len(source), desc="tracking", unit="frame",
                       disable=quiet, file=console):
        if hand_tracker is not None:
            hands.append(hand_tracker(rgb))
        faces = tracker(rgb).faces
        n_points = faces.shape[1]
        if len(faces) == 1:
            status.append("ok")
            lms.append(faces[0])
        else:
            status.append("no_face" if len(faces) == 0 else "several_faces")
            lms.append(None)
    if not status:
        raise InputError(f"{source.path} has no frames. {CONVERT_HINT}")
    n_points = n_points or 1
    arr = np.full((len(lms), n_points, 3), np.nan)
    for i, lm in enumerate(lms):
        if lm is not None:
            arr[i] = lm
    w, h = source.size
    hand_arr = None
    if hand_tracker is not None:
        hand_arr = np.full((len(hands), hand_tracker.max_hands, HAND_POINTS, 3), np.nan)
        for i, found in enumerate(hands):
            hand_arr[i, :len(found)] = found[:hand_tracker.max_hands]
    return Tracked(np.array(status, dtype=object), arr, w, h, hand_arr)
