"""Novel views with ground truth: ``<dataset>/novel/`` (written by ``tools/make_synthetic.py``).

A dataset folder of its own (``transforms.json``, ``ori_imgs/``, ``mask/``, ``parsing/``,
``regions/``) whose frames show a source frame's expression and world (head pose, body, light)
from a camera turned about the head's vertical axis. Besides the usual keys each frame has
``source_img_id``, ``yaw_deg`` and ``source_transform_matrix`` (the source frame's
camera-to-head matrix, which places the body).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scene.cameras import Camera
from scene.dataset_images import load_frames, read_regions
from scene.dataset_readers import DatasetInfo, read_dataset
from utils.errors import DatasetError

NOVEL_DIR = "novel"


@dataclass
class NovelViews:
    info: DatasetInfo
    cameras: list[Camera]  # image_slot: row of ``images``
    images: np.ndarray  # uint8 [F, H, W, 3], composited onto the background
    frames_info: list[dict]  # per camera: img_id, source_img_id, yaw_deg

    def gt(self, cam: Camera) -> torch.Tensor:
        return torch.from_numpy(self.images[cam.image_slot]).permute(2, 0, 1).float() / 255.0

    def regions(self, cam: Camera) -> np.ndarray | None:
        return read_regions(self.info, self.info.frames[cam.image_slot])


def read_novel_views(source_path: str | Path, resolution: int,
                     background: tuple[float, float, float], exp_dim: int
                     ) -> NovelViews | None:
    """The dataset's novel views with ground truth, or None where it has none."""
    root = Path(source_path) / NOVEL_DIR
    if not (root / "transforms.json").is_file():
        return None
    info = read_dataset(root, test_frames=0, eval_frames=0, resolution=resolution)
    if info.exp_dim != exp_dim:
        raise DatasetError(f"{root / 'transforms.json'}: expressions of {info.exp_dim} values, "
                           f"the dataset's have {exp_dim}. Fix: regenerate the novel views "
                           "with the dataset (tools/make_synthetic.py).")
    raw = json.loads((root / "transforms.json").read_text())["frames"]
    images, _ = load_frames(info, list(range(len(info.frames))), background)
    cams, frames_info = [], []
    for k, f in enumerate(info.frames):
        entry = raw[f.index]
        src = entry.get("source_transform_matrix")
        try:
            capture = None if src is None else np.asarray(src, dtype=np.float64).reshape(4, 4)
        except ValueError:
            raise DatasetError(f"{root / 'transforms.json'}: frame {f.index} "
                               f"(img_id {f.img_id}) has a source_transform_matrix that is not "
                               "4x4. Fix: regenerate the novel views.") from None
        cams.append(Camera(intr=info.intrinsics, c2w_gl=f.c2w.copy(),
                           exp=torch.from_numpy(f.exp.copy()), img_id=f.img_id, image_slot=k,
                           capture_c2w=capture))
        frames_info.append({"img_id": f.img_id, "source_img_id": entry.get("source_img_id"),
                            "yaw_deg": entry.get("yaw_deg")})
    return NovelViews(info, cams, images, frames_info)
