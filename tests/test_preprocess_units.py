"""Unit tests of the preprocessing parts that need no landmark model: alignment, poses, focal,
smoothing, expressions, masks and parsing, frame reading, options and the output folder."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from preprocessing import geometry as geo
from preprocessing import masks
from preprocessing.expression import fit_basis
from preprocessing.frames import FrameSource
from preprocessing.pipeline import (
    GENERATOR,
    REPORT_NAME,
    PreprocessOptions,
    check_output,
    fill_gaps,
    mark_failed_tracks,
    segments,
)
from utils.errors import InputError, OptionError


def _face_points(n: int = 60, seed: int = 0) -> np.ndarray:
    """A shallow face-like point set [n, 3] in the head frame (metres, z out of the face)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-1, 1, (n, 2)) * [0.07, 0.09]
    z = 0.09 - 4.0 * (xy[:, 0] ** 2 + 0.5 * xy[:, 1] ** 2)  # a bulging front
    return np.column_stack([xy, z])


def _project(pts: np.ndarray, rot: np.ndarray, t: np.ndarray, k: np.ndarray) -> np.ndarray:
    cam = pts @ rot.T + t
    uv = cam @ k.T
    return uv[:, :2] / uv[:, 2:]


def _head_poses(f: int, yaw_deg: float = 20.0, seed: int = 0):
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


# ----------------------------------------------------------------------------- alignment


def test_similarity_align_recovers_a_known_transform():
    src = _face_points()
    rot = Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix()
    dst = 3.5 * src @ rot.T + [1.0, -2.0, 0.5]
    s, r, t = geo.similarity_align(src, dst[None], np.ones(len(src)))
    assert s[0] == pytest.approx(3.5)
    np.testing.assert_allclose(r[0], rot, atol=1e-10)
    np.testing.assert_allclose(t[0], [1.0, -2.0, 0.5], atol=1e-10)


def test_procrustes_ignores_moving_points_and_recovers_relative_rotations():
    base = _face_points(80)
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
    err, _ = geo.rotation_errors_deg(np.transpose(r, (0, 2, 1)), np.transpose(rots, (0, 2, 1)))
    assert np.median(err) < 0.2


def test_rotation_errors_are_measured_after_aligning_the_head_frames():
    rots = Rotation.random(20, random_state=2).as_matrix()
    offset = Rotation.from_rotvec([0.3, 0.1, -0.2]).as_matrix()
    err, a = geo.rotation_errors_deg(offset @ rots, rots)
    np.testing.assert_allclose(err, 0, atol=1e-5)
    np.testing.assert_allclose(a, offset, atol=1e-10)
    noisy = Rotation.from_rotvec(np.radians(2) * np.array([[1.0, 0, 0]] * 20)).as_matrix() @ rots
    err, _ = geo.rotation_errors_deg(noisy, rots)
    assert err.max() < 2.01


# ----------------------------------------------------------------------------- perspective


def test_poses_and_focal_from_perspective_views_of_a_rigid_head():
    pts = _face_points(80)
    rots, trans = _head_poses(60)
    size, focal = 160, 232.0
    k = geo.intrinsics_matrix(focal, 80.0, 80.0)
    rng = np.random.default_rng(3)
    uv = np.stack([_project(pts, r, t, k) for r, t in zip(rots, trans)])
    uv += rng.normal(0, 0.05, uv.shape)
    # the starting model is the landmark model's weak-perspective shape: slightly off
    start = pts * [1.0, 1.0, 0.8]
    est, grid, errors = geo.estimate_focal(uv, start, size, 80.0, 80.0)
    assert est is not None and abs(est / focal - 1) < 0.15, (est, grid, errors)
    model, history = geo.refine_model(uv, start, geo.intrinsics_matrix(est, 80.0, 80.0))
    assert history[-1] < 0.5 * history[0]
    r_est, t_est, rms = geo.solve_poses(uv, model, geo.intrinsics_matrix(est, 80.0, 80.0))
    assert np.median(rms) < 0.2
    err, _ = geo.rotation_errors_deg(r_est, rots)
    assert np.median(err) < 1.0
    # a head that does not move gives no perspective cue: no estimate
    still = np.repeat(uv[:1], 20, axis=0) + rng.normal(0, 0.05, (20, *uv.shape[1:]))
    assert geo.estimate_focal(still, start, size, 80.0, 80.0)[0] is None


def test_camera_to_head_matrix_uses_opengl_axes():
    pts = _face_points(5)
    rots, trans = _head_poses(3)
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
        np.testing.assert_allclose(np.column_stack([u, v]), _project(pts, rots[i], trans[i], k),
                                   atol=1e-9)


def test_image_residuals_give_the_same_facial_motion_whatever_the_pose():
    pts = _face_points(40)
    rots, trans = _head_poses(12, yaw_deg=25.0)
    k = geo.intrinsics_matrix(230.0, 80.0, 80.0)
    motion = np.zeros_like(pts)
    motion[:8, 1] = -0.01  # the "jaw" drops 1 cm in the head frame
    seen = np.stack([_project(pts + motion, r, t, k) for r, t in zip(rots, trans)])
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
    err, _ = geo.rotation_errors_deg(sm_r, rots)
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


# ----------------------------------------------------------------------------- masks


def _figure(size: int = 128):
    """A drawn head, neck and torso with an oval of 'landmarks' on the face."""
    lab = np.zeros((size, size), np.uint8)
    cv2.ellipse(lab, (64, 112 + 40), (60, 45), 0, 0, 360, masks.LABEL_TORSO, -1)
    cv2.rectangle(lab, (52, 70), (76, 112), masks.LABEL_NECK, -1)
    cv2.ellipse(lab, (64, 48), (26, 32), 0, 0, 360, masks.LABEL_HEAD, -1)
    ang = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    oval = np.column_stack([64.5 + 21 * np.sin(ang), 52.5 - 27 * np.cos(ang)])
    points = np.vstack([oval, [[64.5, 25.5], [64.5, 79.5]]])  # + forehead, chin
    return lab, points, np.arange(36), 36, 37


def test_parsing_splits_head_neck_and_torso():
    lab, points, oval, forehead, chin = _figure()
    mask = (lab > 0).astype(np.float32)
    out = masks.parse(mask, points, oval, chin, forehead)
    for k in (masks.LABEL_HEAD, masks.LABEL_NECK, masks.LABEL_TORSO):
        a, b = out == k, lab == k
        assert (a & b).sum() / (a | b).sum() > 0.8, k
    assert (out[mask == 0] == masks.LABEL_BG).all()


def test_clean_mask_keeps_the_person_and_drops_other_blobs():
    lab, points, oval, _, _ = _figure()
    prob = (lab > 0).astype(np.float32) * 0.9
    prob[5:20, 5:20] = 0.95  # something else the segmentation found
    face = masks.fill_polygon(points[oval], lab.shape)
    out = masks.clean_mask(prob, face)
    assert out[5:20, 5:20].max() == 0
    np.testing.assert_allclose(out[lab == masks.LABEL_TORSO], 0.9)
    assert (out[face] == 1.0).all()


# ----------------------------------------------------------------------------- frames


def test_frame_source_reads_folders_in_natural_order_and_names_bad_files(tmp_path):
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), i, np.uint8))
    src = FrameSource(tmp_path)
    assert [int(rgb[0, 0, 0]) for _, rgb in src] == [1, 2, 10] and len(src) == 3
    assert len(FrameSource(tmp_path, max_frames=2)) == 2
    (tmp_path / "f11.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="f11.png cannot be decoded"):
        list(FrameSource(tmp_path))
    (tmp_path / "f11.png").unlink()
    cv2.imwrite(str(tmp_path / "f12.png"), np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(InputError, match=r"f12.png is 8x9 but the first frame is 8x8"):
        list(FrameSource(tmp_path))


def test_frame_source_rejects_missing_empty_and_undecodable_inputs(tmp_path):
    with pytest.raises(InputError, match="nope.mp4 not found"):
        FrameSource(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        FrameSource(tmp_path / "empty")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="bad.mp4 cannot be decoded as a video.*ffmpeg"):
        FrameSource(bad)


# ----------------------------------------------------------------------------- decisions


def _track(f: int = 20) -> np.ndarray:
    base = np.array([[0.0, 0.0, 0.0], [0.0, 100.0, 0.0], [50.0, 50.0, 0.0]])
    return np.stack([base + [i, 0.0, 0.0] for i in range(f)])


def test_glitches_are_failed_tracks_and_short_gaps_are_filled():
    lm = _track()
    status = np.array(["ok"] * 20, dtype=object)
    lm[5] += 60.0  # one frame jumps away and back
    status[9:11] = "no_face"
    status[13:19] = "several_faces"  # longer than the gap we fill
    mark_failed_tracks(status, lm, fh=100.0)
    assert status[5] == "failed_track"
    filled = fill_gaps(status, lm, fh=100.0, max_gap=3)
    assert filled == [5, 9, 10]
    np.testing.assert_allclose(lm[9], _track()[9])
    assert (status[13:19] == "several_faces").all()
    kept = np.flatnonzero((status == "ok") | (status == "interpolated"))
    assert [(s.start, s.stop) for s in segments(kept, lm, 100.0)] == [(0, 13), (13, 14)]


def test_a_cut_is_not_a_glitch_nor_filled_across():
    lm = _track()
    lm[10:] += 80.0  # the camera cuts to another shot
    status = np.array(["ok"] * 20, dtype=object)
    status[10] = "no_face"
    mark_failed_tracks(status, lm, fh=100.0)
    assert (status != "failed_track").all()
    assert fill_gaps(status, lm, fh=100.0, max_gap=3) == []
    kept = np.flatnonzero(status == "ok")
    assert len(segments(kept, lm, 100.0)) == 2


def test_native_notices_are_hidden_and_other_native_output_passed_on(capfd):
    from preprocessing.landmarks import native_notices_filtered

    with native_notices_filtered() as console:
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 something real went wrong\n")
        console.write("progress\n")
    err = capfd.readouterr().err
    assert "XNNPACK" not in err
    assert "something real went wrong" in err and "progress" in err


# ----------------------------------------------------------------------------- options, OUT


def test_options_are_checked():
    PreprocessOptions().check()
    for bad in (dict(size=8), dict(min_kept=2.0), dict(focal=-1.0), dict(max_frames=1)):
        with pytest.raises(OptionError):
            PreprocessOptions(**bad).check()


def test_output_folder_rules(tmp_path):
    check_output(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionError, match="not a folder"):
        check_output(tmp_path / "file")
    other = tmp_path / "other"
    other.mkdir()
    (other / "transforms.json").write_text("{}")
    with pytest.raises(OptionError, match="holds no dataset made by tools/preprocess.py"):
        check_output(other)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / REPORT_NAME).write_text(json.dumps({"generator": GENERATOR}))
    check_output(ours)
