"""Tests for tools/make_synthetic.py: layout, determinism, geometry, expression effects, region
maps and novel views."""

import json
import math

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest

from tests.synthetic_helpers import (
    HEAD_BGR,
    RES,
    WHITE,
    _is,
    _mask,
    _parsing,
    make_small_dataset,
)
from tools import make_synthetic as ms
from utils.regions import decode_regions


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_small_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def world():
    return ms.build_world(128, seed=0)


def _pose(yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, t=(0.0, 0.0, 0.0)):
    pose = np.eye(4)
    pose[:3, :3] = ms.rotation_ypr(*(math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg)))
    pose[:3, 3] = t
    return pose


def _box(world, point, half_rows, half_cols=None):
    """Pixel slices (rows, cols) of a box around a head-frame point projected at rest pose."""
    half_cols = half_rows if half_cols is None else half_cols
    u, v = ms.project(world, np.eye(4), np.array(point))[0]
    return (
        slice(int(v) - half_rows, int(v) + half_rows + 1),
        slice(int(u) - half_cols, int(u) + half_cols + 1),
    )


def _lum(rgb):
    return rgb.astype(float) @ np.array([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------- layout


@pytest.mark.parametrize("mask_offset", [0, 1])
def test_layout(tmp_path, mask_offset):
    frames = 4
    out = ms.make_synthetic(tmp_path / "d", frames=frames, res=RES, seed=1, mask_offset=mask_offset)
    tr = json.loads((out / "transforms.json").read_text())
    assert isinstance(tr["h"], int) and isinstance(tr["w"], int) and tr["h"] == tr["w"] == RES
    for key in ("fx", "fy", "cx", "cy"):
        assert isinstance(tr[key], float)
    assert tr["fx"] == pytest.approx(ms.FOCAL_SCALE * RES)
    assert (tr["cx"], tr["cy"]) == (RES / 2, RES / 2)
    assert len(tr["frames"]) == frames
    names = sorted(p.name for p in (out / "mask").iterdir())
    assert names == sorted(f"{i + mask_offset}.png" for i in range(frames))
    for i, fr in enumerate(tr["frames"]):
        assert fr["img_id"] == fr["aud_id"] == i
        assert len(fr["exp_ori"]) == 46
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in fr["exp_ori"])
        c2w = np.array(fr["transform_matrix"])
        assert c2w.shape == (4, 4)
        np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
        rot = c2w[:3, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        img = cv2.imread(str(out / "ori_imgs" / f"{i}.jpg"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (RES, RES, 3) and img.dtype == np.uint8
        mask = _mask(out, i, mask_offset)
        assert mask.shape == (RES, RES) and mask.dtype == np.uint8
        assert ((mask > 0) & (mask < 255)).any(), "mask edges should be anti-aliased"
        par = _parsing(out, i)
        assert par.shape == (RES, RES, 3) and par.dtype == np.uint8
        known = _is(par, WHITE) | _is(par, HEAD_BGR) | _is(par, (0, 255, 0)) | _is(par, (0, 0, 255))
        assert known.all()
        for bgr in (HEAD_BGR, (0, 255, 0), (0, 0, 255), WHITE):
            assert _is(par, bgr).any()
        labels = cv2.imread(str(out / "regions" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (RES, RES) and labels.dtype == np.uint8
        regions = decode_regions(labels)
        for name, bgr in (("head", HEAD_BGR), ("neck", (0, 255, 0)), ("torso", (0, 0, 255))):
            np.testing.assert_array_equal(regions[name], _is(par, bgr))
        assert regions["mouth"].any() and regions["eyes"].any()
    gt = json.loads((out / "synthetic_gt.json").read_text())
    assert gt["generator"] == ms.GENERATOR and gt["seed"] == 1 and gt["mask_offset"] == mask_offset
    assert gt["control_names"] == list(ms.CONTROL_NAMES)
    assert np.array(gt["controls"]).shape == (frames, len(ms.CONTROL_NAMES))
    assert np.array(gt["head_to_world"]).shape == (frames, 4, 4)
    assert np.array(gt["exp_mixing"]).shape == (46, len(ms.CONTROL_NAMES))
    assert not (out / "video.mp4").exists()


def test_ground_truth_consistent(dataset):
    out, tr, gt = dataset
    cam = np.array(gt["camera_to_world"])
    poses = np.array(gt["head_to_world"])
    controls = np.array(gt["controls"])
    mixing, bias = np.array(gt["exp_mixing"]), np.array(gt["exp_bias"])
    assert (mixing >= 0).all() and (bias >= 0).all()
    assert np.linalg.matrix_rank(mixing) == len(ms.CONTROL_NAMES)
    assert (controls >= 0).all() and (controls <= 1).all()
    for i, fr in enumerate(tr["frames"]):
        np.testing.assert_allclose(
            fr["transform_matrix"], np.linalg.inv(poses[i]) @ cam, atol=1e-12
        )
        np.testing.assert_allclose(fr["exp_ori"], mixing @ controls[i] + bias, atol=1e-12)
    # Every control moves and blinks happen within the first 1.2 s.
    assert controls[:, ms.CONTROL_NAMES.index("blink")].max() > 0.8
    assert (np.ptp(controls, axis=0)[[0, 1, 3]] > 0.01).all()


def test_trajectories_smooth_bounded_and_prefix_stable():
    controls, poses = ms.make_trajectories(250, seed=5)
    short_c, short_p = ms.make_trajectories(40, seed=5)
    np.testing.assert_array_equal(controls[:40], short_c)
    np.testing.assert_array_equal(poses[:40], short_p)
    assert (controls >= 0).all() and (controls <= 1).all()
    yaw = np.degrees(np.arctan2(poses[:, 0, 2], poses[:, 2, 2]))
    assert np.abs(yaw).max() <= 18.0 + 1e-9 and np.ptp(yaw) > 5
    assert np.abs(poses[:, :3, 3]).max() < 0.01
    # Smooth: small steps between frames; blinks are short events and the jaw follows
    # syllables, the rest change slowly.
    steps = np.abs(np.diff(controls, axis=0)).max(0)
    fast = [ms.CONTROL_NAMES.index(n) for n in ("blink", "jaw_open")]
    assert steps[fast[1]] < 0.5
    assert np.delete(steps, fast).max() < 0.15
    assert np.abs(np.diff(yaw)).max() < 2.0


def test_exp_dim_too_small_rejected(tmp_path):
    with pytest.raises(ValueError, match="exp_dim"):
        ms.make_synthetic(tmp_path / "d", frames=2, res=RES, exp_dim=3)


# ----------------------------------------------------------------------------- determinism


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(tmp_path):
    kw = dict(frames=5, res=RES, seed=7)
    a = _files(ms.make_synthetic(tmp_path / "a", **kw))
    b = _files(ms.make_synthetic(tmp_path / "b", workers=2, **kw))
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    c = _files(ms.make_synthetic(tmp_path / "c", **{**kw, "seed": 8}))
    assert c.keys() == a.keys()
    for name in ("transforms.json", "ori_imgs/0.jpg", "ori_imgs/4.jpg"):
        key = next(k for k in a if str(k) == name)
        assert a[key] != c[key]


# ----------------------------------------------------------------------------- geometry


def test_head_centre_projects_into_head_region(dataset):
    out, tr, _ = dataset
    assert (tr["cx"], tr["cy"]) == (RES / 2 + 3.0, RES / 2 - 2.0)
    for fr in tr["frames"]:
        w2c = np.linalg.inv(np.array(fr["transform_matrix"]))
        x, y, z = w2c[:3, 3] * np.array([1, -1, -1])  # head origin; OpenGL -> OpenCV axes
        u, v = tr["fx"] * x / z + tr["cx"], tr["fy"] * y / z + tr["cy"]
        par = _parsing(out, fr["img_id"])
        assert _is(par, HEAD_BGR)[int(v), int(u)]


def test_principal_offset_shifts_image():
    dx, dy = 5, -3
    base = ms.build_world(RES, seed=0)
    shifted = ms.build_world(RES, seed=0, principal_offset=(dx, dy))
    pose = _pose(10, 3, -2, (0.004, 0.0, 0.002))
    ctl = {"jaw_open": 0.4}
    lab0 = ms.render_frame(base, ctl, pose).label
    _, mask1, lab1, _ = ms.render_frame(shifted, ctl, pose)
    pred = ms.project(shifted, pose, np.zeros(3)) - ms.project(base, pose, np.zeros(3))
    np.testing.assert_allclose(pred[0], [dx, dy])
    head0, head1 = np.argwhere(lab0 == ms.LABEL_HEAD), np.argwhere(lab1 == ms.LABEL_HEAD)
    np.testing.assert_allclose(head1.mean(0) - head0.mean(0), [dy, dx], atol=0.05)
    # An integer shift of the principal point is an exact translation of the image.
    np.testing.assert_array_equal(lab1[10:50, 10:50], lab0[13:53, 5:45])


def test_mask_and_parsing_agree(dataset):
    out, tr, _ = dataset
    for i in range(0, len(tr["frames"]), 7):
        par, mask = _parsing(out, i), _mask(out, i)
        body = ~_is(par, WHITE)
        assert (mask[body] > 127).all()
        assert _is(par, WHITE)[mask == 0].all()
        # The mask covers the body: few mostly-covered pixels are left as background.
        assert (mask[~body] > 200).sum() == 0


def test_torso_fixed_head_moves(dataset, world):
    out, tr, _ = dataset
    torso = np.stack([_is(_parsing(out, i), (0, 0, 255)) for i in range(len(tr["frames"]))])
    always, ever = torso.all(0).sum(), torso.any(0).sum()
    assert always / ever > 0.95
    # With explicit poses: turning and shifting the head moves head pixels, not the torso.
    rgb0, _, lab0, _ = ms.render_frame(world, {}, _pose())
    rgb1, _, lab1, _ = ms.render_frame(world, {}, _pose(18, 4, 3, (0.006, 0.004, 0.0)))
    head0, head1 = lab0 == ms.LABEL_HEAD, lab1 == ms.LABEL_HEAD
    assert (head0 ^ head1).sum() > 0.05 * head0.sum()
    t0, t1 = lab0 == ms.LABEL_TORSO, lab1 == ms.LABEL_TORSO
    assert (t0 & t1).sum() / (t0 | t1).sum() > 0.97
    # Away from the neck the torso is pixel-identical.
    rows = slice(int(0.92 * world.res), world.res)
    cols = np.r_[0 : int(0.3 * world.res), int(0.7 * world.res) : world.res]
    np.testing.assert_array_equal(rgb0[rows][:, cols], rgb1[rows][:, cols])


# ----------------------------------------------------------------------------- expressions


def test_jaw_open_opens_mouth_and_lowers_chin(world):
    rgb0, _, lab0, _ = ms.render_frame(world, {"jaw_open": 0.0}, np.eye(4))
    rgb1, _, lab1, _ = ms.render_frame(world, {"jaw_open": 1.0}, np.eye(4))
    rows, cols = _box(world, (0.0, ms.MOUTH_Y - 0.008, 0.09), 5)
    dark0 = (_lum(rgb0[rows, cols]) < 60).sum()
    dark1 = (_lum(rgb1[rows, cols]) < 60).sum()
    assert dark1 > dark0 + 15
    centre = slice(world.res // 2 - 4, world.res // 2 + 4)
    chin0 = np.nonzero((lab0[:, centre] == ms.LABEL_HEAD).any(1))[0].max()
    chin1 = np.nonzero((lab1[:, centre] == ms.LABEL_HEAD).any(1))[0].max()
    assert chin1 >= chin0 + 2


def test_blink_closes_eyes(world):
    rgb0 = ms.render_frame(world, {"blink": 0.0}, np.eye(4)).rgb
    rgb1 = ms.render_frame(world, {"blink": 1.0}, np.eye(4)).rgb
    changed = np.abs(rgb0.astype(int) - rgb1.astype(int)).max(-1) > 0
    for name in ("eye_left_img", "eye_right_img"):
        rows, cols = _box(world, ms.FACE_POINTS[name], 6, 9)
        white0 = (_lum(rgb0[rows, cols]) > 190).sum()
        white1 = (_lum(rgb1[rows, cols]) > 190).sum()
        assert white0 >= 4 and white1 == 0
        changed[rows, cols] = False
    assert not changed.any(), "blink should only change the eyes"


@pytest.mark.parametrize(
    ("control", "region"),
    [
        ("smile", "mouth"),
        ("pucker", "mouth"),
        ("brow_raise", "eyes"),
        ("gaze_left", "eyes"),
        ("gaze_right", "eyes"),
    ],
)
def test_controls_change_local_pixels(world, control, region):
    rgb0 = ms.render_frame(world, {}, np.eye(4)).rgb
    rgb1 = ms.render_frame(world, {control: 1.0}, np.eye(4)).rgb
    diff = np.abs(rgb0.astype(int) - rgb1.astype(int)).max(-1)
    if region == "mouth":
        rows, cols = _box(world, ms.FACE_POINTS["mouth"], 10, 16)
    else:  # both eyes and brows
        rows, cols = _box(world, (0.0, ms.EYE_Y + 0.012, 0.089), 12, 28)
    assert (diff[rows, cols] > 20).sum() >= 5
    diff[rows, cols] = 0
    assert diff.max() == 0, f"{control} changed pixels outside the {region}"


def test_render_rejects_unknown_control(world):
    with pytest.raises(ValueError, match="unknown controls"):
        ms.render_frame(world, {"wink": 1.0}, np.eye(4))


# ----------------------------------------------------------------------------- regions


def test_regions_follow_parsing_and_mouth_grows_with_jaw_open(world):
    closed = ms.render_frame(world, {"jaw_open": 0.0}, np.eye(4))
    opened = ms.render_frame(world, {"jaw_open": 1.0}, np.eye(4))
    for frame in (closed, opened):
        regions = decode_regions(frame.regions)
        for k, name in ms.LABEL_NAMES.items():
            np.testing.assert_array_equal(regions[name], frame.label == k)
        for part in ("mouth", "eyes"):
            assert regions[part].any() and not (regions[part] & ~regions["head"]).any()
    m0, m1 = decode_regions(closed.regions)["mouth"], decode_regions(opened.regions)["mouth"]
    assert m0.sum() >= 20 and m1.sum() > 1.5 * m0.sum()
    # The open mouth's dark interior lies in the region.
    rows, cols = _box(world, (0.0, ms.MOUTH_Y - 0.008, 0.09), 5)
    dark = _lum(opened.rgb[rows, cols]) < 60
    assert dark.sum() >= 15 and m1[rows, cols][dark].all()


def test_eyes_region_holds_what_a_blink_changes(world):
    opened = ms.render_frame(world, {"blink": 0.0}, np.eye(4))
    closed = ms.render_frame(world, {"blink": 1.0}, np.eye(4))
    e0, e1 = decode_regions(opened.regions)["eyes"], decode_regions(closed.regions)["eyes"]
    # The region is the eye openings on the face, so it stays as the lids close over them.
    np.testing.assert_array_equal(e0, e1)
    changed = np.abs(opened.rgb.astype(int) - closed.rgb.astype(int)).max(-1) > 0
    assert changed.sum() >= 20 and not (changed & ~e0).any()
    assert e0.sum() < 0.01 * e0.size
    for name in ("eye_left_img", "eye_right_img"):
        u, v = ms.project(world, np.eye(4), np.array(ms.FACE_POINTS[name]))[0].astype(int)
        assert e0[v - 1 : v + 2, u - 2 : u + 3].any()


# ----------------------------------------------------------------------------- novel views


def test_refuses_foreign_folder_and_cleans_stale_frames(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="--overwrite"):
        ms.make_synthetic(foreign, frames=2, res=RES)
    ms.make_synthetic(foreign, frames=2, res=RES, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep"

    out = ms.make_synthetic(tmp_path / "d", frames=5, res=RES)
    ms.make_synthetic(out, frames=3, res=RES, mask_offset=0)  # a previous dataset is replaced
    assert sorted(p.name for p in (out / "ori_imgs").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    assert sorted(p.name for p in (out / "mask").iterdir()) == ["0.png", "1.png", "2.png"]
    assert not list(out.rglob(".*tmp*"))


def test_cli_with_video(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        str(out),
        "--frames",
        "4",
        "--res",
        "48",
        "--seed",
        "2",
        "--video",
        "--principal_offset",
        "1.5",
        "-2",
        "--exp_dim",
        "10",
    ]
    assert ms.main(args) == 0
    tr = json.loads((out / "transforms.json").read_text())
    assert (tr["cx"], tr["cy"]) == (25.5, 22.0)
    assert len(tr["frames"][0]["exp_ori"]) == 10
    reader = imageio.get_reader(out / "video.mp4")
    try:
        assert reader.count_frames() == 4
        assert reader.get_data(0).shape == (48, 48, 3)
    finally:
        reader.close()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("")
    assert ms.main([str(foreign), "--frames", "2", "--res", "32"]) == 2
    assert "--overwrite" in capsys.readouterr().err
