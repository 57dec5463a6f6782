"""File output that never leaves a half-written file behind: write to a temporary file in the
same folder, flush it to disk, then rename it over the target."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the extension: writers such as ffmpeg pick the format from it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; use the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def write_image(path: str | os.PathLike, image: np.ndarray, params: Sequence[int] = ()
                ) -> None:
    """Write an RGB (H, W, 3) or grey (H, W) image atomically, in the format of the path's
    extension (.png, .jpg, ...); ``params`` are cv2.imwrite flags (e.g. the JPEG quality)."""
    import cv2

    path = Path(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # cv2 encodes BGR
    ok, buf = cv2.imencode(path.suffix, image, list(params))
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or grey (H, W) uint8 image as PNG (path ends in .png), atomically."""
    write_image(path, image)


def to_uint8(image) -> np.ndarray:
    """A float image in [0, 1] (torch [3, H, W] / [H, W, 3] or numpy) to uint8 (H, W, 3)."""
    import torch

    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    out = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    if out.ndim == 3 and out.shape[-1] == 1:
        out = out[..., 0]
    return out


class VideoWriter:
    """Write uint8 RGB frames to an mp4 (H.264 via imageio-ffmpeg), atomically on close."""

    def __init__(self, path: str | os.PathLike, fps: float = 25.0):
        self.path = Path(path)
        self.fps = fps
        self._ctx = atomic_path(self.path.with_suffix(".mp4"))
        self._tmp = self._ctx.__enter__()
        self._writer = None

    def append(self, frame: np.ndarray) -> None:
        import imageio.v2 as imageio

        if self._writer is None:
            self._writer = imageio.get_writer(
                str(self._tmp), format="FFMPEG", fps=self.fps, codec="libx264",
                quality=8, macro_block_size=1, pixelformat="yuv420p",
            )
        h, w = frame.shape[:2]
        # yuv420p needs even sizes
        self._writer.append_data(frame[: h - h % 2, : w - w % 2])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("no frames"), None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._writer is not None:
                self._writer.close()
            self._ctx.__exit__(exc_type, exc, tb)
