"""Deterministic synthetic talking-head dataset in the AD-NeRF / NeRFBlendShape layout.

A head-like figure (face with eyes, brows, nose, lips, ears and hair) on a neck and a torso is
ray-cast from analytic primitives (ellipsoids and a capsule) with Lambertian shading and 2x2
supersampling. The camera and torso are fixed in the world; the head moves smoothly (yaw about
+-18 degrees, a few degrees of pitch and roll, about 0.006 units of translation) and its
expression follows smooth control curves (jaw_open, smile, blink, brow_raise, pucker,
gaze_left, gaze_right), which are mixed into an ``exp_dim``-dimensional ``exp_ori`` vector by a
fixed, seed-dependent nonnegative matrix. The face is one MediaPipe's face mesh tracks in
every frame from about 128 px up, so ``--video`` output is ground truth for
tools/preprocess.py (tests/test_preprocess.py).

Novel views: the test expressions (every ``--novel_every``-th of the last ``--novel_last``
frames) are rendered again from cameras rotated by each of ``--novel_yaws`` degrees about the
head's vertical axis (the head frame's y axis through its origin). Only the camera moves: head
pose, expression, torso, light and background stay as in the source frame, so if the source
frame's camera-to-head matrix is T, the novel one is R_y(yaw) @ T.

Output layout (``OUT/``)::

    transforms.json          h, w, fx, fy, cx, cy, frames[{img_id, aud_id, transform_matrix,
                             exp_ori}]; transform_matrix is camera-to-head (OpenGL axes)
    ori_imgs/{i}.jpg         RGB frame
    mask/{i + offset}.png    soft person mask (uint8 grayscale)
    parsing/{i}.png          head (0,0,255), neck (0,255,0), torso (255,0,0), background white
    regions/{i}.png          uint8 bit flags of utils/regions.py: head, neck, torso (as in
                             parsing/), mouth (lips and the open mouth), eyes (the eye openings
                             and the lids that close over them)
    novel/                   the same layout for the novel views; its transforms.json frames
                             also hold source_img_id, yaw_deg and source_transform_matrix
    synthetic_gt.json        ground truth (controls, head poses, camera, mixing, novel views,
                             seed, version)
    video.mp4                only with --video

People and reenactment: ``--identity I`` draws the person (colours, and the face's shape: head
width, height and depth, jaw width, eye spacing, mouth width) from its own seed, apart from the
motion of ``--seed``; without it the colours come from ``--seed`` and the head has the base
shape of earlier versions. ``--driver_seed B`` renders the person performing seed B's
expressions and head motion, that motion about its mean pose put on the mean pose of
``--seed``'s own sequence of ``--pose_mean_frames`` frames: the ground truth of
``render.py --driving --driving_pose`` (bench/reenactment.py).

Usage::

    python tools/make_synthetic.py OUT --frames 30 --res 64 --seed 0 [--video]
        [--novel_yaws 15,-15,30,-30] [--novel_last 100] [--novel_every 4]
        [--identity I] [--driver_seed B --pose_mean_frames N]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import make_parser  # noqa: E402
from utils.io_utils import atomic_write_bytes, write_image  # noqa: E402
from utils.regions import REGION_BITS, encode_regions, parsing_image  # noqa: E402
from utils.retarget import mean_pose, retarget_poses  # noqa: E402

GENERATOR = "gaussianhead-open tools/make_synthetic.py"
VERSION = 1
FPS = 25
SS = 2  # supersampling factor per axis (anti-aliasing and soft mask edges)
FOCAL_SCALE = 1.45  # fx = fy = FOCAL_SCALE * res, about 38 degrees field of view
# The camera looks straight down -z; it sits slightly below the head centre so that the
# shoulders enter the bottom of the frame while the head stays near the middle.
CAMERA_EYE = (0.0, -0.04, 0.55)
CONTROL_NAMES = ("jaw_open", "smile", "blink", "brow_raise", "pucker", "gaze_left", "gaze_right")
LABEL_BG, LABEL_HEAD, LABEL_NECK, LABEL_TORSO = 0, 1, 2, 3
LABEL_NAMES = {LABEL_HEAD: "head", LABEL_NECK: "neck", LABEL_TORSO: "torso"}
MOUTH_BIT, EYES_BIT = REGION_BITS["mouth"], REGION_BITS["eyes"]
NOVEL_YAWS = (15.0, -15.0, 30.0, -30.0)  # degrees about the head's vertical axis
NOVEL_DIR = "novel"

LIGHT_DIR = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])
AMBIENT, DIFFUSE = 0.45, 0.6

# Head-frame geometry (units: the released data's, head radius about 0.1; face looks to +z).
CRANIUM_C, CRANIUM_R = (0.0, 0.005, 0.0), (0.085, 0.105, 0.095)
JAW_C, JAW_R = (0.0, -0.05, 0.004), (0.066, 0.058, 0.086)
JAW_DROP = 0.018  # how far the chin moves down at jaw_open = 1
HAIR_C, HAIR_SCALE = (0.0, 0.008, -0.007), (1.07, 1.06, 1.08)
NOSE_C, NOSE_R, NOSE_TILT = (0.0, -0.01, 0.088), (0.0075, 0.027, 0.015), math.radians(25)
NOSE_TIP_C, NOSE_TIP_R = (0.0, -0.031, 0.096), (0.0145, 0.0098, 0.012)
EAR_C, EAR_R = (0.082, -0.002, -0.008), (0.013, 0.027, 0.016)
NECK_TOP = (0.0, -0.06, -0.02)  # capsule end inside the head (head frame)
NECK_BOTTOM = (0.0, -0.24, -0.05)  # capsule end inside the torso (world frame)
NECK_RADIUS = 0.045
TORSO_C, TORSO_R = (0.0, -0.315, -0.05), (0.21, 0.155, 0.1)
HEAD_BOUND_RADIUS = 0.145  # sphere about the head-frame origin holding every head primitive
EYE_X, EYE_Y = 0.032, 0.016
MOUTH_Y = -0.052

# Face points in the head frame, for tests and landmark checks ("_img": as seen in the image).
FACE_POINTS = {
    "head_centre": (0.0, 0.0, 0.0),
    "eye_right_img": (EYE_X, EYE_Y, 0.089),
    "eye_left_img": (-EYE_X, EYE_Y, 0.089),
    "nose_tip": (0.0, -0.031, 0.108),
    "mouth": (0.0, MOUTH_Y, 0.087),
}


@dataclass(frozen=True)
class Appearance:
    """Seed-dependent colours (RGB floats in [0, 1]) and background texture parameters."""

    skin: np.ndarray
    lips: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    shirt: np.ndarray
    bg_top: np.ndarray
    bg_bottom: np.ndarray
    bg_waves: np.ndarray  # (K, 4): amplitude, frequency x, frequency y, phase


@dataclass(frozen=True)
class Identity:
    """The face's shape: the head's scale along its x (width), y (height) and z (depth) axes
    (every head part and facial feature with it), the jaw's width and the eyes' spacing and
    the mouth's width relative to the face. :data:`BASE_IDENTITY` is the head of earlier
    versions; :func:`make_identity` draws others."""

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    jaw_width: float = 1.0
    eye_spacing: float = 1.0
    mouth_width: float = 1.0


BASE_IDENTITY = Identity()


def make_identity(seed: int) -> Identity:
    """A face shape drawn from ``seed`` (its own random stream): width 0.88-1.12, height
    0.9-1.1, depth 0.94-1.06 of the base head; jaw width 0.85-1.15; eye spacing 0.9-1.1;
    mouth width 0.85-1.15."""
    rng = _rng(seed, 4)
    scale = (rng.uniform(0.88, 1.12), rng.uniform(0.9, 1.1), rng.uniform(0.94, 1.06))
    return Identity(scale=tuple(float(v) for v in scale), jaw_width=float(rng.uniform(0.85, 1.15)),
                    eye_spacing=float(rng.uniform(0.9, 1.1)),
                    mouth_width=float(rng.uniform(0.85, 1.15)))


@dataclass(frozen=True)
class SyntheticWorld:
    """Everything fixed for one camera: intrinsics, camera, ray directions and the static layer.

    Arrays at supersampled resolution S = res * SS: ``rays`` (3, S, S) float32 unit world
    directions, ``static_rgb`` (S, S, 3) float32, ``static_t`` (S, S) float32 ray depth (inf
    where background), ``static_label`` (S, S) uint8.
    """

    res: int
    fx: float
    fy: float
    cx: float
    cy: float
    cam_c2w: np.ndarray  # (4, 4) float64, OpenGL axes
    appearance: Appearance
    rays: np.ndarray
    static_rgb: np.ndarray
    static_t: np.ndarray
    static_label: np.ndarray
    identity: Identity = BASE_IDENTITY


class Frame(NamedTuple):
    """One rendered frame; every array uint8, (res, res) or (res, res, 3)."""

    rgb: np.ndarray
    mask: np.ndarray  # soft person mask 0..255
    label: np.ndarray  # LABEL_BG / LABEL_HEAD / LABEL_NECK / LABEL_TORSO
    regions: np.ndarray  # bit flags of utils.regions.REGION_BITS


# ----------------------------------------------------------------------------- small math


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent random stream per purpose (0 appearance, 1 mixing, 2 motion, 3 blinks)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def rotation_ypr(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) rotation Ry(yaw) @ Rx(pitch) @ Rz(roll), angles in radians."""
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def _apply(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """m (3, 3) applied to the columns of v (3, N) -> (3, N).

    Written out elementwise rather than through BLAS so that results cannot depend on how BLAS
    splits the work over threads (the output must not depend on the worker count).
    """
    m = m.astype(v.dtype)
    return np.stack([m[i, 0] * v[0] + m[i, 1] * v[1] + m[i, 2] * v[2] for i in range(3)])


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise dot product (N,) of a (3, N) with b (3, N) or with a (3,) vector."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _normalize(v: np.ndarray) -> np.ndarray:
    """Columns of v (3, N) scaled to unit length."""
    return v / np.sqrt(_dot(v, v))


def _quad_terms(d: np.ndarray) -> np.ndarray:
    """Products (6, N) dx dx, dy dy, dz dz, dx dy, dx dz, dy dz of directions d (3, N).

    Shared by every ellipsoid tested against the same rays.
    """
    return np.stack([d[0] * d[0], d[1] * d[1], d[2] * d[2], d[0] * d[1], d[0] * d[2], d[1] * d[2]])


@dataclass(frozen=True)
class _Ellipsoid:
    """Ellipsoid {p : (p - c)^T Q (p - c) = 1}, Q = R diag(1 / radii^2) R^T."""

    c: np.ndarray  # (3,)
    q: np.ndarray  # (3, 3)

    @staticmethod
    def make(c, radii, rot=None) -> _Ellipsoid:
        rot = np.eye(3) if rot is None else rot
        return _Ellipsoid(
            np.asarray(c, float), rot @ np.diag(np.asarray(radii, float) ** -2.0) @ rot.T
        )

    def intersect(self, o: np.ndarray, d: np.ndarray, dd: np.ndarray):
        """Entry and exit depths (N,) of rays o (3,) + t d (3, N); inf where missed.

        dd: _quad_terms(d).
        """
        q, oc = self.q, o - self.c
        coef = np.array([q[0, 0], q[1, 1], q[2, 2], 2 * q[0, 1], 2 * q[0, 2], 2 * q[1, 2]])
        coef = coef.astype(d.dtype)
        qa = (
            coef[0] * dd[0]
            + coef[1] * dd[1]
            + coef[2] * dd[2]
            + coef[3] * dd[3]
            + coef[4] * dd[4]
            + coef[5] * dd[5]
        )
        qb = _dot(d, (q @ oc).astype(d.dtype))
        disc = qb * qb - qa * float(oc @ q @ oc - 1.0)
        hit = disc > 0
        sq = np.sqrt(np.where(hit, disc, 0))
        t0 = np.where(hit, (-qb - sq) / qa, np.inf)
        t1 = np.where(hit, (-qb + sq) / qa, np.inf)
        return t0, t1

    def field(self, p: np.ndarray) -> np.ndarray:
        """Implicit value (N,) at points p (3, N): 0 on the surface, negative inside."""
        pc = p - self.c.astype(p.dtype)[:, None]
        return _dot(pc, _apply(self.q, pc)) - 1

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Outward unit normals (3, N) at surface points p (3, N)."""
        return _normalize(_apply(self.q, p - self.c.astype(p.dtype)[:, None]))


def _capsule_intersect(o: np.ndarray, d: np.ndarray, a: np.ndarray, b: np.ndarray, r: float):
    """First hit depth (N,) of unit rays o (3,) + t d (3, N) with the capsule a-b of radius r."""
    ba, oa, ob = b - a, o - a, o - b
    baba, baoa, oaoa = float(ba @ ba), float(ba @ oa), float(oa @ oa)
    bard = _dot(d, ba.astype(d.dtype))
    rdoa = _dot(d, oa.astype(d.dtype))
    qa = baba - bard * bard
    qb = baba * rdoa - baoa * bard
    qc = baba * oaoa - baoa * baoa - r * r * baba
    h = qb * qb - qa * qc
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-qb - np.sqrt(np.where(h >= 0, h, 0))) / qa
    y = baoa + t_side * bard
    t = np.where((h >= 0) & (y > 0) & (y < baba), t_side, np.inf)
    # Rays that miss the cylinder body may still hit one of the two end caps.
    low = y <= 0
    cb = np.where(low, rdoa, _dot(d, ob.astype(d.dtype)))
    hc = cb * cb - np.where(low, oaoa - r * r, float(ob @ ob) - r * r)
    t_cap = np.where(hc > 0, -cb - np.sqrt(np.where(hc > 0, hc, 0)), np.inf)
    return np.where(np.isfinite(t), t, t_cap)


def _capsule_normal(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Outward unit normals (3, N) at points p (3, N) on the capsule a-b."""
    ba = (b - a).astype(p.dtype)
    pa = p - a.astype(p.dtype)[:, None]
    h = np.clip(_dot(pa, ba) / float(ba @ ba), 0, 1)
    return _normalize(pa - h * ba[:, None])


_CRANIUM = _Ellipsoid.make(CRANIUM_C, CRANIUM_R)
_HAIR = _Ellipsoid.make(HAIR_C, np.multiply(CRANIUM_R, HAIR_SCALE))
# The nose bridge leans back at the top; a wider ellipsoid forms the tip and the wings.
_NOSE = _Ellipsoid.make(NOSE_C, NOSE_R, rotation_ypr(0.0, -NOSE_TILT, 0.0))
_NOSE_TIP = _Ellipsoid.make(NOSE_TIP_C, NOSE_TIP_R)
_EARS = [_Ellipsoid.make((s * EAR_C[0], EAR_C[1], EAR_C[2]), EAR_R) for s in (1, -1)]
_TORSO = _Ellipsoid.make(TORSO_C, TORSO_R)
# Every head primitive (at any jaw_open) lies inside this ellipsoid; rays that miss it skip
# the per-primitive tests.
_HEAD_BOUND = _Ellipsoid.make((0.0, -0.004, 0.004), (0.11, 0.135, 0.12))


def _shade(albedo: np.ndarray, n_world: np.ndarray) -> np.ndarray:
    """Lambert + ambient colour (N, 3) from albedo (N, 3) and world normals (3, N)."""
    lam = np.maximum(_dot(n_world, LIGHT_DIR.astype(n_world.dtype)), 0)
    return albedo * (AMBIENT + DIFFUSE * lam)[:, None]


# ----------------------------------------------------------------------------- appearance


def _make_appearance(rng: np.random.Generator) -> Appearance:
    """Draw colours for skin, lips, hair, eyes, shirt and the background gradient."""
    light, dark = np.array([1.0, 0.84, 0.73]), np.array([0.5, 0.33, 0.23])
    skin = light + rng.uniform(0.0, 0.85) * (dark - light)
    lips = skin * np.array([0.92, 0.62, 0.62])
    hairs = np.array([[0.07, 0.055, 0.05], [0.28, 0.17, 0.09], [0.55, 0.38, 0.2], [0.8, 0.66, 0.4]])
    hair = hairs[rng.integers(len(hairs))] * rng.uniform(0.9, 1.1)
    irises = np.array([[0.33, 0.2, 0.1], [0.25, 0.42, 0.6], [0.3, 0.42, 0.25]])
    iris = irises[rng.integers(len(irises))]
    hue = rng.uniform(0, 180)
    hsv = np.array([[[hue, rng.uniform(90, 200), rng.uniform(90, 200)]]], np.uint8)
    shirt = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    # Cool, muted background colours keep the skin and hair distinct from it.
    base = np.array([0.55, 0.62, 0.7]) + rng.uniform(-0.12, 0.12, 3)
    bg_top = np.clip(base * rng.uniform(1.0, 1.2), 0, 1)
    bg_bottom = np.clip(base * rng.uniform(0.7, 0.9), 0, 1)
    k = 5
    waves = np.stack(
        [
            rng.uniform(0.01, 0.025, k),
            rng.uniform(-6, 6, k),
            rng.uniform(-6, 6, k),
            rng.uniform(0, 2 * np.pi, k),
        ],
        axis=1,
    )
    return Appearance(
        skin=np.clip(skin, 0, 1),
        lips=np.clip(lips, 0, 1),
        hair=np.clip(hair, 0, 1),
        iris=iris,
        shirt=shirt,
        bg_top=bg_top,
        bg_bottom=bg_bottom,
        bg_waves=waves,
    )


def _background(app: Appearance, d: np.ndarray) -> np.ndarray:
    """Background colour (N, 3) for world ray directions d (3, N): gradient plus soft waves."""
    v = np.clip(0.5 + 1.8 * d[1], 0, 1)[:, None]
    col = app.bg_bottom + v * (app.bg_top - app.bg_bottom)
    tex = np.zeros(d.shape[1])
    for amp, fx, fy, ph in app.bg_waves:
        tex += amp * np.sin(fx * d[0] + fy * d[1] + ph)
    return np.clip(col + tex[:, None], 0, 1)


# ----------------------------------------------------------------------------- world set-up


def _camera_c2w() -> np.ndarray:
    """(4, 4) fixed world camera-to-world, OpenGL axes (looks down -z)."""
    c2w = np.eye(4)
    c2w[:3, 3] = CAMERA_EYE
    return c2w


def build_world(res: int, seed: int, principal_offset: Sequence[float] = (0.0, 0.0),
                identity: int | None = None) -> SyntheticWorld:
    """Set up intrinsics, rays and the static layer (background, torso) for one dataset.

    The person's colours come from ``seed``, and the face has the base shape, unless
    ``identity`` is given: then colours and face shape (:func:`make_identity`) both come from
    it (the same identity with any ``seed``'s motion is the same person)."""
    fx = FOCAL_SCALE * res
    intr = (fx, fx, res / 2 + float(principal_offset[0]), res / 2 + float(principal_offset[1]))
    if identity is None:
        return _look(res, intr, _make_appearance(_rng(seed, 0)), _camera_c2w())
    return _look(res, intr, _make_appearance(_rng(identity, 0)), _camera_c2w(),
                 make_identity(identity))


def with_camera(world: SyntheticWorld, cam_c2w: np.ndarray) -> SyntheticWorld:
    """The same world (appearance, intrinsics) seen from another camera-to-world (4, 4)."""
    intr = (world.fx, world.fy, world.cx, world.cy)
    return _look(world.res, intr, world.appearance, np.asarray(cam_c2w, float), world.identity)


def _look(res: int, intr: tuple[float, float, float, float], app: Appearance,
          cam: np.ndarray, identity: Identity = BASE_IDENTITY) -> SyntheticWorld:
    """Rays and static layer of the camera cam (4, 4) camera-to-world, OpenGL axes."""
    fx, fy, cx, cy = intr
    s = res * SS
    # Sub-sample centres: pixel (i, j) covers [j, j + 1) x [i, i + 1) in image coordinates.
    coords = (np.arange(s, dtype=np.float64) + 0.5) / SS
    u, v = np.meshgrid(coords, coords)
    # OpenCV direction (x right, y down, z forward) -> OpenGL camera axes -> world.
    d_cam = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)]).reshape(3, -1)
    rays = _normalize(_apply(cam[:3, :3], d_cam))
    o = cam[:3, 3]
    t_torso, _ = _TORSO.intersect(o, rays, _quad_terms(rays))
    hit = np.isfinite(t_torso)
    col = _background(app, rays)
    p = o[:, None] + t_torso[hit] * rays[:, hit]
    col[hit] = _shade(np.broadcast_to(app.shirt, (int(hit.sum()), 3)), _TORSO.normal(p))
    label = np.where(hit, LABEL_TORSO, LABEL_BG).astype(np.uint8)
    return SyntheticWorld(
        res=res,
        fx=fx,
        fy=fy,
        cx=cx,
        cy=cy,
        cam_c2w=cam,
        appearance=app,
        rays=rays.reshape(3, s, s).astype(np.float32),
        static_rgb=col.reshape(s, s, 3).astype(np.float32),
        static_t=t_torso.reshape(s, s).astype(np.float32),
        static_label=label.reshape(s, s),
        identity=identity,
    )


def orbit_camera(c2h: np.ndarray, head_pose: np.ndarray, yaw_deg: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A camera rotated by yaw_deg about the head's y axis through the head-frame origin.

    c2h: (4, 4) the source camera-to-head T (OpenGL axes); head_pose: (4, 4) head-to-world.
    Returns the novel camera-to-head R_y(yaw) @ T and camera-to-world head_pose @ R_y(yaw) @ T.
    """
    ry = np.eye(4)
    ry[:3, :3] = rotation_ypr(math.radians(yaw_deg), 0.0, 0.0)
    novel = ry @ c2h
    return novel, head_pose @ novel


def project(world: SyntheticWorld, head_pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N, 2) (u right, v down) of head-frame points (N, 3)."""
    pts = np.asarray(points, float).reshape(-1, 3)
    pts_w = pts @ head_pose[:3, :3].T + head_pose[:3, 3]
    cam = (pts_w - world.cam_c2w[:3, 3]) @ world.cam_c2w[:3, :3]
    x, y, z = cam[:, 0], -cam[:, 1], -cam[:, 2]
    return np.stack([world.fx * x / z + world.cx, world.fy * y / z + world.cy], axis=1)


def _sphere_box(world: SyntheticWorld, centre_world: np.ndarray, r: float) -> tuple[float, ...]:
    """Conservative image rectangle (u0, v0, u1, v1) of a world sphere."""
    c = (centre_world - world.cam_c2w[:3, 3]) @ world.cam_c2w[:3, :3]
    x, y, z = c[0], -c[1], -c[2]
    us = [world.fx * (x + sx) / (z + sz) + world.cx for sx in (-r, r) for sz in (-r, r)]
    vs = [world.fy * (y + sy) / (z + sz) + world.cy for sy in (-r, r) for sz in (-r, r)]
    return min(us), min(vs), max(us), max(vs)


# ----------------------------------------------------------------------------- face texture


def _controls_array(controls: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    """Controls as a (len(CONTROL_NAMES),) float array; a mapping may omit names (0)."""
    if isinstance(controls, Mapping):
        unknown = set(controls) - set(CONTROL_NAMES)
        if unknown:
            raise ValueError(f"unknown controls {sorted(unknown)}; known: {CONTROL_NAMES}")
        return np.array([float(controls.get(n, 0.0)) for n in CONTROL_NAMES])
    arr = np.asarray(controls, float).reshape(-1)
    if arr.shape != (len(CONTROL_NAMES),):
        raise ValueError(f"expected {len(CONTROL_NAMES)} controls, got {arr.shape}")
    return arr


def _paint(col: np.ndarray, where: np.ndarray, rgb) -> None:
    """Set rows of col (N, 3) selected by the boolean ``where`` (N,) to the colour rgb."""
    col[where] = np.asarray(rgb, col.dtype)


def _skin_albedo(p: np.ndarray, ctl: np.ndarray, app: Appearance,
                 ident: Identity = BASE_IDENTITY) -> tuple[np.ndarray, np.ndarray]:
    """Albedo (N, 3) of skin points p (3, N, head frame) with eyes, brows, nose and lips, and
    their region flags (N,) uint8: MOUTH_BIT on the lips and in the open mouth, EYES_BIT where
    a blink can change the colour (the open eye and its lid)."""
    jaw, smile, blink, brow, pucker, gaze_l, gaze_r = (float(c) for c in ctl)
    x, y, z = p
    eye_x = EYE_X * ident.eye_spacing
    n = p.shape[1]
    flags = np.zeros(n, np.uint8)
    col = np.empty((n, 3), np.float32)
    col[:] = app.skin
    front = z > 0.03

    def blob(cx, cy, sx, sy):
        return np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)

    shade = np.ones(n, np.float32)
    blush = np.zeros(n, np.float32)
    for s in (-1, 1):
        shade -= 0.13 * blob(s * eye_x, EYE_Y + 0.002, 0.022, 0.013)  # eye sockets
        blush += blob(s * 0.047, -0.025, 0.017, 0.014)
        # Nasolabial folds deepen with a smile.
        dist = (x - s * 0.017) - s * 0.45 * (-0.033 - y)
        along = np.exp(-(((y + 0.046) / 0.012) ** 4))
        shade -= 0.2 * smile * along * np.exp(-((dist / 0.0025) ** 2)) * front
    shade -= 0.12 * blob(0.0, MOUTH_Y - 0.025, 0.016, 0.008)  # shadow under the lower lip
    col *= shade[:, None]
    col *= 1 - blush[:, None] * np.array([0.0, 0.1, 0.08], np.float32)

    # Eyebrows: arcs that rise with brow_raise.
    for s in (-1, 1):
        u = (x - s * 0.035) / 0.021
        yc = 0.037 + 0.011 * brow + 0.0045 * (1 - u * u) - 0.0015 * s * u
        thick = 0.0034 * (1 - 0.55 * u * u) + 0.0008
        _paint(col, front & (np.abs(u) < 1) & (np.abs(y - yc) < thick), app.hair * 0.75)

    # Eyes: almond openings whose upper lid closes down onto the lower lid with blink.
    for s in (-1, 1):
        ex = s * eye_x
        u = (x - ex) / 0.0155
        arc = np.clip(1 - u * u, 0, None)
        lower = EYE_Y - 0.0032 * arc
        upper = lower + 0.0105 * arc * (1 - blink)
        inside = front & (np.abs(u) < 1) & (y > lower) & (y < upper)
        lid = front & (np.abs(u) < 1.12) & (y >= upper - 0.0002) & (y < upper + 0.0016)
        crease = front & (np.abs(u) < 0.9) & (np.abs(y - (EYE_Y + 0.0105 * arc + 0.001)) < 0.0009)
        # Every point the opening or the lid covers at some blink value.
        open_top = lower + 0.0105 * arc
        eye = front & (np.abs(u) < 1.12) & (y >= lower - 0.0002) & (y < open_top + 0.0016)
        flags[eye] |= EYES_BIT
        col[crease] *= 0.82
        _paint(col, inside, (0.93, 0.92, 0.9))
        ix = ex + 0.0065 * (gaze_r - gaze_l)
        r2 = (x - ix) ** 2 + (y - (EYE_Y + 0.0018)) ** 2
        _paint(col, inside & (r2 < 0.0064**2), app.iris * 0.6)
        _paint(col, inside & (r2 < 0.0053**2), app.iris)
        _paint(col, inside & (r2 < 0.0024**2), (0.03, 0.03, 0.03))
        glint = (x - ix - 0.0018) ** 2 + (y - EYE_Y - 0.0038) ** 2 < 0.0009**2
        _paint(col, inside & glint, (1.0, 1.0, 1.0))
        _paint(col, lid, (0.12, 0.08, 0.07))

    # Nostrils, on the underside of the nose.
    for s in (-1, 1):
        nostril = ((x - s * 0.0072) / 0.0036) ** 2 + ((y + 0.0385) / 0.0019) ** 2 < 1
        _paint(col, nostril & (z > 0.08), (0.2, 0.1, 0.08))

    # Mouth: the upper lip stays, the lower lip follows the jaw; the gap shows a dark interior
    # with the upper teeth.
    half_w = 0.0235 * ident.mouth_width * (1 + 0.22 * smile - 0.32 * pucker)
    u = x / half_w
    arc = np.sqrt(np.clip(1 - u * u, 0, None))
    centre = MOUTH_Y + 0.0065 * smile * u * u
    top = centre + (0.0008 + 0.004 * jaw) * arc
    bottom = centre - (0.0008 + JAW_DROP * jaw) * arc
    bow = 0.0012 * np.exp(-((x / 0.005) ** 2))  # Cupid's bow dip in the upper lip
    lip_up = top + (0.0048 + 0.0015 * pucker) * arc - bow
    lip_lo = bottom - (0.006 + 0.002 * pucker) * arc
    in_mouth = front & (np.abs(u) < 1)
    mouth = in_mouth & (y > lip_lo) & (y < lip_up)
    flags[mouth] |= MOUTH_BIT
    _paint(col, mouth, app.lips)
    interior = in_mouth & (y > bottom) & (y < top)
    _paint(col, interior, (0.16, 0.05, 0.05))
    teeth = interior & (y > top - 0.0035) & (np.abs(u) < 0.65)
    _paint(col, teeth, (0.9, 0.88, 0.8))
    return col, flags


def _hair_present(p: np.ndarray) -> np.ndarray:
    """(N,) whether hair covers the hair-shell points p (3, N, head frame)."""
    x, y, z = p
    hairline = 0.058 - 0.04 * (x / 0.09) ** 2 - 0.012 * np.exp(-((x / 0.012) ** 2))
    back = np.clip((0.0 - z) / 0.04, 0, 1)  # towards the back the hair reaches the nape
    return y > hairline * (1 - back) + (-0.075) * back


def _hair_albedo(p: np.ndarray, app: Appearance) -> np.ndarray:
    """Hair albedo (N, 3) at points p (3, N) with faint strands running from the crown."""
    ang = np.arctan2(p[0], p[1] + 0.02)
    strands = 0.9 + 0.1 * np.sin(70 * ang) * np.sin(23 * ang + 1.0)
    return (app.hair * strands[:, None]).astype(np.float32)


# ----------------------------------------------------------------------------- rendering


def render_frame(
    world: SyntheticWorld,
    controls: Mapping[str, float] | Sequence[float] | np.ndarray,
    head_pose: np.ndarray,
) -> Frame:
    """Ray-cast one frame.

    Args:
        world: from :func:`build_world` or :func:`with_camera`.
        controls: mapping name -> value in [0, 1] (missing names are 0) or an array ordered as
            CONTROL_NAMES.
        head_pose: (4, 4) head-to-world.

    Returns:
        The image, soft person mask, parsing labels and region flags. A pixel is labelled head,
        neck or torso when most of it is covered by that part; it is in the mouth or eyes
        region when any of its sub-samples is.
    """
    ctl = _controls_array(controls)
    pose = np.asarray(head_pose, float)
    s = world.res * SS
    neck_a = np.asarray(NECK_BOTTOM, float)
    scale = np.asarray(world.identity.scale, float)
    neck_b = pose[:3, :3] @ (scale * NECK_TOP) + pose[:3, 3]
    # Only rays inside the projected bounds of the head and neck can hit a moving primitive.
    boxes = np.array(
        [
            _sphere_box(world, pose[:3, 3], HEAD_BOUND_RADIUS * float(scale.max())),
            _sphere_box(world, neck_a, NECK_RADIUS),
            _sphere_box(world, neck_b, NECK_RADIUS),
        ]
    )
    x0, y0 = (max(int(math.floor(v * SS)) - 2, 0) for v in boxes[:, :2].min(0))
    x1, y1 = (min(int(math.ceil(v * SS)) + 2, s) for v in boxes[:, 2:].max(0))

    rgb = world.static_rgb.copy()
    label = world.static_label.copy()
    flags = np.zeros_like(label)
    if x1 > x0 and y1 > y0:
        d = world.rays[:, y0:y1, x0:x1].reshape(3, -1)
        t_static = world.static_t[y0:y1, x0:x1].reshape(-1)
        idx, col, lab, flg = _render_dynamic(world, ctl, pose, neck_a, neck_b, d, t_static)
        # Scatter the shaded rays back into the supersampled frame.
        rows, cols = np.divmod(idx, x1 - x0)
        rgb[rows + y0, cols + x0] = col
        label[rows + y0, cols + x0] = lab
        flags[rows + y0, cols + x0] = flg

    # Box-filter the SS x SS sub-samples of each pixel (strided sums are much faster than a
    # reshape-and-mean).
    subs = [(a, b) for a in range(SS) for b in range(SS)]
    rgb_sum = sum(rgb[a::SS, b::SS] for a, b in subs)
    rgb8 = np.round(np.clip(rgb_sum * (255.0 / len(subs)), 0, 255)).astype(np.uint8)
    counts = [sum((label[a::SS, b::SS] == k).astype(np.uint8) for a, b in subs) for k in range(4)]
    person = len(subs) - counts[LABEL_BG]
    mask = np.round(person * (255.0 / len(subs))).astype(np.uint8)
    # A pixel gets a body label only when most of it is covered (so labelled pixels have
    # mask > 127); ties between body parts go to the head, then the neck.
    parts = np.argmax(np.stack(counts[1:]), axis=0).astype(np.uint8) + 1
    out_label = np.where(2 * person > len(subs), parts, LABEL_BG).astype(np.uint8)
    any_flags = flags[0::SS, 0::SS].copy()
    for a, b in subs[1:]:
        any_flags |= flags[a::SS, b::SS]
    masks = {name: out_label == k for k, name in LABEL_NAMES.items()}
    masks["mouth"] = (any_flags & MOUTH_BIT) != 0
    masks["eyes"] = (any_flags & EYES_BIT) != 0
    return Frame(rgb8, mask, out_label, encode_regions(masks))


def _render_dynamic(world, ctl, pose, neck_a, neck_b, d, t_static):
    """Shade the head and neck for world rays d (3, N) from the camera.

    Returns the indices (M,) of the rays where a head or neck surface lies in front of the
    static layer (ray depths t_static (N,)), their colours (M, 3), labels (M,) and region
    flags (M,) (MOUTH_BIT, EYES_BIT).
    """
    app = world.appearance
    f32 = np.float32
    o = world.cam_c2w[:3, 3]
    rot, trans = pose[:3, :3], pose[:3, 3]
    t_near = np.minimum(t_static, _capsule_intersect(o, d, neck_a, neck_b, NECK_RADIUS))
    is_neck = np.isfinite(t_near) & (t_near < t_static)

    # Head primitives are intersected in the head frame, and only for rays that enter the
    # head's bounding ellipsoid before anything nearer. The identity's scale S is undone
    # first (points p of the base head are S p here): rays o + t d become S^-1 o + t S^-1 d,
    # with the same depths t.
    ident = world.identity
    inv_scale = 1.0 / np.asarray(ident.scale, float)
    o_h = inv_scale * (rot.T @ (o - trans))
    d_h = _apply(np.diag(inv_scale) @ rot.T, d)
    t_bound, _ = _HEAD_BOUND.intersect(o_h, d_h, _quad_terms(d_h))
    cand = np.flatnonzero(t_bound < t_near)
    dc = d_h[:, cand]
    dd = _quad_terms(dc)
    jaw_open = float(ctl[CONTROL_NAMES.index("jaw_open")])
    jaw = _Ellipsoid.make((JAW_C[0], JAW_C[1] - JAW_DROP * jaw_open, JAW_C[2]),
                          (JAW_R[0] * ident.jaw_width, JAW_R[1], JAW_R[2]))
    skin_prims = [_CRANIUM, jaw, _NOSE, _NOSE_TIP, *_EARS]
    t_head = np.full(len(cand), np.inf, f32)
    which = np.full(len(cand), -1, np.int8)
    for k, prim in enumerate(skin_prims):
        t0, _ = prim.intersect(o_h, dc, dd)
        nearer = t0 < t_head
        t_head = np.where(nearer, t0, t_head)
        which[nearer] = k
    # The hair shell is cut open for the face; through the opening the inside of the shell
    # (hair at the back of the head) can be visible.
    h0, h1 = _HAIR.intersect(o_h, dc, dd)
    ok0, ok1 = np.zeros(len(cand), bool), np.zeros(len(cand), bool)
    for ok, th in ((ok0, h0), (ok1, h1)):
        fin = np.flatnonzero(th < t_head)
        ok[fin] = _hair_present(o_h[:, None].astype(f32) + th[fin] * dc[:, fin])
    t_hair = np.where(ok0, h0, np.where(ok1, h1, np.inf))
    hair_hit = t_hair < t_head
    t_head = np.where(hair_hit, t_hair, t_head)
    which[hair_hit] = len(skin_prims)
    head_front = t_head < t_near[cand]
    is_neck[cand[head_front]] = False

    idx_head = cand[head_front]
    which, t_head = which[head_front], t_head[head_front]
    inner = ~ok0[head_front]
    p_h = o_h[:, None].astype(f32) + t_head * dc[:, head_front]
    col_head = np.zeros((len(idx_head), 3), f32)
    flags = np.zeros(len(idx_head), np.uint8)
    normals = np.zeros((3, len(idx_head)), f32)
    for k, prim in enumerate(skin_prims):
        sel = which == k
        normals[:, sel] = prim.normal(p_h[:, sel])
    # Blend cranium and jaw normals near their crease so that the union shades like one smooth
    # surface instead of showing a ring around the lower face.
    face = which <= 1
    pf = p_h[:, face]
    w_c = np.exp(-((_CRANIUM.field(pf) / 0.6) ** 2))
    w_j = np.exp(-((jaw.field(pf) / 0.6) ** 2))
    normals[:, face] = _normalize(w_c * _CRANIUM.normal(pf) + w_j * jaw.normal(pf))
    skin = which < len(skin_prims)
    col_head[skin], flags[skin] = _skin_albedo(p_h[:, skin], ctl, app, ident)
    hair = ~skin
    normals[:, hair] = _HAIR.normal(p_h[:, hair]) * np.where(inner[hair], -1, 1).astype(f32)
    col_head[hair] = _hair_albedo(p_h[:, hair], app)
    if ident.scale != BASE_IDENTITY.scale:
        # normals of the scaled head: the base head's times S^-1 (S's inverse transpose)
        normals = _normalize(_apply(np.diag(inv_scale), normals))
    col_head = _shade(col_head, _apply(rot, normals))

    idx_neck = np.flatnonzero(is_neck)
    p_w = o[:, None].astype(f32) + t_near[idx_neck] * d[:, idx_neck]
    # The jaw shadows the top of the neck.
    height = np.clip((p_w[1] - neck_a[1]) / (neck_b[1] - neck_a[1]), 0, 1)
    albedo = np.asarray(app.skin, f32) * (0.92 - 0.25 * height**2)[:, None]
    col_neck = _shade(albedo, _capsule_normal(p_w, neck_a, neck_b))

    idx = np.concatenate([idx_head, idx_neck])
    lab = np.concatenate(
        [np.full(len(idx_head), LABEL_HEAD, np.uint8), np.full(len(idx_neck), LABEL_NECK, np.uint8)]
    )
    flags = np.concatenate([flags, np.zeros(len(idx_neck), np.uint8)])
    return idx, np.concatenate([col_head, col_neck]), lab, flags


# ----------------------------------------------------------------------------- trajectories


def _smooth(rng: np.random.Generator, t: np.ndarray, fmin: float, fmax: float, k: int = 4):
    """Smooth signal (F,) in [-1, 1]: normalised sum of k random sinusoids."""
    f = rng.uniform(fmin, fmax, k)
    ph = rng.uniform(0, 2 * np.pi, k)
    amp = rng.uniform(0.3, 1.0, k)
    return (amp[:, None] * np.sin(2 * np.pi * f[:, None] * t + ph[:, None])).sum(0) / amp.sum()


def _blinks(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Blink curve (F,) in [0, 1]: short raised-cosine events every 1.5-4 s."""
    out = np.zeros_like(t)
    half = 0.1  # seconds from open to closed
    te = rng.uniform(0.2, 1.0)
    end = float(t[-1]) + half if len(t) else 0.0
    while te < end:
        u = np.abs(t - te) / half
        out = np.maximum(out, np.where(u < 1, 0.5 * (1 + np.cos(np.pi * np.minimum(u, 1))), 0))
        te += rng.uniform(1.5, 4.0)
    return out


def make_trajectories(frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Controls (F, len(CONTROL_NAMES)) in [0, 1] and head poses (F, 4, 4) head-to-world.

    Each curve has its own random stream, so a longer sequence starts with the same frames.
    """
    rng, rng_blink = _rng(seed, 2), _rng(seed, 3)
    t = np.arange(frames) / FPS

    def sig(x):
        return 0.5 + 0.5 * np.tanh(x)

    envelope = sig(3 * _smooth(rng, t, 0.1, 0.4) + 1.0)  # talking vs pausing
    syllables = 0.5 + 0.5 * _smooth(rng, t, 1.5, 3.5)
    gaze = _smooth(rng, t, 0.1, 0.5)
    ctl = {
        "jaw_open": envelope * syllables,
        "smile": sig(2.5 * _smooth(rng, t, 0.05, 0.3) - 0.3),
        "blink": _blinks(rng_blink, t),
        "brow_raise": sig(3 * _smooth(rng, t, 0.1, 0.6) - 0.8),
        "pucker": sig(3 * _smooth(rng, t, 0.1, 0.5) - 1.5),
        "gaze_left": np.maximum(-gaze, 0) ** 1.5,
        "gaze_right": np.maximum(gaze, 0) ** 1.5,
    }
    controls = np.stack([ctl[n] for n in CONTROL_NAMES], axis=1)
    yaw = math.radians(18) * _smooth(rng, t, 0.08, 0.4)
    pitch = math.radians(5) * _smooth(rng, t, 0.1, 0.6)
    roll = math.radians(3) * _smooth(rng, t, 0.1, 0.5)
    trans = 0.006 * np.stack([_smooth(rng, t, 0.05, 0.3) for _ in range(3)], axis=1)
    poses = np.tile(np.eye(4), (frames, 1, 1))
    for i in range(frames):
        poses[i, :3, :3] = rotation_ypr(yaw[i], pitch[i], roll[i])
        poses[i, :3, 3] = trans[i]
    return controls, poses


def make_mixing(exp_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Nonnegative mixing (exp_dim, n_controls) and bias (exp_dim,) with rows summing to <= 1.

    exp_ori = mixing @ controls + bias stays in [0, 1]. Every control drives at least one
    dimension on its own, so the map is injective (needs exp_dim >= n_controls).
    """
    n = len(CONTROL_NAMES)
    if exp_dim < n:
        raise ValueError(f"exp_dim must be at least {n} (the number of controls), got {exp_dim}")
    rng = _rng(seed, 1)
    mixing = np.zeros((exp_dim, n))
    bias = rng.uniform(0.0, 0.08, exp_dim) * (rng.uniform(size=exp_dim) < 0.5)
    main = np.concatenate([np.arange(n), rng.integers(0, n, exp_dim - n)])
    for row in range(exp_dim):
        w = rng.uniform(0.55, 1.0) * (1 - bias[row])
        mixing[row, main[row]] = w
        if row >= n and rng.uniform() < 0.6:
            other = (main[row] + rng.integers(1, n)) % n
            mixing[row, other] = rng.uniform(0, 1 - bias[row] - w)
    perm = rng.permutation(exp_dim)
    return mixing[perm], bias[perm]


# ----------------------------------------------------------------------------- writing


_STATE: dict = {}
# Numbered per-frame files of a dataset folder: (subfolder, suffix).
_FRAME_FILES = (("ori_imgs", ".jpg"), ("mask", ".png"), ("parsing", ".png"), ("regions", ".png"))


def _init_worker(state: dict) -> None:
    _STATE.update(state)


def _write_frame(root: Path, img_id: int, frame: Frame) -> None:
    """Write one frame's image, mask, parsing map and region map into the dataset folder root."""
    st = _STATE
    write_image(root / "ori_imgs" / f"{img_id}.jpg", frame.rgb,
                [cv2.IMWRITE_JPEG_QUALITY, st["jpeg_quality"]])
    write_image(root / "mask" / f"{img_id + st['mask_offset']}.png", frame.mask)
    parsing = parsing_image({name: frame.label == k for k, name in LABEL_NAMES.items()})
    write_image(root / "parsing" / f"{img_id}.png", parsing)
    write_image(root / "regions" / f"{img_id}.png", frame.regions)


def _render_and_write(task: int) -> np.ndarray | None:
    """Render and write one task: frame ``task`` of the sequence, or for task >= frames the
    novel view ``task - frames``. Returns the RGB (res, res, 3) of a sequence frame with
    --video, else None."""
    st = _STATE
    controls, poses = st["controls"], st["poses"]
    if task < len(poses):
        frame = render_frame(st["world"], controls[task], poses[task])
        _write_frame(st["out"], task, frame)
        return frame.rgb if st["video"] else None
    k = task - len(poses)
    src = st["novel_sources"][k]
    world = with_camera(st["world"], st["novel_c2w"][k])
    _write_frame(st["out"] / NOVEL_DIR, k, render_frame(world, controls[src], poses[src]))
    return None


def _clear_frames(root: Path, keep: bool) -> None:
    """Delete the numbered frame files and transforms.json of the dataset folder root, then
    create its frame folders (keep) or remove those left empty."""
    for sub, ext in _FRAME_FILES:
        folder = root / sub
        if folder.is_dir():
            for f in folder.iterdir():
                if f.suffix == ext and f.stem.isdigit():
                    f.unlink()
        if keep:
            folder.mkdir(parents=True, exist_ok=True)
        elif folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (root / "transforms.json").unlink(missing_ok=True)


def _prepare_out(out: Path, overwrite: bool, novel: bool) -> None:
    """Create OUT, refusing a non-empty folder that is not a synthetic dataset; drop stale files."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        gt = out / "synthetic_gt.json"
        try:
            ours = json.loads(gt.read_text()).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise FileExistsError(
                f"{out} is not empty and holds no synthetic dataset; choose another folder "
                "or pass --overwrite (overwrite=True) to write into it anyway"
            )
    out.mkdir(parents=True, exist_ok=True)
    # Frames of an earlier, longer run would otherwise linger beside the new ones.
    _clear_frames(out, keep=True)
    novel_dir = out / NOVEL_DIR
    if novel or novel_dir.is_dir():
        _clear_frames(novel_dir, keep=novel)
        if not novel and not any(novel_dir.iterdir()):
            novel_dir.rmdir()
    for name in ("synthetic_gt.json", "video.mp4"):
        (out / name).unlink(missing_ok=True)


def novel_sources(frames: int, last: int, every: int) -> list[int]:
    """Source frames of the novel views: every ``every``-th of the last ``last`` frames."""
    return list(range(max(frames - last, 0), frames, every))


def _transforms(world: SyntheticWorld, frames: list[dict]) -> bytes:
    """transforms.json of a dataset folder with the given frame entries."""
    intr = {"h": world.res, "w": world.res, "fx": world.fx, "fy": world.fy, "cx": world.cx,
            "cy": world.cy}
    return json.dumps({**intr, "frames": frames}, indent=1).encode()


def make_synthetic(
    out_dir: str | os.PathLike,
    frames: int = 100,
    res: int = 256,
    seed: int = 0,
    video: bool = False,
    mask_offset: int = 1,
    principal_offset: Sequence[float] = (0.0, 0.0),
    exp_dim: int = 46,
    jpeg_quality: int = 95,
    overwrite: bool = False,
    workers: int | None = None,
    novel_yaws: Sequence[float] = NOVEL_YAWS,
    novel_last: int = 100,
    novel_every: int = 4,
    identity: int | None = None,
    driver_seed: int | None = None,
    pose_mean_frames: int | None = None,
) -> Path:
    """Write a synthetic dataset to out_dir and return its path.

    out_dir is created if missing. A non-empty folder is refused unless it holds an earlier
    synthetic dataset or overwrite is set; either way numbered frames in ori_imgs/, mask/,
    parsing/ and regions/ (also under novel/) and the dataset's JSON and video files are
    deleted first, other files are kept. synthetic_gt.json is written before the frames (so an
    interrupted run can be redone in place), novel/transforms.json after them and
    transforms.json last (its presence marks a complete dataset).
    workers: processes for rendering (default: all CPUs for large jobs, 1 for small ones);
    the output is byte-identical for any value.
    novel_yaws: degrees about the head's vertical axis of the novel views of every
    ``novel_every``-th of the last ``novel_last`` frames; empty for none.
    identity: the person (colours and face shape, :func:`make_identity`); None: colours from
    ``seed`` and the base face shape.
    driver_seed: the ground truth of reenactment: the person of ``identity`` performs the
    expressions and head motion of seed ``driver_seed`` (its first ``frames`` frames), the
    motion relative to that sequence's mean pose put on the mean pose of this seed's own
    sequence of ``pose_mean_frames`` frames (default ``frames``), as render.py --driving
    --driving_pose retargets (utils/retarget.py).
    """
    if frames < 1 or res < 8:
        raise ValueError(f"need frames >= 1 and res >= 8, got frames={frames}, res={res}")
    if mask_offset not in (0, 1):
        raise ValueError(f"mask_offset must be 0 or 1, got {mask_offset}")
    if not 0 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 0..100, got {jpeg_quality}")
    if novel_last < 1 or novel_every < 1:
        raise ValueError(f"need novel_last >= 1 and novel_every >= 1, got {novel_last}, "
                         f"{novel_every}")
    yaws = [float(y) for y in novel_yaws]
    if not all(math.isfinite(y) for y in yaws):
        raise ValueError(f"novel_yaws must be finite degrees, got {yaws}")
    out = Path(out_dir)
    mixing, bias = make_mixing(exp_dim, seed if driver_seed is None else driver_seed)
    world = build_world(res, seed, principal_offset, identity)
    if driver_seed is None:
        controls, poses = make_trajectories(frames, seed)
        c2h = np.linalg.inv(poses) @ world.cam_c2w  # camera-to-head per frame
    else:
        controls, driver_poses = make_trajectories(frames, driver_seed)
        _, own = make_trajectories(pose_mean_frames or frames, seed)
        driver_c2h = np.linalg.inv(driver_poses) @ world.cam_c2w
        c2h = retarget_poses(driver_c2h, mean_pose(driver_c2h),
                             mean_pose(np.linalg.inv(own) @ world.cam_c2w))
        poses = world.cam_c2w @ np.linalg.inv(c2h)
    novel = [(i, y) for i in novel_sources(frames, novel_last, novel_every) for y in yaws]
    novel_c2h = [orbit_camera(c2h[i], poses[i], y) for i, y in novel]
    _prepare_out(out, overwrite, bool(novel))
    exp = np.clip(controls @ mixing.T + bias, 0, 1)
    gt = {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "identity": identity,
        "face_shape": vars(world.identity),
        "driver_seed": driver_seed,
        "pose_mean_frames": pose_mean_frames or frames if driver_seed is not None else None,
        "fps": FPS,
        "frames": frames,
        "res": res,
        "mask_offset": mask_offset,
        "principal_offset": [float(v) for v in principal_offset],
        "intrinsics": {
            "fx": world.fx,
            "fy": world.fy,
            "cx": world.cx,
            "cy": world.cy,
            "w": res,
            "h": res,
        },
        "camera_to_world": world.cam_c2w.tolist(),
        "camera_axes": "OpenGL (x right, y up, looks down -z)",
        "control_names": list(CONTROL_NAMES),
        "controls": controls.tolist(),
        "head_to_world": poses.tolist(),
        "exp_mixing": mixing.tolist(),
        "exp_bias": bias.tolist(),
        "exp_formula": "exp_ori = clip(exp_mixing @ controls + exp_bias, 0, 1)",
        "head_radii": list(CRANIUM_R),
        "novel": {
            "folder": NOVEL_DIR,
            "yaws_deg": yaws,
            "last": novel_last,
            "every": novel_every,
            "camera": "camera_to_head = R_y(yaw) @ source camera_to_head, R_y about the head "
                      "frame's y axis through its origin; head pose, expression, torso, light "
                      "and background as in the source frame",
            "frames": [
                {"img_id": k, "source_img_id": i, "yaw_deg": y, "camera_to_world": c2w.tolist()}
                for k, ((i, y), (_, c2w)) in enumerate(zip(novel, novel_c2h))
            ],
        },
    }
    atomic_write_bytes(out / "synthetic_gt.json", json.dumps(gt, indent=1).encode())

    state = dict(
        world=world,
        controls=controls,
        poses=poses,
        novel_sources=[i for i, _ in novel],
        novel_c2w=[c2w for _, c2w in novel_c2h],
        out=out,
        jpeg_quality=int(jpeg_quality),
        mask_offset=mask_offset,
        video=video,
    )
    tasks = frames + len(novel)
    if workers is None:
        # A pool only pays off once rendering outweighs starting the processes.
        workers = (os.cpu_count() or 1) if tasks * res * res > 4_000_000 else 1
    workers = max(1, min(workers, tasks))
    writer = None
    if video:
        import imageio.v2 as imageio

        tmp_video = out / f".video.mp4.tmp{os.getpid()}.mp4"
        writer = imageio.get_writer(
            tmp_video,
            fps=FPS,
            codec="libx264",
            quality=8,
            macro_block_size=2,
            ffmpeg_log_level="error",
            output_params=["-threads", "1"],
        )
    try:
        if workers == 1:
            _init_worker(state)
            _consume(map(_render_and_write, range(tasks)), writer)
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
                _consume(pool.imap(_render_and_write, range(tasks), chunksize=4), writer)
    finally:
        _STATE.clear()
        if writer is not None:
            writer.close()
    if writer is not None:
        os.replace(tmp_video, out / "video.mp4")

    if novel:
        entries = [
            {
                "img_id": k,
                "aud_id": i,
                "transform_matrix": t.tolist(),
                "exp_ori": exp[i].tolist(),
                "source_img_id": i,
                "yaw_deg": y,
                "source_transform_matrix": c2h[i].tolist(),
            }
            for k, ((i, y), (t, _)) in enumerate(zip(novel, novel_c2h))
        ]
        atomic_write_bytes(out / NOVEL_DIR / "transforms.json", _transforms(world, entries))
    entries = [
        {"img_id": i, "aud_id": i, "transform_matrix": c2h[i].tolist(), "exp_ori": exp[i].tolist()}
        for i in range(frames)
    ]
    atomic_write_bytes(out / "transforms.json", _transforms(world, entries))
    return out


def _consume(results, writer) -> None:
    """Drain the per-task results in order, feeding the sequence frames to the video writer."""
    for rgb in results:
        if writer is not None and rgb is not None:
            writer.append_data(rgb)


def _yaw_list(text: str) -> tuple[float, ...]:
    """'15,-15,30' -> (15.0, -15.0, 30.0); '' -> ()."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated degrees such as 15,-15,30,-30, got {text!r}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("out", type=Path, help="output folder (created if missing)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--res", type=int, default=256, help="image width and height")
    parser.add_argument("--seed", type=int, default=0,
                        help="the head's motion and expressions (and its colours without "
                             "--identity)")
    parser.add_argument("--identity", type=int, default=None,
                        help="the person: colours (skin, hair, eyes, shirt, background) and face "
                             "shape (head width, height and depth, jaw width, eye spacing, "
                             "mouth width) drawn from this seed; default: colours from --seed, "
                             "the base face shape")
    parser.add_argument("--driver_seed", type=int, default=None,
                        help="ground truth of reenactment: the person performs the expressions "
                             "and head motion of this seed, its motion about its mean pose put "
                             "on the mean pose of --seed's sequence (as render.py --driving "
                             "--driving_pose does)")
    parser.add_argument("--pose_mean_frames", type=int, default=None,
                        help="with --driver_seed: frames of --seed's sequence whose mean pose "
                             "the motion is put on (the avatar's clip length; default --frames)")
    parser.add_argument("--video", action="store_true", help="also write video.mp4")
    parser.add_argument(
        "--mask_offset",
        type=int,
        choices=(0, 1),
        default=1,
        help="mask file name = img_id + offset (1 as in the released data)",
    )
    parser.add_argument(
        "--principal_offset",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("DX", "DY"),
        help="principal point minus the image centre",
    )
    parser.add_argument("--exp_dim", type=int, default=46)
    parser.add_argument("--jpeg_quality", type=int, default=95)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (output is identical for any value)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder that is not a synthetic dataset",
    )
    parser.add_argument(
        "--novel_yaws",
        type=_yaw_list,
        default=NOVEL_YAWS,
        help="comma-separated degrees about the head's vertical axis of the novel views in "
        "novel/ (default 15,-15,30,-30; an empty value writes none)",
    )
    parser.add_argument(
        "--novel_last",
        type=int,
        default=100,
        help="novel views show the test expressions: source frames among the last N frames",
    )
    parser.add_argument(
        "--novel_every", type=int, default=4, help="every k-th of those frames is a source"
    )
    args = parser.parse_args(argv)
    try:
        out = make_synthetic(
            args.out,
            frames=args.frames,
            res=args.res,
            seed=args.seed,
            video=args.video,
            mask_offset=args.mask_offset,
            principal_offset=tuple(args.principal_offset),
            exp_dim=args.exp_dim,
            jpeg_quality=args.jpeg_quality,
            overwrite=args.overwrite,
            workers=args.workers,
            novel_yaws=args.novel_yaws,
            novel_last=args.novel_last,
            novel_every=args.novel_every,
            identity=args.identity,
            driver_seed=args.driver_seed,
            pose_mean_frames=args.pose_mean_frames,
        )
    except (FileExistsError, ValueError) as err:
        print(f"make_synthetic: {err}", file=sys.stderr)
        return 2
    novel = len(novel_sources(args.frames, args.novel_last, args.novel_every)) * len(
        args.novel_yaws
    )
    print(f"wrote {args.frames} frames and {novel} novel views to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
