"""What the live viewer (viewer.py) shows, apart from the web page: an avatar with an editable
expression and capture pose, rendered from any camera, snapshots and exports of its frame.

Cameras of the page: viser reports a client's camera as a rotation (quaternion w, x, y, z)
and a position with ``P_world = R p_camera + t`` and OpenCV camera axes (x right, y down,
looking down +z), its vertical field of view and the canvas size. The world is our head frame
(the viewer does not move the scene), so the camera-to-head matrix with OpenGL axes is
``[R | t] @ GL_TO_CV`` (:func:`viser_to_c2w_gl`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scene.cameras import Camera
from scene.dataset_readers import DatasetInfo, Intrinsics
from scene.export import GaussianArrays, frame_gaussians, mean_pose, write_ply, write_splat
from scene.gaussian_model import FrameGaussians, GaussianHead
from scene.rendering import colour_viewpoint, render_view
from utils.errors import DatasetError
from utils.expression_space import slider_space
from utils.graphics_utils import GL_TO_CV
from utils.io_utils import to_uint8, write_png

# ----------------------------------------------------------------------------------------------
# the page's camera


def quat_to_matrix(wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] of a quaternion (w, x, y, z) (normalised first)."""
    w, x, y, z = np.asarray(wxyz, np.float64) / np.linalg.norm(wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def viser_to_c2w_gl(wxyz: np.ndarray, position: np.ndarray) -> np.ndarray:
    """A viser camera (rotation wxyz [4] and position [3] of the camera in the world, OpenCV
    axes) as our camera-to-head matrix with OpenGL axes. -> [4, 4] float64"""
    c2w_cv = np.eye(4)
    c2w_cv[:3, :3] = quat_to_matrix(wxyz)
    c2w_cv[:3, 3] = position
    return c2w_cv @ GL_TO_CV


def look_at_of(c2w_gl: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """What viser needs to show camera ``c2w_gl``: (position, look-at point, up direction).
    The look-at point is the point of the camera's axis nearest ``target`` (the orbit centre)."""
    pos = c2w_gl[:3, 3]
    forward = -c2w_gl[:3, 2] / np.linalg.norm(c2w_gl[:3, 2])  # OpenGL cameras look down -z
    dist = max(float(np.dot(np.asarray(target) - pos, forward)), 1e-3)
    return pos.copy(), pos + dist * forward, c2w_gl[:3, 1].copy()


def view_intrinsics(fov_y: float, width: int, height: int) -> Intrinsics:
    """A pinhole camera with vertical field of view ``fov_y`` (radians), square pixels and the
    principal point at the image centre."""
    f = height / (2.0 * math.tan(fov_y / 2.0))
    return Intrinsics(width, height, f, f, width / 2.0, height / 2.0)


def fit_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """(width, height) scaled down so that the long side is at most ``max_size`` (None or 0:
    unchanged), at least 1 pixel each."""
    width, height = max(1, int(width)), max(1, int(height))
    if max_size and max(width, height) > max_size:
        s = max_size / max(width, height)
        width, height = max(1, round(width * s)), max(1, round(height * s))
    return width, height


# ----------------------------------------------------------------------------------------------
# the avatar


@dataclass
class FrameSet:
    """Frames the timeline can step through: an expression and a capture pose each."""

    exps: list[np.ndarray]  # [E] each
    captures: list[np.ndarray]  # [4, 4] camera-to-head of the capture camera
    labels: list[str]

    def __len__(self) -> int:
        return len(self.exps)


def dataset_sets(info: DatasetInfo, driving: list[tuple[np.ndarray, np.ndarray]] | None = None,
                 driving_name: str = "driving") -> dict[str, FrameSet]:
    """The timeline's frame sets: the dataset's train and test frames and, with ``driving``
    ((c2w, exp) pairs of another dataset), its expressions with the dataset's capture poses
    (test frames', else train frames', cycled; as render.py --driving)."""
    def of(frames) -> FrameSet:
        return FrameSet([f.exp for f in frames], [f.c2w for f in frames],
                        [f"frame {f.index} (img_id {f.img_id})" for f in frames])

    sets = {"train": of(info.train_frames)}
    if info.test_frames:
        sets["test"] = of(info.test_frames)
    if driving:
        if len(driving[0][1]) != info.exp_dim:
            raise DatasetError(f"--driving {driving_name}: its expressions have "
                               f"{len(driving[0][1])} values but the model's have "
                               f"{info.exp_dim}. Fix: drive it with data tracked by the same "
                               "expression model (same exp_ori length).")
        poses = info.test_frames or info.train_frames
        sets["driving"] = FrameSet([e for _, e in driving],
                                   [poses[k % len(poses)].c2w for k in range(len(driving))],
                                   [f"driving frame {k}" for k in range(len(driving))])
    return sets


class LiveAvatar:
    """A model with the viewer's state (frame set and frame, expression coordinates and
    residual, capture pose, head only, background), rendered on demand. Thread-safe: every
    method takes the object's lock."""

    def __init__(self, model: GaussianHead, iteration: int, info: DatasetInfo,
                 backend: str, sets: dict[str, FrameSet],
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        self.model, self.iteration, self.info, self.backend = model, iteration, info, backend
        self.device = model.xyz.device
        self.deform = model.deforms_at(iteration)
        self.sets = sets
        named = info.expression
        self.space = slider_space(np.stack(sets["train"].exps), named.names, named.neutral)
        train_c2w = sets["train"].captures
        self.mean_camera = mean_pose(train_c2w)
        intr = info.intrinsics
        self.fov_y = 2.0 * math.atan(intr.height / (2.0 * intr.fy))
        self.lock = threading.RLock()
        self.background = tuple(float(c) for c in background)
        self.head_only = False
        self._cache: tuple[tuple, FrameGaussians] | None = None
        self.select("train", 0)

    @property
    def has_body(self) -> bool:
        return self.model.body is not None

    @property
    def orbit_centre(self) -> np.ndarray:
        """The head's centre (of its bounding sphere), where the camera orbits."""
        return self.model.center.detach().cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------ state
    def select(self, set_name: str, k: int) -> None:
        """Frame ``k`` of a set: its expression (exactly) and its capture pose."""
        with self.lock:
            frames = self.sets[set_name]
            k = int(k) % len(frames)
            self.set_name, self.frame = set_name, k
            exp = frames.exps[k]
            self.coeffs = self.space.project(exp)
            self.residual = self.space.residual(exp)
            self.capture = np.asarray(frames.captures[k], np.float64)

    def set_coefficient(self, i: int, value: float) -> None:
        with self.lock:
            self.coeffs = self.coeffs.copy()
            self.coeffs[i] = float(value)

    def neutral(self) -> None:
        """The neutral expression: the data's mean (PCA axes) or the neutral code (named)."""
        with self.lock:
            self.coeffs, self.residual = self.space.neutral_state()

    def randomize(self, rng: np.random.Generator) -> None:
        """A random plausible expression (the space's ``sample``, the rest neutral)."""
        with self.lock:
            self.coeffs = self.space.sample(rng)
            self.residual = self.space.neutral_state()[1]

    @property
    def expression(self) -> np.ndarray:
        with self.lock:
            return self.space.expression(self.coeffs, self.residual)

    # ------------------------------------------------------------------ Gaussians and images
    def camera(self, c2w_gl: np.ndarray, intr: Intrinsics) -> Camera:
        with self.lock:
            return Camera(intr=intr, c2w_gl=np.asarray(c2w_gl, np.float64),
                          exp=torch.from_numpy(self.expression), capture_c2w=self.capture)

    @torch.no_grad()
    def gaussians(self, camera: Camera) -> FrameGaussians:
        """The frame's Gaussians for ``camera`` (the last ones are reused while the expression,
        colour viewpoint, capture pose and head-only switch stay the same)."""
        with self.lock:
            campos = colour_viewpoint(self.model, camera, self.device)
            key = (camera.exp.numpy().tobytes(), tuple(campos.tolist()),
                   self.capture.tobytes(), self.head_only, self.deform)
            if self._cache is None or self._cache[0] != key:
                exp = camera.exp if self.deform else None
                g = frame_gaussians(self.model, exp, campos, camera.capture(self.device),
                                    body=not self.head_only)
                self._cache = (key, g)
            return self._cache[1]

    def num_gaussians(self) -> int:
        body = self.model.body.num_gaussians if self.has_body and not self.head_only else 0
        return self.model.num_gaussians + body

    @torch.no_grad()
    def render(self, c2w_gl: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, float]:
        """The view from ``c2w_gl`` (camera-to-head, OpenGL axes) with ``intr``: a uint8 image
        [H, W, 3] and the seconds it took."""
        with self.lock:
            start = time.perf_counter()
            cam = self.camera(c2w_gl, intr)
            g = self.gaussians(cam)
            bg = torch.tensor(self.background, dtype=torch.float32, device=self.device)
            out = render_view(self.model, g, cam, bg, self.backend)
            img = to_uint8(out.image.clamp(0, 1))
            return img, time.perf_counter() - start

    def snapshot_size(self, aspect: float) -> tuple[int, int]:
        """A snapshot's size: the dataset's long side, with the page's aspect ratio."""
        long = max(self.info.intrinsics.width, self.info.intrinsics.height)
        if aspect >= 1:
            return long, max(1, round(long / aspect))
        return max(1, round(long * aspect)), long

    def frame_arrays(self) -> GaussianArrays:
        """The current frame's Gaussians as shown (head only or with the body), coloured for
        the capture camera, with the SH bands the model renders."""
        with self.lock:
            cam = self.camera(self.capture, self.info.intrinsics)
            return GaussianArrays.from_frame(self.gaussians(cam), self.model.active_sh_degree)

    def export(self, folder: Path) -> tuple[Path, Path]:
        """Write the current frame's Gaussians as ``.ply`` and ``.splat`` into ``folder``."""
        with self.lock:
            g = self.frame_arrays()
            stem = f"{self.set_name}_{self.frame:05d}"
        base = next_free(folder, stem, (".ply", ".splat"))
        ply, splat = base.with_suffix(".ply"), base.with_suffix(".splat")
        write_ply(ply, g)
        write_splat(splat, g)
        return ply, splat

    def snapshot(self, folder: Path, c2w_gl: np.ndarray, fov_y: float, aspect: float) -> Path:
        """Render the view at :meth:`snapshot_size` and write it as a PNG into ``folder``."""
        w, h = self.snapshot_size(aspect)
        img, _ = self.render(c2w_gl, view_intrinsics(fov_y, w, h))
        path = next_free(folder, "snapshot", (".png",)).with_suffix(".png")
        write_png(path, img)
        return path


def next_free(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path:
    """``folder/<stem>_NNNN`` (no suffix) for the first NNNN with none of ``suffixes`` taken;
    creates ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while any((folder / f"{stem}_{n:04d}{s}").exists() for s in suffixes):
        n += 1
    return folder / f"{stem}_{n:04d}"
