"""Frames of a video file or of a folder of images, decoded one at a time as RGB uint8."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from utils.errors import InputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CONVERT_HINT = ("Fix: check that the file plays, convert it (e.g. `ffmpeg -i IN -c:v libx264 "
                "OUT.mp4`), or pass a folder of frames instead.")


def _natural_key(path: Path) -> list:
    """Sort key that orders frame2.png before frame10.png."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


class FrameSource:
    """Iterate (index, RGB (H, W, 3) uint8) over a video file or a folder of images.

    Every problem raises :class:`InputError` naming the file (and frame) and the fix.
    """

    def __init__(self, path: str | Path, max_frames: int | None = None):
        self.path = Path(path)
        self.max_frames = max_frames
        if not self.path.exists():
            raise InputError(f"{self.path} not found. Fix: pass a video file or a folder of "
                             "frames (jpg/png) as INPUT.")
        self.is_folder = self.path.is_dir()
        if self.is_folder:
            self.files = sorted((p for p in self.path.iterdir()
                                 if p.suffix.lower() in IMAGE_EXTS and p.is_file()),
                                key=_natural_key)
            if not self.files:
                raise InputError(f"{self.path} holds no images ({', '.join(IMAGE_EXTS)}). "
                                 "Fix: pass a folder of frames or a video file.")
        else:
            self.files = []
            cap = cv2.VideoCapture(str(self.path))
            ok = cap.isOpened() and cap.read()[0]
            cap.release()
            if not ok:
                raise InputError(f"{self.path} cannot be decoded as a video (OpenCV read no "
                                 f"frame from it). {CONVERT_HINT}")
        self.size: tuple[int, int] | None = None  # (width, height) of the first frame

    def __len__(self) -> int:
        """Number of frames (for a video, as its header says; decoding decides)."""
        if self.is_folder:
            n = len(self.files)
        else:
            cap = cv2.VideoCapture(str(self.path))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
        return min(n, self.max_frames) if self.max_frames else n

    def describe(self, index: int) -> str:
        """How to find frame ``index`` in the input, for messages."""
        if self.is_folder:
            return str(self.files[index])
        return f"frame {index} of {self.path}"

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        frames = self._folder() if self.is_folder else self._video()
        for i, rgb in frames:
            if self.max_frames is not None and i >= self.max_frames:
                return
            size = (rgb.shape[1], rgb.shape[0])
            if self.size is None:
                self.size = size
            elif size != self.size:
                raise InputError(
                    f"{self.describe(i)} is {size[0]}x{size[1]} but the first frame is "
                    f"{self.size[0]}x{self.size[1]}. Fix: give all frames the same size.")
            yield i, rgb

    def _folder(self) -> Iterator[tuple[int, np.ndarray]]:
        for i, f in enumerate(self.files):
            data = np.fromfile(str(f), dtype=np.uint8)
            img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            if img is None:
                raise InputError(f"{f} cannot be decoded as an image. Fix: replace or delete "
                                 "it.")
            yield i, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def _video(self) -> Iterator[tuple[int, np.ndarray]]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            i = 0
            while True:
                ok, img = cap.read()
                if not ok:
                    return
                yield i, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                i += 1
        finally:
            cap.release()
