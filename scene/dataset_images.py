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
from utils.regions import encode_regions, parsing_masks


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
    return _load(info, frame, background)[0]


def _load(info: DatasetInfo, frame: FrameInfo, background: tuple[float, float, float]
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """The composited frame uint8 (H, W, 3) and its silhouette uint8 (H, W) (None without
    masks), at the loading size."""
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
        if alpha is not None:
            alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
    sil = None if alpha is None else np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    return rgb, sil


def read_silhouette(info: DatasetInfo, frame: FrameInfo, head_only: bool | None = None
                    ) -> np.ndarray | None:
    """The frame's foreground as float32 [H, W] in [0, 1] at the source size: the head of the
    parsing map with ``head_only`` (default: ``only_head``), else the soft mask; None without
    either."""
    src = info.source_intrinsics
    if info.only_head if head_only is None else head_only:
        par = _read_image(frame.parsing_path, frame, cv2.IMREAD_COLOR)
        _check_size(par, frame.parsing_path, frame, src, "parsing map")
        masks = parsing_masks(cv2.cvtColor(par, cv2.COLOR_BGR2RGB))
        return masks["head"].astype(np.float32)
    if frame.mask_path is not None:
        m = _read_image(frame.mask_path, frame, cv2.IMREAD_GRAYSCALE)
        _check_size(m, frame.mask_path, frame, src, "mask")
        return m.astype(np.float32) / 255.0
    return None


def read_parsing(info: DatasetInfo, frame: FrameInfo) -> dict[str, np.ndarray] | None:
    """The frame's head / neck / torso masks [H, W] bool at the source size, None without a
    parsing map."""
    if frame.parsing_path is None:
        return None
    par = _read_image(frame.parsing_path, frame, cv2.IMREAD_COLOR)
    _check_size(par, frame.parsing_path, frame, info.source_intrinsics, "parsing map")
    return parsing_masks(cv2.cvtColor(par, cv2.COLOR_BGR2RGB))


def read_regions(info: DatasetInfo, frame: FrameInfo) -> np.ndarray | None:
    """The frame's region label map (bit flags of :data:`utils.regions.REGION_BITS`), uint8
    [H, W] at the loading size: ``regions/{img_id}.png`` where the dataset has one, else the
    head / neck / torso of the parsing map; None without either."""
    path = info.root / "regions" / f"{frame.img_id}.png"
    if path.is_file():
        labels = _read_image(path, frame, cv2.IMREAD_GRAYSCALE)
        _check_size(labels, path, frame, info.source_intrinsics, "region map")
    else:
        parsing = read_parsing(info, frame)
        if parsing is None:
            return None
        labels = encode_regions(parsing)
    w, h = info.intrinsics.width, info.intrinsics.height
    if labels.shape != (h, w):
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    return labels


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
    return load_frames(info, frame_ids, background, workers)[0]


def load_frames(info: DatasetInfo, frame_ids: list[int],
                background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                workers: int = 8) -> tuple[np.ndarray, np.ndarray | None]:
    """The given frames composited, uint8 (F, H, W, 3), and their silhouettes (the soft masks,
    or the head with ``only_head``), uint8 (F, H, W); None for a dataset without masks."""
    h, w = info.intrinsics.height, info.intrinsics.width
    out = np.empty((len(frame_ids), h, w, 3), dtype=np.uint8)
    sils = np.empty((len(frame_ids), h, w), dtype=np.uint8)
    has_sil = [True]

    def work(k: int) -> None:
        out[k], sil = _load(info, info.frames[frame_ids[k]], background)
        if sil is None:
            has_sil[0] = False
        else:
            sils[k] = sil

    # cv2 lets go of the GIL while decoding, so threads overlap the I/O and decoding.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(work, range(len(frame_ids))):
            pass
    return out, (sils if has_sil[0] and len(frame_ids) else None)
