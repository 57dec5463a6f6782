"""Shared test data of the preprocessing tests: a face-like point set seen by a moving
camera, a drawn head, neck and torso, and how far estimated rotations are off."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from preprocessing import masks

REPO = Path(__file__).resolve().parents[1]


def face_points(n: int = 60, seed: int = 0) -> np.ndarray:
    """A shallow face-like point set [n, 3] in the head frame (metres, z out of the face)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-1, 1, (n, 2)) * [0.07, 0.09]
    z = 0.09 - 4.0 * (xy[:, 0] ** 2 + 0.5 * xy[:, 1] ** 2)  # a bulging front
    return np.column_stack([xy, z])


def project(pts: np.ndarray, rot: np.ndarray, t: np.ndarray, k: np.ndarray) -> np.ndarray:
    cam = pts @ rot.T + t
    uv = cam @ k.T
    return uv[:, :2] / uv[:, 2:]


def head_poses(f: int, yaw_deg: float = 20.0, seed: int = 0):
    """Head -> OpenCV camera poses of a head turning in front of a camera 0.55 m away."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, f)
    yaw = np.radians(yaw_deg) * np.sin(t)
    pitch = np.radians(5) * np.sin(2.3 * t + rng.uniform(0, 6))
    flip = np.diag([1.0, -1.0, -1.0])  # head frame (y up, z out) -> OpenCV camera axes
    rots = np.stack([flip @ Rotation.from_euler("yx", [a, b]).as_matrix()
                     for a, b in zip(yaw, pitch)])
    trans = np.tile([0.0, 0.01, 0.55], (f, 1)) + 0.004 * rng.standard_normal((f, 3))
    return rots, trans


def figure(size: int = 128):
    """A drawn head, neck and torso with an oval of 'landmarks' on the face."""
    lab = np.zeros((size, size), np.uint8)
    cv2.ellipse(lab, (64, 112 + 40), (60, 45), 0, 0, 360, masks.LABEL_TORSO, -1)
    cv2.rectangle(lab, (52, 70), (76, 112), masks.LABEL_NECK, -1)
    cv2.ellipse(lab, (64, 48), (26, 32), 0, 0, 360, masks.LABEL_HEAD, -1)
    ang = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    oval = np.column_stack([64.5 + 21 * np.sin(ang), 52.5 - 27 * np.cos(ang)])
    points = np.vstack([oval, [[64.5, 25.5], [64.5, 79.5]]])  # + forehead, chin
    return lab, points, np.arange(36), 36, 37


def rotation_errors_deg(rot_est: np.ndarray, rot_true: np.ndarray) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Angles [F] (degrees) between estimated and true camera-to-head rotations [F, 3, 3]
    after the best fixed alignment of the two head frames, ``rot_est[f] ≈ A @ rot_true[f]``
    (least squares over all frames). Returns (angles, A)."""
    m = np.einsum("fij,fkj->ik", rot_est, rot_true)  # sum of R_est R_true^T
    u, _, vt = np.linalg.svd(m)
    a = u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt
    rel = np.einsum("fji,jk,fkl->fil", rot_est, a, rot_true)  # R_est^T A R_true
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)
    return np.degrees(np.arccos(cos)), a


def looking_down(pitch_deg: float, size: int = 128):
    """A head, neck and shoulders on a tight crop (the frame ends a little below the collar),
    the head pitched down by ``pitch_deg``: the face drops towards the collar and is
    foreshortened, the body stays where it is. Returns the person labels (H, W) uint8, the
    face outline [36, 2], the outer eye corners [2, 2] and lip points [4, 2] (pixels)."""
    p = np.radians(pitch_deg)
    drop, squash = 60.0 * np.sin(p), np.cos(p)  # about the neck, below and behind the face

    def place(uv):  # a frontal point -> pitched down
        uv = np.asarray(uv, float)
        return np.column_stack([uv[..., 0], 52.5 + (uv[..., 1] - 52.5) * squash + drop])

    lab = np.zeros((size, size), np.uint8)
    shoulders = np.array([[0, 92], [40, 88], [88, 88], [size, 92], [size, size], [0, size]])
    cv2.fillPoly(lab, [shoulders.astype(np.int32)], masks.LABEL_TORSO)
    cv2.rectangle(lab, (52, 70), (76, 100), masks.LABEL_NECK, -1)
    centre = place([[64.0, 48.0]])[0]
    cv2.ellipse(lab, (64, int(round(centre[1]))), (26, int(round(32 * squash))), 0, 0, 360,
                masks.LABEL_HEAD, -1)
    ang = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    oval = place(np.column_stack([64.5 + 21 * np.sin(ang), 52.5 - 27 * np.cos(ang)]))
    eyes = place([[50.0, 45.0], [79.0, 45.0]])
    mouth = place([[56.0, 65.0], [73.0, 65.0], [64.5, 62.0], [64.5, 68.0]])
    return lab, oval, eyes, mouth


SKIN_RGB, CLOTHING_RGB, BACKGROUND_RGB = (210, 160, 130), (40, 90, 110), (235, 235, 235)


def collar_crop(size: int = 128, beard: bool = False, seed: int = 0):
    """A frontal head on a body cropped a little below the collar: a sweater (a colour unlike
    the skin) fills the frame from side to side from just under the jaw, and the neck's skin
    shows between the chin and a round collar. Returns the true labels (H, W) uint8 (the neck:
    its visible skin), the frame RGB uint8 (H, W, 3), landmarks [38, 2] (the face outline
    [36], then forehead and chin), the outline's indices, forehead and chin. ``beard``: a dark
    beard under the chin (head)."""
    lab = np.zeros((size, size), np.uint8)
    cv2.rectangle(lab, (46, 70), (82, size), masks.LABEL_NECK, -1)
    sweater = np.array([[0, 86], [36, 80], [46, 80], [50, 96], [64, 100], [78, 96], [82, 80],
                        [92, 80], [size, 86], [size, size], [0, size]])
    cv2.fillPoly(lab, [sweater.astype(np.int32)], masks.LABEL_TORSO)
    cv2.ellipse(lab, (64, 48), (26, 32), 0, 0, 360, masks.LABEL_HEAD, -1)
    hair = np.zeros((size, size), np.uint8)
    if beard:  # over the chin and down to 8 px below it
        cv2.ellipse(hair, (64, 78), (13, 10), 0, 0, 180, 1, -1)
        lab[hair > 0] = masks.LABEL_HEAD
    img = np.where((lab == masks.LABEL_TORSO)[..., None], CLOTHING_RGB,
                   np.where((lab > 0)[..., None], SKIN_RGB, BACKGROUND_RGB)).astype(np.float64)
    img[lab == masks.LABEL_NECK] *= 0.8  # in the jaw's shadow
    img[hair > 0] = (60, 40, 30)
    img += np.random.default_rng(seed).normal(0, 4, img.shape)
    ang = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    oval = np.column_stack([64.5 + 21 * np.sin(ang), 52.5 - 27 * np.cos(ang)])
    points = np.vstack([oval, [[64.5, 25.5], [64.5, 79.5]]])
    return lab, np.clip(np.rint(img), 0, 255).astype(np.uint8), points, np.arange(36), 36, 37


@functools.cache
def mediapipe_problem() -> str | None:
    """Why MediaPipe cannot be imported (in a separate process: it needs protobuf < 5), or
    None where it can."""
    r = subprocess.run([sys.executable, "-c", "from preprocessing.landmarks import "
                        "import_mediapipe; import_mediapipe()"], cwd=REPO, capture_output=True,
                       text=True)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1]


def require_mediapipe() -> None:
    """Skip the calling test where MediaPipe is not installed."""
    problem = mediapipe_problem()
    if problem:
        pytest.skip(f"MediaPipe is not installed (bash tools/setup.sh installs it): {problem}")
