"""Scene: a dataset's cameras and ground-truth images, ready for training and rendering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scene.cameras import (
    Camera,
    cameras_extent,
    cameras_from_frames,
    mean_camera_distance,
    view_sphere,
)
from scene.dataset_images import load_frames, read_regions
from scene.dataset_readers import DatasetInfo, read_dataset, read_points3d
from scene.initialization import BodyStart, body_initial_points, carve_random_points
from utils.regions import REGION_BITS


class ImageStore:
    """Ground-truth frames as one uint8 tensor [F, H, W, 3] and their silhouettes as one uint8
    tensor [F, H, W] (None without masks), on the CPU or the GPU."""

    def __init__(self, images: np.ndarray, masks: np.ndarray | None = None,
                 device: torch.device | str = "cpu"):
        self.images = torch.from_numpy(images).to(device)
        self.masks = None if masks is None else torch.from_numpy(masks).to(device)
        self.regions: torch.Tensor | None = None  # uint8 [F, H, W] flags, see load_regions

    def __len__(self) -> int:
        return self.images.shape[0]

    def get(self, slot: int, device: torch.device | str) -> torch.Tensor:
        """Frame ``slot`` as float [3, H, W] in [0, 1] on ``device``."""
        return self.images[slot].to(device, non_blocking=True).permute(2, 0, 1).float() / 255.0

    def to(self, device: torch.device | str) -> ImageStore:
        self.images = self.images.to(device)
        if self.masks is not None:
            self.masks = self.masks.to(device)
        if self.regions is not None:
            self.regions = self.regions.to(device)
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
        self.resolution = resolution
        self.background = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
        ids = (self.info.train_ids if load_train else []) + [
            i for i in (self.info.test_ids if load_test else []) if not (
                load_train and i in self.info.train_ids)]
        self.slots = {frame_index: k for k, frame_index in enumerate(ids)}
        # decoding checks every image (size, corruption) before anything is written
        self.images = ImageStore(*load_frames(self.info, ids, self.background, workers))
        intr = self.info.intrinsics
        self.train_cameras: list[Camera] = cameras_from_frames(
            self.info.train_frames, intr, self.slots) if load_train else []
        self.test_cameras: list[Camera] = cameras_from_frames(
            self.info.test_frames, intr, self.slots) if load_test else []
        self._by_img_id = {f.img_id: f for f in self.info.frames}
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

    def regions(self, cam: Camera) -> np.ndarray | None:
        """The region label map of a dataset camera's frame (uint8 [H, W], bit flags of
        :data:`utils.regions.REGION_BITS`), or None without regions/ and parsing/."""
        return read_regions(self.info, self._by_img_id[cam.img_id])

    def load_regions(self, names: tuple[str, ...] = ("eyes", "mouth")) -> bool:
        """Keep, beside the loaded frames, where each shows one of the regions ``names``
        (``images.regions``: uint8 [F, H, W], 1 inside); False (nothing kept) unless every
        loaded frame has a region map (regions/ of tools/preprocess.py) holding them."""
        bits = sum(REGION_BITS[n] for n in names)
        frames = sorted(self.slots.items(), key=lambda kv: kv[1])
        out = np.zeros((len(frames), *self.images.images.shape[1:3]), dtype=np.uint8)
        for frame_index, slot in frames:
            frame = self.info.frames[frame_index]
            if not (self.info.root / "regions" / f"{frame.img_id}.png").is_file():
                return False
            out[slot] = (read_regions(self.info, frame) & bits) != 0
        self.images.regions = torch.from_numpy(out).to(self.images.images.device)
        return True

    def mean_campos(self) -> torch.Tensor:
        return torch.tensor(np.mean([f.c2w[:3, 3] for f in self.info.train_frames], axis=0),
                            dtype=torch.float32)

    # ------------------------------------------------------------------ initial points
    def initial_points(self, num_points: int, seed: int, head_only: bool = False,
                       centre: str = "origin", shell: float = 0.0) -> tuple[np.ndarray, str]:
        """Initial Gaussian centres: the dataset's points3d.ply if present, otherwise random
        points inside the cameras' view of the head (the visual hull of the masks; of the
        parsing maps' head with ``head_only`` where every training frame has one), sought in
        the sphere about :attr:`center` (``centre="origin"``) or about the optical axes'
        crossing alone (``"axes"``, :func:`scene.cameras.view_sphere` without its prior);
        ``shell``: see :func:`scene.initialization.carve_random_points`."""
        if self.info.points3d_path is not None:
            xyz = read_points3d(self.info.points3d_path)
            return xyz, f"{len(xyz)} points from {self.info.points3d_path}"
        head_only = head_only and self.has_parsing
        center, radius = self.center, self.radius
        if centre == "axes":
            center, radius = view_sphere([f.c2w for f in self.info.train_frames],
                                         self.info.intrinsics, prior=0.0)
        elif centre != "origin":
            raise ValueError(f"unknown head centre {centre!r}")
        xyz = carve_random_points(self.info, center, radius, num_points, seed,
                                  head_only=head_only or None, shell=shell)
        what = "the parsing maps' head" if head_only else "the masks"
        where = "in the outer layer of" if shell > 0 else "inside"
        return xyz, f"{len(xyz)} random points {where} the visual hull of {what}"

    @property
    def has_parsing(self) -> bool:
        return all(f.parsing_path is not None for f in self.info.train_frames)

    def body_points(self, head_xyz: np.ndarray, n: int, seed: int, shape: str = "surface",
                    depth_ratio: float = 0.5, depth_offset: float = 0.4, margin: float = 0.0,
                    back_share: float = 0.0) -> BodyStart:
        """Initial body Gaussians in the capture camera's frame, their colours and the body's
        surface (:func:`scene.initialization.body_initial_points`)."""
        masks = None if self.images.masks is None else self.images.masks.cpu().numpy()
        return body_initial_points(self.info, self.images.images.cpu().numpy(), masks,
                                   self.slots, head_xyz, n, seed, shape=shape,
                                   depth_ratio=depth_ratio, depth_offset=depth_offset,
                                   margin=margin, back_share=back_share)
