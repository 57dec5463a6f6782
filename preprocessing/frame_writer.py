"""Pass 2 of the preprocessing: crop and resize the usable frames and write them with their
person masks (edge colours decontaminated), parsing maps and region maps, measuring on the way
how much of each is occluded; then number the kept ones in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from preprocessing import occlusion as occ
from preprocessing.frame_selection import Crop
from preprocessing.frames import FrameSource
from preprocessing.geometry import FaceLayout
from preprocessing.masks import clean_mask, feature_regions, fill_polygon, label_masks, parse
from preprocessing.matting import decontaminate
from preprocessing.options import PreprocessOptions
from utils.errors import InputError
from utils.io_utils import write_image
from utils.regions import encode_regions, parsing_image

SUBFOLDERS = {"ori_imgs": "{}.jpg", "mask": "{}.png", "parsing": "{}.png", "regions": "{}.png"}


def write_frames(source: FrameSource, frames: np.ndarray, lm: np.ndarray, hands: np.ndarray,
                 crop: Crop, layout: FaceLayout, segmenter: Callable, folder: Path,
                 opts: PreprocessOptions, console: TextIO | None = None
                 ) -> dict[int, dict[str, float]]:
    """Crop, resize and write the given frames (source indices, sorted) with their masks,
    parsing and region maps, named by source index (see :func:`number_frames`).

    lm [F, N, 3] and hands [F, K, 21, 3] are in output pixels. Returns the occlusion cues of
    every frame written, by source index.
    """
    from tqdm import tqdm

    todo = set(map(int, frames))
    bar = tqdm(total=len(todo), desc="writing", unit="frame", disable=opts.quiet, file=console)
    shape = (opts.size, opts.size)
    eyes = [layout.eye_outer_right, layout.eye_outer_left]
    lips = np.concatenate(layout.lips) if layout.lips else np.zeros(0, int)
    cues = {}
    for i, rgb in source:
        if i not in todo:
            continue
        img = crop.apply(rgb)
        face = fill_polygon(lm[i, layout.oval, :2], shape)
        prob = segmenter(img)
        mask = clean_mask(prob, face)
        mask8 = np.rint(mask * 255).astype(np.uint8)
        band, eye_distance = occ.side_band(lm[i, eyes, :2], lm[i, lips, :2], shape)
        cues[i] = occ.occlusion_cues(prob, face, occ.hand_region(hands[i], shape), band,
                                     eye_distance)
        body = label_masks(parse(mask, lm[i, :, :2], layout.oval, layout.chin, layout.forehead,
                                 image=img))
        if opts.decontaminate:
            img = decontaminate(img, mask8 / 255.0)  # the alpha the trainer will read
        write_image(folder / "ori_imgs" / f"s{i}.jpg", img, jpeg_params(opts.jpeg_quality))
        write_image(folder / "mask" / f"s{i}.png", mask8)
        write_image(folder / "parsing" / f"s{i}.png", parsing_image(body))
        write_image(folder / "regions" / f"s{i}.png",
                    encode_regions({**body, **feature_regions(lm[i, :, :2], layout, shape)}))
        bar.update()
        if len(cues) == len(todo):
            break
    bar.close()
    if len(cues) != len(todo):
        raise InputError(f"{source.path} gave fewer frames on the second read ({len(cues)} of "
                         f"{len(todo)} usable frames). Fix: copy the file locally and retry, or "
                         "extract its frames into a folder.")
    return cues


def number_frames(folder: Path, written: np.ndarray, kept: np.ndarray) -> None:
    """Rename the files of the kept frames from their source index to their img_id (masks
    one-based, as released) and delete those of the frames not kept."""
    img_id = {int(i): j for j, i in enumerate(kept)}
    for i in map(int, written):
        for sub, name in SUBFOLDERS.items():
            path = folder / sub / name.format(f"s{i}")
            j = img_id.get(i)
            if j is None:
                path.unlink()
            else:
                path.rename(folder / sub / name.format(j + 1 if sub == "mask" else j))


def jpeg_params(quality: int) -> list[int]:
    """cv2.imwrite parameters of ori_imgs: the given quality, and colour at full resolution
    (4:4:4), since the usual half-resolution colour (4:2:0) would mix the background's colour
    back into the decontaminated edge pixels."""
    return [cv2.IMWRITE_JPEG_QUALITY, quality,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
