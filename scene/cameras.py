"""Cameras: one per frame, holding the pose, the intrinsics and the frame's expression.

Poses are read as camera-to-world matrices with OpenGL axes (x right, y up, looking down -z) in
the head's frame, as in transforms.json. The renderers take world-to-camera matrices with
OpenCV axes (x right, y down, looking down +z), which :attr:`Camera.viewmat` provides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from scene.dataset_readers import Intrinsics
from utils.graphics_utils import GL_TO_CV


@dataclass
class Camera:
    """A view to render: pose, intrinsics, expression and (for dataset frames) its image."""

    intr: Intrinsics
    c2w_gl: np.ndarray  # [4, 4] camera-to-world, OpenGL axes, head frame
    exp: torch.Tensor  # [E] expression vector
    img_id: int | None = None
    image_slot: int | None = None  # row of the ImageStore holding the ground truth
    # [4, 4] camera-to-head matrix of the capture camera, which places the body (the frame whose
    # head pose and body this view shows); None: the view's own camera
    capture_c2w: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def width(self) -> int:
        return self.intr.width

    @property
    def height(self) -> int:
        return self.intr.height

    @property
    def c2w_cv(self) -> np.ndarray:
        """Camera-to-world with OpenCV axes. [4, 4]"""
        return self.c2w_gl @ GL_TO_CV

    def viewmat(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """World-to-camera with OpenCV axes, float32. [4, 4]"""
        return torch.tensor(np.linalg.inv(self.c2w_cv), dtype=torch.float32, device=device)

    def campos(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Camera centre in the world (head) frame. [3]"""
        return torch.tensor(self.c2w_gl[:3, 3], dtype=torch.float32, device=device)

    def tensors(self, device: torch.device | str, centred: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(viewmat [4, 4], K [3, 3], campos [3], exp [E]) on ``device``, copied there once:
        a copy from pageable host memory would stall the GPU queue at every iteration."""
        key = (str(device), centred)
        if key not in self._cache:
            self._cache[key] = (self.viewmat(device), self.K(device, centred),
                                self.campos(device), self.exp.to(device))
        return self._cache[key]

    def capture(self, device: torch.device | str) -> torch.Tensor:
        """The capture camera's camera-to-head matrix, float32 [4, 4] on ``device`` (copied
        there once)."""
        key = ("capture", str(device))
        if key not in self._cache:
            c2w = self.c2w_gl if self.capture_c2w is None else self.capture_c2w
            self._cache[key] = torch.tensor(c2w, dtype=torch.float32, device=device)
        return self._cache[key]

    def K(self, device: torch.device | str = "cpu", centred: bool = False) -> torch.Tensor:
        """3x3 intrinsics; ``centred`` puts the principal point at the image centre (models
        that were trained that way)."""
        intr = self.intr.centred() if centred else self.intr
        return torch.tensor(intr.matrix(), dtype=torch.float32, device=device)


def cameras_from_frames(frames, intr: Intrinsics, slots: dict[int, int] | None = None
                        ) -> list[Camera]:
    """Build cameras for dataset frames; ``slots`` maps frame index -> ImageStore row."""
    cams = []
    for f in frames:
        cams.append(Camera(
            intr=intr, c2w_gl=f.c2w.copy(), exp=torch.from_numpy(f.exp.copy()), img_id=f.img_id,
            image_slot=None if slots is None else slots.get(f.index),
        ))
    return cams


def orbit_cameras(exps: list[torch.Tensor], intr: Intrinsics, distance: float,
                  n_frames: int = 100, start_deg: float = 15.0, end_deg: float = -15.0,
                  captures: list[np.ndarray] | None = None) -> list[Camera]:
    """Cameras on a horizontal arc about the head's vertical (y) axis, looking at the origin.

    Frame k is at yaw ``start + (end - start) * k / n_frames`` (the original code's +15 to -15
    degrees over 100 frames) and uses expression ``exps[k % len(exps)]`` and the capture pose
    ``captures[k % len(captures)]`` (where the body is).
    """
    cams = []
    for k in range(n_frames):
        yaw = math.radians(start_deg + (end_deg - start_deg) * k / n_frames)
        c, s = math.cos(yaw), math.sin(yaw)
        rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        c2w = np.eye(4)
        c2w[:3, :3] = rot
        c2w[:3, 3] = rot @ np.array([0.0, 0.0, distance])
        cap = None if not captures else captures[k % len(captures)]
        cams.append(Camera(intr=intr, c2w_gl=c2w, exp=exps[k % len(exps)], capture_c2w=cap))
    return cams


def mean_camera_distance(c2ws: list[np.ndarray]) -> float:
    """Mean distance of the camera centres from the head-frame origin."""
    return float(np.mean([np.linalg.norm(c[:3, 3]) for c in c2ws]))


def cameras_extent(c2ws: list[np.ndarray]) -> float:
    """3DGS's scene extent: 1.1 x the largest distance of a camera centre from their
    mean (3DGS's NeRF++ normalisation). Densification thresholds are fractions of it."""
    centres = np.stack([c[:3, 3] for c in c2ws])
    return float(1.1 * np.max(np.linalg.norm(centres - centres.mean(0), axis=1)))


# weight per camera of the head frame's origin in view_sphere's centre
VIEW_SPHERE_PRIOR = 0.1


def view_sphere(c2ws: list[np.ndarray], intr: Intrinsics, prior: float = VIEW_SPHERE_PRIOR
                ) -> tuple[np.ndarray, float]:
    """Centre and radius of the sphere the cameras look at.

    The centre is the point closest (least squares) to all optical axes, drawn towards the
    head frame's origin (where trackers put the head) with the weight ``prior`` per camera: in
    a monocular video the axes are nearly parallel, and their crossing along the viewing
    direction rests on a few degrees of head motion (a webcam clip's put it 0.1-0.3 in front
    of the head, where the head's first Gaussians and the body's surface would then lie);
    across the view the axes fix it. Cameras that circle the head fix it in every direction
    (the prior moves it an eighth of the way to the origin). The radius is the half-diagonal of
    the field of view at the mean distance of the cameras from that centre.
    """
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for c in c2ws:
        o = c[:3, 3]
        d = -c[:3, 2] / np.linalg.norm(c[:3, 2])  # OpenGL cameras look down -z
        p = np.eye(3) - np.outer(d, d)
        a += p
        b += p @ o
    a += prior * len(c2ws) * np.eye(3)  # towards the origin (b gains prior * n * 0)
    if len(c2ws) and np.linalg.cond(a) < 1e8:
        centre = np.linalg.solve(a, b)
    else:  # no prior and all axes parallel (a single or a fixed camera): the origin
        centre = np.zeros(3)
    dist = float(np.mean([np.linalg.norm(c[:3, 3] - centre) for c in c2ws]))
    half_w = intr.width / (2 * intr.fx)
    half_h = intr.height / (2 * intr.fy)
    radius = dist * math.hypot(half_w, half_h)
    return centre.astype(np.float32), radius
