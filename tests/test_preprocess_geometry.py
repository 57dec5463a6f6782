"""Unit tests of the preprocessing's geometry: alignment, poses and focal length from
perspective views, smoothing and expressions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from preprocessing import geometry as geo
from preprocessing.expression import fit_basis
from tests.preprocess_helpers import face_points, head_poses, project, rotation_errors_deg

# ----------------------------------------------------------------------------- alignment


def test_similarity_align_recovers_a_known_transform():
    src = face_points()
    rot = Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix()
    dst = 3.5 * src @ rot.T + [1.0, -2.0, 0.5]
    s, r, t = geo.similarity_align(src, dst[None], np.ones(len(src)))
    assert s[0] == pytest.approx(3.5)
    np.testing.assert_allclose(r[0], rot, atol=1e-10)
    np.testing.assert_allclose(t[0], [1.0, -2.0, 0.5], atol=1e-10)


def test_procrustes_ignores_moving_points_and_recovers_relative_rotations():
    base = face_points(80)
    rng = np.random.default_rng(1)
    f = 30
    rots = Rotation.from_rotvec(rng.normal(0, 0.2, (f, 3))).as_matrix()
    shapes = np.empty((f, 80, 3))
    for i in range(f):
        pts = base.copy()
        pts[:20, 1] -= 0.03 * rng.uniform(0, 1)  # a "jaw" that opens and closes
        shapes[i] = 200 * pts @ rots[i].T + rng.normal(0, 0.0005, 3)
    prior = np.ones(80)
    _, _, r, _, w = geo.generalized_procrustes(shapes, prior)
    assert w[:20].mean() < 0.2 * w[20:].mean()
    # relative rotations between frames are right, whatever the common frame
    err, _ = rotation_errors_deg(np.transpose(r, (0, 2, 1)), np.transpose(rots, (0, 2, 1)))
    assert np.median(err) < 0.2


def test_rotation_errors_are_measured_after_aligning_the_head_frames():
    rots = Rotation.random(20, random_state=2).as_matrix()
    offset = Rotation.from_rotvec([0.3, 0.1, -0.2]).as_matrix()
    err, a = rotation_errors_deg(offset @ rots, rots)
    np.testing.assert_allclose(err, 0, atol=1e-5)
    np.testing.assert_allclose(a, offset, atol=1e-10)
    noisy = Rotation.from_rotvec(np.radians(2) * np.array([[1.0, 0, 0]] * 20)).as_matrix() @ rots
    err, _ = rotation_errors_deg(noisy, rots)
    assert err.max() < 2.01


# ----------------------------------------------------------------------------- perspective


def test_poses_and_focal_from_perspective_views_of_a_rigid_head():
    pts = face_points(80)
    rots, trans = head_poses(60)
    size, focal = 160, 232.0
    k = geo.intrinsics_matrix(focal, 80.0, 80.0)
    rng = np.random.default_rng(3)
    uv = np.stack([project(pts, r, t, k) for r, t in zip(rots, trans)])
    uv += rng.normal(0, 0.05, uv.shape)
    # the starting model is the landmark model's weak-perspective shape: slightly off
    start = pts * [1.0, 1.0, 0.8]
    est, grid, errors = geo.estimate_focal(uv, start, size, 80.0, 80.0)
    assert est is not None and abs(est / focal - 1) < 0.15, (est, grid, errors)
    model, history = geo.refine_model(uv, start, geo.intrinsics_matrix(est, 80.0, 80.0))
    assert history[-1] < 0.5 * history[0]
    r_est, t_est, rms = geo.solve_poses(uv, model, geo.intrinsics_matrix(est, 80.0, 80.0))
    assert np.median(rms) < 0.2
    err, _ = rotation_errors_deg(r_est, rots)
    assert np.median(err) < 1.0
    # a head that does not move gives no perspective cue: no estimate
    still = np.repeat(uv[:1], 20, axis=0) + rng.normal(0, 0.05, (20, *uv.shape[1:]))
    assert geo.estimate_focal(still, start, size, 80.0, 80.0)[0] is None


def test_camera_to_head_matrix_uses_opengl_axes():
    pts = face_points(5)
    rots, trans = head_poses(3)
    k = geo.intrinsics_matrix(200.0, 64.0, 60.0)
    c2w = geo.camera_to_head_opengl(rots, trans)
    for i in range(3):
        np.testing.assert_allclose(c2w[i, :3, :3] @ c2w[i, :3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(c2w[i, :3, :3]) == pytest.approx(1.0)
        # project through the OpenGL camera: x right, y up, looking down -z
        w2c = np.linalg.inv(c2w[i])
        cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
        assert (cam[:, 2] < 0).all()
        u = 200.0 * cam[:, 0] / -cam[:, 2] + 64.0
        v = 200.0 * -cam[:, 1] / -cam[:, 2] + 60.0
        np.testing.assert_allclose(np.column_stack([u, v]), project(pts, rots[i], trans[i], k),
                                   atol=1e-9)


def test_image_residuals_give_the_same_facial_motion_whatever_the_pose():
    pts = face_points(40)
    rots, trans = head_poses(12, yaw_deg=25.0)
    k = geo.intrinsics_matrix(230.0, 80.0, 80.0)
    motion = np.zeros_like(pts)
    motion[:8, 1] = -0.01  # the "jaw" drops 1 cm in the head frame
    seen = np.stack([project(pts + motion, r, t, k) for r, t in zip(rots, trans)])
    res = geo.image_residuals(seen, pts, rots, trans, k)  # [F, N, 3]
    # in-plane motion comes back in metres, to first order, at every yaw
    np.testing.assert_allclose(res[:, :8, 1], -0.01, atol=0.0015)
    assert np.abs(res[:, 8:]).max() < 1e-12
    assert np.ptp(res[:, :8, 1], axis=0).max() < 0.002


# ----------------------------------------------------------------------------- smoothing


def test_smoothing_keeps_quadratic_motion_without_lag_and_removes_noise():
    f = 80
    x = np.linspace(-1, 1, f)
    angle = 0.3 * x + 0.2 * x**2  # a turning, accelerating head
    rots = np.stack([Rotation.from_euler("y", a).as_matrix() for a in angle])
    trans = np.column_stack([0.01 * x, 0.02 * x**2, 0.5 + 0 * x])
    sm_r, sm_t = geo.smooth_poses(rots, trans, [slice(0, f)], 7)
    np.testing.assert_allclose(sm_t, trans, atol=1e-12)
    err, _ = rotation_errors_deg(sm_r, rots)
    assert err.max() < 0.05  # a quadratic in angle is kept, not delayed
    rng = np.random.default_rng(0)
    noisy = trans + rng.normal(0, 0.002, trans.shape)
    sm = geo.smooth_series(noisy, [slice(0, 40), slice(40, f)], 7)
    assert np.std(sm - trans) < 0.7 * np.std(noisy - trans)
    # a step between two segments is not smeared across them
    step = np.r_[np.zeros(40), np.ones(40)][:, None]
    np.testing.assert_allclose(geo.smooth_series(step, [slice(0, 40), slice(40, f)], 7), step,
                               atol=1e-12)


# ----------------------------------------------------------------------------- expressions


def test_expression_basis_finds_the_motion_and_stays_in_range():
    rng = np.random.default_rng(0)
    f, n = 100, 50
    mean = rng.normal(0, 0.05, (n, 3))
    jaw = 0.5 + 0.5 * np.sin(np.linspace(0, 12, f))
    direction = np.zeros((n, 3))
    direction[:10, 1] = -0.01
    faces = mean + jaw[:, None, None] * direction + rng.normal(0, 1e-4, (f, n, 3))
    basis = fit_basis(faces, 8)
    exp = basis.encode(faces)
    assert exp.shape == (f, 8) and (exp >= 0).all() and (exp <= 1).all()
    assert abs(np.corrcoef(exp[:, 0], jaw)[0, 1]) > 0.99
    assert np.ptp(exp[:, 0]) > 0.2 and np.ptp(exp[:, 1:]) < 0.05
    # fewer frames than components: the extra components are zero (exp 0.5)
    few = fit_basis(faces[:3], 8).encode(faces[:3])
    np.testing.assert_allclose(few[:, 3:], 0.5)
