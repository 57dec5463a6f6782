"""Decoding a dataset's frames: images composited onto the background with their masks (or the
head of the parsing map with ``only_head``), and the silhouettes themselves. Every problem
raises :class:`DatasetError` naming the file, the frame and the fix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from scene.dataset_readers import DatasetInfo, FrameInfo, Intrinsics
from utils.errors import DatasetError
from utils.regions import parsing_masks


def _read_image(path: Path, frame: FrameInfo, flags: int) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    img = cv2.imdecode(data, flags) if data is not None and data.size else None
    if img is None:
        raise DatasetError(f"{path} (frame {frame.index}, img_id {frame.img_id}) cannot be "
                           "decoded: the file is missing, empty or corrupt. Fix: restore it, or "
                           "remove this frame from transforms.json.")
    return img


def load_frame(info: DatasetInfo, frame: FrameInfo, background: tuple[float, float, float]
               ) -> np.ndarray:
    """Decode one frame and composite it onto ``background`` (RGB in [0, 1]).

    Returns uint8 (H, W, 3) at the dataset's loading size.
    """
    src = info.source_intrinsics
    img = _read_image(frame.image_path, frame, cv2.IMREAD_COLOR)
    if img.shape[:2] != (src.height, src.width):
        raise DatasetError(
            f"{frame.image_path} (img_id {frame.img_id}) is {img.shape[1]}x{img.shape[0]} but "
            f"transforms.json says w={src.width}, h={src.height}. Fix: resize the frames to match, "
            "or correct w/h (and the intrinsics) in transforms.json."
        )
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    alpha = read_silhouette(info, frame)
    if alpha is not None:
        bg = np.array(background, dtype=np.float32) * 255.0
        out = rgb.astype(np.float32) * alpha[..., None] + bg * (1.0 - alpha[..., None])
        rgb = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    w, h = info.intrinsics.width, info.intrinsics.height
    if (w, h) != (src.width, src.height):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return rgb


def read_silhouette(info: DatasetInfo, frame: FrameInfo) -> np.ndarray | None:
    """The frame's foreground as float32 [H, W] in [0, 1] at the source size: the head of the
    parsing map with ``only_head``, else the soft mask; None without either."""
    src = info.source_intrinsics
    if info.only_head:
        par = _read_image(frame.parsing_path, frame, cv2.IMREAD_COLOR)
        _check_size(par, frame.parsing_path, frame, src, "parsing map")
        masks = parsing_masks(cv2.cvtColor(par, cv2.COLOR_BGR2RGB))
        return masks["head"].astype(np.float32)
    if frame.mask_path is not None:
        m = _read_image(frame.mask_path, frame, cv2.IMREAD_GRAYSCALE)
        _check_size(m, frame.mask_path, frame, src, "mask")
        return m.astype(np.float32) / 255.0
    return None


def _check_size(arr: np.ndarray, path: Path, frame: FrameInfo, src: Intrinsics, what: str):
    if arr.shape[:2] != (src.height, src.width):
        raise DatasetError(
            f"{path} (the {what} of img_id {frame.img_id}) is {arr.shape[1]}x{arr.shape[0]} but "
            f"the frames are {src.width}x{src.height}. Fix: regenerate it at the frame size."
        )


def load_images(info: DatasetInfo, frame_ids: list[int],
                background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                workers: int = 8) -> np.ndarray:
    """Decode and composite the given frames into one uint8 array (F, H, W, 3)."""
    h, w = info.intrinsics.height, info.intrinsics.width
    out = np.empty((len(frame_ids), h, w, 3), dtype=np.uint8)

    def work(k: int) -> None:
        out[k] = load_frame(info, info.frames[frame_ids[k]], background)

    # cv2 lets go of the GIL while decoding, so threads overlap the I/O and decoding.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(work, range(len(frame_ids))):
            pass
    return out
