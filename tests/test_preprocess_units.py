"""Unit tests of the preprocessing parts that need no landmark model: alignment, poses, focal,
smoothing, expressions, masks, parsing and region maps, occlusion cues, edge decontamination,
frame reading, options and the output folder."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from preprocessing import geometry as geo
from preprocessing import masks
from preprocessing import occlusion as occ
from preprocessing.expression import fit_basis
from preprocessing.frames import FrameSource
from preprocessing.matting import decontaminate, local_mean
from preprocessing.pipeline import (
    GENERATOR,
    REPORT_NAME,
    SUBFOLDERS,
    PreprocessOptions,
    _number_frames,
    check_output,
    fill_gaps,
    jpeg_params,
    mark_failed_tracks,
    mark_occluded,
    segments,
)
from utils.errors import InputError, OptionError
from utils.regions import decode_regions, encode_regions


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
    for bad in (dict(size=8), dict(min_kept=2.0), dict(focal=-1.0), dict(max_frames=1),
                dict(occlusion="mask"), dict(occlusion_threshold=0.0)):
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


# ----------------------------------------------------------------------------- occlusion


def _hand(wrist=(64.0, 100.0)) -> np.ndarray:
    """21 hand landmarks [21, 3] (MediaPipe order: wrist, then 4 joints per finger, thumb
    first) of an open hand pointing up, fingers 5 px apart, joints 6 px apart."""
    pts = np.zeros((21, 3))
    pts[0, :2] = wrist
    for f in range(5):
        for k in range(1, 5):
            pts[1 + 4 * f + k - 1, :2] = (wrist[0] + (f - 2) * 5.0, wrist[1] - 5.0 - 6.0 * k)
    return pts


def _cues(lab, points, oval, **kw):
    prob = kw.pop("prob", (lab > 0).astype(np.float32))
    face = masks.fill_polygon(points[oval], lab.shape)
    hand = occ.hand_region(kw.pop("hands", np.full((1, 21, 3), np.nan)), lab.shape)
    band, dist = occ.side_band(np.array([[50.0, 45.0], [79.0, 45.0]]),
                               np.array([[56.0, 65.0], [73.0, 65.0], [64.5, 62.0], [64.5, 68.0]]),
                               lab.shape)
    return occ.occlusion_cues(prob, face, hand, band, dist)


def test_a_hand_over_the_chin_is_an_occlusion_and_one_off_the_person_is_not():
    lab, points, oval, _, _ = _figure()
    clean = _cues(lab, points, oval)
    assert clean == {"hand": 0.0, "foreign": 0.0, "silhouette": 0.0}
    on_chin = _cues(lab, points, oval, hands=_hand()[None])
    assert on_chin["hand"] > 0.2 and on_chin["foreign"] == 0.0
    # the same hand over the background (top right corner) or outside the image: no occlusion
    assert _cues(lab, points, oval, hands=_hand((118.0, 40.0))[None])["hand"] == 0.0
    assert _cues(lab, points, oval, hands=_hand((400.0, 100.0))[None])["hand"] == 0.0
    # the region covers the fingers' width beyond the landmarks: the middle of the hull and a
    # pixel 2 px beside the outermost finger are inside, 8 px beside it is not
    region = occ.hand_region(_hand()[None], lab.shape)
    assert region[80, 64] and region[80, 55] and not region[80, 46]


def test_the_face_left_out_of_the_person_and_an_outgrowth_beside_it_are_occlusions():
    lab, points, oval, _, _ = _figure()
    prob = (lab > 0).astype(np.float32)
    prob[40:60, 55:75] = 0.0  # the segmentation says "not the person" on the face
    cues = _cues(lab, points, oval, prob=prob)
    assert 0.15 < cues["foreign"] < 0.35 and cues["hand"] == 0.0
    # a bar held beside the mouth (a microphone): person pixels far beside the face
    bar = lab.copy()
    bar[58:64, 64:] = masks.LABEL_HEAD
    assert _cues(bar, points, oval)["silhouette"] > 0.05
    # ears and hair close to the face outline are not: the head drawn wider by 5 px
    wide = lab.copy()
    cv2.ellipse(wide, (64, 48), (31, 32), 0, 0, 360, masks.LABEL_HEAD, -1)
    assert _cues(wide, points, oval)["silhouette"] == 0.0
    # nor is the torso below the mouth, however wide
    assert _cues(lab, points, oval)["silhouette"] == 0.0


def test_the_side_band_turns_with_the_head():
    shape = (128, 128)
    eyes = np.array([[50.0, 45.0], [79.0, 45.0]])
    mouth = np.array([[56.0, 65.0], [73.0, 65.0]])
    band, dist = occ.side_band(eyes, mouth, shape)
    assert dist == pytest.approx(29.0)
    assert band[50, 10] and band[64, 120] and not band[40, 64] and not band[70, 64]
    # a head rolled by 90 degrees (eyes one above the other): the band runs vertically
    rolled, _ = occ.side_band(np.array([[45.0, 79.0], [45.0, 50.0]]),
                              np.array([[65.0, 73.0], [65.0, 56.0]]), shape)
    assert rolled[10, 50] and rolled[120, 64] and not rolled[64, 40] and not rolled[64, 70]


def test_flagging_closes_short_gaps_and_pads_the_runs():
    frames = np.array([i for i in range(30) if i != 12])  # frame 12 was dropped already
    scores = np.zeros(len(frames))
    for i in (5, 6, 9, 20):
        scores[frames == i] = 0.5
    scores[frames == 25] = 0.029  # under the threshold
    flagged = occ.flag_frames(frames, scores, 0.03, close_gap=5, pad=2)
    assert frames[flagged].tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22]
    assert not occ.flag_frames(frames, np.zeros(len(frames)), 0.03).any()
    assert occ.runs([3, 4, 5, 9, 11, 12]) == [[3, 5], [9, 9], [11, 12]]
    assert occ.describe_runs([3, 4, 5, 9]) == "3-5, 9"


def test_the_silhouette_cue_is_measured_against_the_clip():
    cues = {i: {"hand": 0.0, "foreign": 0.0, "silhouette": v}
            for i, v in enumerate([0.1, 0.1, 0.12, 0.3, 0.0])}
    cues[4]["hand"] = 0.2
    out = occ.subtract_baselines(cues)
    assert [round(c["silhouette"], 6) for c in out.values()] == [0.0, 0.0, 0.02, 0.2, 0.0]
    assert out[4]["hand"] == 0.2


def test_occluded_frames_are_dropped_or_kept_and_reported():
    frames = np.arange(20)
    cues = {i: {"hand": 0.5 if 8 <= i <= 10 else 0.0, "foreign": 0.0, "silhouette": 0.0}
            for i in frames}
    for mode, expect in (("drop", "occluded"), ("keep", "ok")):
        status = np.array(["ok"] * 20, dtype=object)
        rep = mark_occluded(status, frames, cues, PreprocessOptions(occlusion=mode))
        a, b = 8 - occ.PAD, 10 + occ.PAD
        assert rep["flagged_runs"] == [[a, b]] and rep["mode"] == mode
        assert (status[a:b + 1] == expect).all() and (status[:a] == "ok").all()
        assert (status[b + 1:] == "ok").all()
        assert [f["cue"] for f in rep["frames"]] == ["neighbour"] * occ.PAD + ["hand"] * 3 + [
            "neighbour"] * occ.PAD
        assert len(rep["measured"]["hand"]) == 20


def test_written_frames_are_numbered_in_order_and_the_others_deleted(tmp_path):
    for sub, name in SUBFOLDERS.items():
        (tmp_path / sub).mkdir()
        for i in (0, 2, 3, 5):
            (tmp_path / sub / name.format(f"s{i}")).write_text(f"{sub} {i}")
    _number_frames(tmp_path, np.array([0, 2, 3, 5]), np.array([2, 5]))
    assert sorted(p.name for p in (tmp_path / "ori_imgs").iterdir()) == ["0.jpg", "1.jpg"]
    assert (tmp_path / "ori_imgs" / "1.jpg").read_text() == "ori_imgs 5"
    assert sorted(p.name for p in (tmp_path / "mask").iterdir()) == ["1.png", "2.png"]
    assert (tmp_path / "mask" / "1.png").read_text() == "mask 2"
    assert (tmp_path / "regions" / "0.png").read_text() == "regions 2"


# ----------------------------------------------------------------------------- matting


def _screen_frame(size: int = 128, width: float = 8.0, noise: float = 2.0):
    """A skin-coloured disc with a soft edge (``width`` px ramp) in front of a saturated blue
    screen: the frame I = a F + (1 - a) B as uint8, alpha quantised as the mask PNG stores it,
    and F."""
    v, u = np.mgrid[:size, :size] + 0.5
    alpha = np.clip((0.3 * size - np.hypot(u - size / 2, v - size / 2)) / width + 0.5, 0, 1)
    alpha = np.rint(alpha * 255) / 255
    fg, bg = np.array([200.0, 150.0, 120.0]), np.array([20.0, 40.0, 230.0])
    rng = np.random.default_rng(0)
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg + rng.normal(0, noise,
                                                                           (size, size, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), alpha, fg


def _blue_cast(img: np.ndarray, alpha: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Blue minus the mean of red and green of the frame composited onto white, minus the same
    of the ideal composite (the pure foreground colour over white), at the soft pixels."""
    soft = (alpha > 0) & (alpha < 1)
    a = alpha[soft][:, None]
    comp = a * img[soft].astype(np.float64) + (1 - a) * 255.0
    ideal = a * fg + (1 - a) * 255.0
    return (comp[:, 2] - comp[:, :2].mean(1)) - (ideal[:, 2] - ideal[:, :2].mean(1))


def test_decontamination_removes_the_screen_colour_from_the_edges():
    img, alpha, fg = _screen_frame()
    before = _blue_cast(img, alpha, fg)
    out = decontaminate(img, alpha)
    # what ori_imgs stores: a JPEG at the default quality
    jpeg = cv2.imdecode(cv2.imencode(".jpg", out[..., ::-1], jpeg_params(95))[1],
                        cv2.IMREAD_COLOR)[..., ::-1]
    after, after_jpeg = _blue_cast(out, alpha, fg), _blue_cast(jpeg, alpha, fg)
    print(f"blue cast at the soft edge, composited on white: mean {before.mean():.1f} (max "
          f"{before.max():.1f}) before, {after.mean():.2f} ({np.abs(after).max():.1f}) after, "
          f"{after_jpeg.mean():.2f} ({np.abs(after_jpeg).max():.1f}) after JPEG")
    assert before.mean() > 30
    assert abs(after.mean()) < 1.0 and np.abs(after).max() < 15
    assert abs(after_jpeg.mean()) < 1.0
    # only the soft pixels change
    hard = (alpha == 0) | (alpha == 1)
    np.testing.assert_array_equal(out[hard], img[hard])
    # no clear background anywhere: nothing to remove
    np.testing.assert_array_equal(decontaminate(img, np.maximum(alpha, 0.5)), img)


def test_local_mean_reaches_as_far_as_the_nearest_known_pixels():
    img = np.zeros((64, 96, 3), np.float32)
    img[:, :4] = (10.0, 20.0, 30.0)
    img[:, 4:] = 255.0
    known = np.zeros((64, 96), bool)
    known[:, :4] = True
    out = local_mean(img, known)
    np.testing.assert_allclose(out[:, 90], np.tile([10.0, 20.0, 30.0], (64, 1)), atol=1e-3)


# ----------------------------------------------------------------------------- regions


def _ring(centre, rx, ry, n=16):
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([centre[0] + rx * np.cos(ang), centre[1] + ry * np.sin(ang)])


def _feature_layout(eye_open: float = 1.0):
    """Landmarks [N, 2] and a FaceLayout with two lip loops and two eye loops."""
    outer = _ring((64.5, 90.5), 16, 8)
    inner = _ring((64.5, 90.5), 11, 3)
    eye_r, eye_l = _ring((44.5, 50.5), 8, 4 * eye_open), _ring((84.5, 50.5), 8, 4 * eye_open)
    points = np.vstack([outer, inner, eye_r, eye_l])
    idx = np.arange(64).reshape(4, 16)
    layout = geo.FaceLayout(num_points=64, rigid_prior=np.ones(64), oval=idx[0],
                            eye_outer_right=0, eye_outer_left=1, forehead=0, chin=0,
                            lips=(idx[0], idx[1]), eyes=(idx[2], idx[3]))
    return points, layout


def test_mouth_and_eye_regions_come_from_the_landmark_outlines():
    shape = (128, 128)
    points, layout = _feature_layout()
    reg = masks.feature_regions(points, layout, shape)
    lips = masks.fill_polygon(points[layout.lips[0]], shape)
    assert reg["mouth"][lips].all() and reg["mouth"][90, 64]  # the lips and the open mouth
    assert not reg["mouth"][90, 64 + 16 + 4] and not reg["mouth"][70, 64]
    eye = masks.fill_polygon(points[layout.eyes[0]], shape)
    assert reg["eyes"][eye].all() and not reg["eyes"][50, 64] and not reg["eyes"][90, 64]
    # a blink: the closed eye's region still holds the open eye (within a pixel's rounding)
    closed = masks.feature_regions(*_feature_layout(eye_open=0.05), shape)["eyes"]
    assert closed[eye].mean() > 0.95
    assert closed.sum() < 1.6 * reg["eyes"].sum()
    # with the body labels, into the bit flags of utils.regions and back
    labels = np.zeros(shape, np.uint8)
    labels[20:110, 20:110] = masks.LABEL_HEAD
    labels[110:, 40:90] = masks.LABEL_NECK
    both = {**masks.label_masks(labels), **reg}
    decoded = decode_regions(encode_regions(both))
    for name, m in both.items():
        np.testing.assert_array_equal(decoded[name], m, err_msg=name)


def test_closed_contours_are_split_into_loops():
    from preprocessing.landmarks import _loops

    square = [(0, 1), (1, 2), (2, 3), (3, 0)]
    triangle = [(10, 12), (11, 10), (12, 11)]
    loops = _loops(square + triangle)
    assert [sorted(lp.tolist()) for lp in loops] == [[0, 1, 2, 3], [10, 11, 12]]
    assert loops[0].tolist() in ([0, 1, 2, 3], [0, 3, 2, 1])
