"""Scene: a dataset's cameras and ground-truth images, ready for training and rendering."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from scene.cameras import (
    Camera,
    cameras_extent,
    cameras_from_frames,
    mean_camera_distance,
    view_sphere,
)
from scene.dataset_readers import (
    HEAD_RGB,
    DatasetInfo,
    load_images,
    read_dataset,
    read_points3d,
)
from utils.io_utils import atomic_write_text


class ImageStore:
    """Ground-truth frames as one uint8 tensor [F, H, W, 3] (on the CPU or the GPU)."""

    def __init__(self, images: np.ndarray, device: torch.device | str = "cpu"):
        self.images = torch.from_numpy(images).to(device)

    def __len__(self) -> int:
        return self.images.shape[0]

    def get(self, slot: int, device: torch.device | str) -> torch.Tensor:
        """Frame ``slot`` as float [3, H, W] in [0, 1] on ``device``."""
        return self.images[slot].to(device, non_blocking=True).permute(2, 0, 1).float() / 255.0

    def to(self, device: torch.device | str) -> ImageStore:
        self.images = self.images.to(device)
        return self


class Scene:
    """Reads the dataset once; holds train/test cameras and their images."""

    def __init__(self, source_path: str | Path, *, test_frames: int = 1000,
                 eval_frames: int = 50, is_debug: bool = False, only_head: bool = False,
                 resolution: int = -1, white_background: bool = True,
                 load_train: bool = True, load_test: bool = True, workers: int = 8):
        self.info: DatasetInfo = read_dataset(
            source_path, test_frames=test_frames, eval_frames=eval_frames, is_debug=is_debug,
            only_head=only_head, resolution=resolution,
        )
        self.background = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
        ids = (self.info.train_ids if load_train else []) + [
            i for i in (self.info.test_ids if load_test else []) if not (
                load_train and i in self.info.train_ids)]
        self.slots = {frame_index: k for k, frame_index in enumerate(ids)}
        # decoding checks every image (size, corruption) before anything is written
        self.images = ImageStore(load_images(self.info, ids, self.background, workers))
        intr = self.info.intrinsics
        self.train_cameras: list[Camera] = cameras_from_frames(
            self.info.train_frames, intr, self.slots) if load_train else []
        self.test_cameras: list[Camera] = cameras_from_frames(
            self.info.test_frames, intr, self.slots) if load_test else []
        train_c2w = [f.c2w for f in self.info.train_frames]
        self.extent = cameras_extent(train_c2w)
        self.center, self.radius = view_sphere(train_c2w, intr)
        self.camera_distance = mean_camera_distance(train_c2w)

    @property
    def exp_dim(self) -> int:
        return self.info.exp_dim

    def gt(self, cam: Camera, device: torch.device | str) -> torch.Tensor:
        """Ground truth of a dataset camera, float [3, H, W]."""
        return self.images.get(cam.image_slot, device)

    def mean_campos(self) -> torch.Tensor:
        return torch.tensor(np.mean([f.c2w[:3, 3] for f in self.info.train_frames], axis=0),
                            dtype=torch.float32)

    # ------------------------------------------------------------------ initial points
    def initial_points(self, num_points: int, seed: int) -> tuple[np.ndarray, str]:
        """Initial Gaussian centres: the dataset's points3d.ply if present, otherwise random
        points inside the cameras' view of the head (the visual hull of the masks)."""
        if self.info.points3d_path is not None:
            xyz, _ = read_points3d(self.info.points3d_path)
            return xyz, f"{len(xyz)} points from {self.info.points3d_path}"
        xyz = carve_random_points(self.info, self.center, self.radius, num_points, seed)
        return xyz, f"{len(xyz)} random points inside the masks' visual hull"

    # ------------------------------------------------------------------ release files
    def write_cameras_json(self, path: Path) -> None:
        """The release's cameras.json: test cameras first, then train; rotation and position
        of the camera-to-world transform with OpenCV axes."""
        entries = []
        for i, f in enumerate(self.info.test_frames + self.info.train_frames):
            c2w = f.c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
            entries.append({
                "id": i, "img_name": f.img_id, "width": self.info.intrinsics.width,
                "height": self.info.intrinsics.height, "position": c2w[:3, 3].tolist(),
                "rotation": c2w[:3, :3].tolist(), "fy": self.info.intrinsics.fy,
                "fx": self.info.intrinsics.fx,
            })
        atomic_write_text(path, json.dumps(entries))


def _silhouette(info: DatasetInfo, frame, size: int) -> np.ndarray | None:
    """A frame's foreground (mask, or the head of the parsing map) as float (size, size')."""
    if info.only_head and frame.parsing_path is not None:
        par = cv2.imread(str(frame.parsing_path), cv2.IMREAD_COLOR)
        bgr = np.array(HEAD_RGB[::-1], dtype=np.uint8)
        sil = np.all(par == bgr, axis=-1).astype(np.float32)
    elif frame.mask_path is not None:
        sil = cv2.imread(str(frame.mask_path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    else:
        return None
    h, w = sil.shape
    return cv2.resize(sil, (size, max(1, round(size * h / w))), interpolation=cv2.INTER_AREA)


def carve_random_points(info: DatasetInfo, center: np.ndarray, radius: float, n: int,
                        seed: int, max_views: int = 24, size: int = 128) -> np.ndarray:
    """Sample ``n`` points uniformly in the view sphere that project inside the foreground of
    (almost) every sampled training frame. Without masks, points fill the sphere."""
    rng = np.random.default_rng(seed)
    frames = info.train_frames
    pick = np.linspace(0, len(frames) - 1, min(max_views, len(frames))).round().astype(int)
    views = []
    src = info.source_intrinsics
    for i in pick:
        sil = _silhouette(info, frames[i], size)
        if sil is None:
            continue
        sx = sil.shape[1] / src.width
        sy = sil.shape[0] / src.height
        w2c = np.linalg.inv(frames[i].c2w @ np.diag([1.0, -1.0, -1.0, 1.0]))
        views.append((sil, w2c, src.fx * sx, src.fy * sy, src.cx * sx, src.cy * sy))
    out = []
    total = 0
    for _ in range(200):
        cand = rng.normal(size=(max(4 * n, 1024), 3))
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        cand *= rng.random((len(cand), 1)) ** (1 / 3)
        cand = center + radius * cand
        votes = np.zeros(len(cand))
        for sil, w2c, fx, fy, cx, cy in views:
            p = cand @ w2c[:3, :3].T + w2c[:3, 3]
            z = np.maximum(p[:, 2], 1e-6)
            u = np.floor(fx * p[:, 0] / z + cx).astype(int)
            v = np.floor(fy * p[:, 1] / z + cy).astype(int)
            inside = (u >= 0) & (u < sil.shape[1]) & (v >= 0) & (v < sil.shape[0]) & (p[:, 2] > 0)
            fg = np.zeros(len(cand), dtype=bool)
            fg[inside] = sil[v[inside], u[inside]] > 0.5
            votes += fg
        keep = cand[votes >= 0.9 * len(views)] if views else cand
        out.append(keep)
        total += len(keep)
        if total >= n:
            break
    pts = np.concatenate(out)[:n] if out else np.zeros((0, 3))
    if len(pts) < min(n, 100):
        # the masks do not overlap in any common volume (bad poses?); fall back to the sphere
        cand = rng.normal(size=(n, 3))
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        pts = center + radius * cand * rng.random((n, 1)) ** (1 / 3)
    return pts.astype(np.float32)
