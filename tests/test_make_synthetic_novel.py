"""tools/make_synthetic.py's novel views: the test expressions seen from cameras turned about
the head's vertical axis, with the world (head pose, torso, light) of their source frame."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from tests.synthetic_helpers import (
    HEAD_BGR,
    RES,
    _is,
    _parsing,
    _regions,
    make_small_dataset,
)
from tools import make_synthetic as ms


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_small_dataset(tmp_path_factory)


def _novel(out):
    return json.loads((out / "novel" / "transforms.json").read_text())


def _ry(yaw_deg):
    ry = np.eye(4)
    ry[:3, :3] = ms.rotation_ypr(math.radians(yaw_deg), 0.0, 0.0)
    return ry


def _project_c2h(tr, c2h, points):
    """Pixels (N, 2) of head-frame points (N, 3) seen by a camera-to-head c2h (OpenGL axes)."""
    h2c = np.linalg.inv(np.asarray(c2h))
    cam = np.asarray(points, float) @ h2c[:3, :3].T + h2c[:3, 3]
    x, y, z = cam[:, 0], -cam[:, 1], -cam[:, 2]
    return np.stack([tr["fx"] * x / z + tr["cx"], tr["fy"] * y / z + tr["cy"]], axis=1)


def _pixel_rays(tr, c2w):
    """Origin (3,) and world directions (H, W, 3) through the pixel centres of a camera."""
    v, u = np.mgrid[: tr["h"], : tr["w"]] + 0.5
    d = np.stack([(u - tr["cx"]) / tr["fx"], -(v - tr["cy"]) / tr["fy"], -np.ones_like(u)], -1)
    return c2w[:3, 3], d @ c2w[:3, :3].T


def test_novel_views_layout(dataset):
    out, tr, gt = dataset
    novel = _novel(out)
    for key in ("h", "w", "fx", "fy", "cx", "cy"):
        assert novel[key] == tr[key]
    sources = list(range(0, 30, 4))  # every 4th of the last 100 frames (all 30 here)
    pairs = [(i, y) for i in sources for y in ms.NOVEL_YAWS]
    assert [(f["source_img_id"], f["yaw_deg"]) for f in novel["frames"]] == pairs
    assert [f["img_id"] for f in novel["frames"]] == list(range(len(pairs)))
    poses = np.array(gt["head_to_world"])
    for fr, rec in zip(novel["frames"], gt["novel"]["frames"]):
        src = tr["frames"][fr["source_img_id"]]
        assert fr["exp_ori"] == src["exp_ori"]
        assert fr["source_transform_matrix"] == src["transform_matrix"]
        c2h = np.array(fr["transform_matrix"])
        np.testing.assert_allclose(c2h, _ry(fr["yaw_deg"]) @ np.array(src["transform_matrix"]),
                                   atol=1e-12)
        assert rec["img_id"] == fr["img_id"] and rec["yaw_deg"] == fr["yaw_deg"]
        np.testing.assert_allclose(rec["camera_to_world"], poses[fr["source_img_id"]] @ c2h,
                                   atol=1e-12)
    for sub, name in (("ori_imgs", "{}.jpg"), ("mask", "{}.png"), ("parsing", "{}.png"),
                      ("regions", "{}.png")):
        offset = 1 if sub == "mask" else 0
        files = sorted(p.name for p in (out / "novel" / sub).iterdir())
        assert files == sorted(name.format(k + offset) for k in range(len(pairs)))
    assert gt["novel"]["yaws_deg"] == list(ms.NOVEL_YAWS)
    assert (gt["novel"]["last"], gt["novel"]["every"]) == (100, 4)


def test_novel_view_at_yaw_zero_is_its_source_frame(tmp_path):
    out = ms.make_synthetic(tmp_path / "d", frames=6, res=RES, seed=2, novel_yaws=(0.0,),
                            novel_last=4, novel_every=2)
    novel = _novel(out)
    assert [f["source_img_id"] for f in novel["frames"]] == [2, 4]
    for fr in novel["frames"]:
        k, i = fr["img_id"], fr["source_img_id"]
        assert fr["transform_matrix"] == fr["source_transform_matrix"]
        a = cv2.imread(str(out / "novel" / "ori_imgs" / f"{k}.jpg")).astype(int)
        b = cv2.imread(str(out / "ori_imgs" / f"{i}.jpg")).astype(int)
        assert np.abs(a - b).max() <= 2  # at most jpeg noise
        for sub, ka, kb in (("mask", k + 1, i + 1), ("parsing", k, i), ("regions", k, i)):
            la = cv2.imread(str(out / "novel" / sub / f"{ka}.png"), cv2.IMREAD_UNCHANGED)
            lb = cv2.imread(str(out / sub / f"{kb}.png"), cv2.IMREAD_UNCHANGED)
            assert (la != lb).mean() <= 0.001, sub


@pytest.mark.parametrize("yaw", [15.0, -15.0])
def test_novel_view_turns_the_camera_about_the_head(dataset, yaw):
    out, tr, _ = dataset
    points = np.array([(0.0, 0.0, 0.0), ms.FACE_POINTS["eye_left_img"],
                       ms.FACE_POINTS["eye_right_img"], ms.FACE_POINTS["nose_tip"]])
    frames = [f for f in _novel(out)["frames"] if f["yaw_deg"] == yaw]
    assert len(frames) == 8
    for fr in frames:
        src = _project_c2h(tr, fr["source_transform_matrix"], points)
        new = _project_c2h(tr, fr["transform_matrix"], points)
        # The head-frame origin is on the axis: it stays where it was, inside the head.
        np.testing.assert_allclose(new[0], src[0], atol=1e-9)
        u, v = new[0].astype(int)
        assert _is(_parsing(out / "novel", fr["img_id"]), HEAD_BGR)[v, u]
        # The face, in front of the axis, moves left in the image for a positive yaw (the
        # camera moves to the head's right), right for a negative one.
        shift = new[1:, 0] - src[1:, 0]
        assert (np.sign(shift) == -np.sign(yaw)).all() and np.abs(shift).min() > 2
        # The rendered eyes move with their projections.
        for folder, img_id, proj in ((out, fr["source_img_id"], src),
                                     (out / "novel", fr["img_id"], new)):
            cols = np.nonzero(_regions(folder, img_id)["eyes"])[1] + 0.5
            split = proj[1:3, 0].mean()
            for eye, side in ((1, cols < split), (2, cols >= split)):
                assert cols[side].mean() == pytest.approx(proj[eye, 0], abs=1.0)


def test_novel_view_keeps_the_torso_in_the_world(dataset):
    out, tr, gt = dataset
    poses = np.array(gt["head_to_world"])
    c, r = np.array(ms.TORSO_C), np.array(ms.TORSO_R)
    for fr in _novel(out)["frames"]:
        if abs(fr["yaw_deg"]) != 30:
            continue
        # Pixels whose centre ray hits the torso's ellipsoid, placed where it is in the world.
        o, d = _pixel_rays(tr, poses[fr["source_img_id"]] @ np.array(fr["transform_matrix"]))
        a = ((d / r) ** 2).sum(-1)
        b = 2 * ((d * (o - c)) / r**2).sum(-1)
        disc = b * b - 4 * a * ((((o - c) / r) ** 2).sum() - 1)
        hit = disc > 0
        par = _parsing(out / "novel", fr["img_id"])
        torso = _is(par, (0, 0, 255))
        expected = hit & ~_is(par, HEAD_BGR) & ~_is(par, (0, 255, 0))
        assert (torso & expected).sum() / (torso | expected).sum() > 0.95
        # ... and the torso did move in the image.
        source = _is(_parsing(out, fr["source_img_id"]), (0, 0, 255))
        assert (torso ^ source).sum() > 0.05 * source.sum()


# ----------------------------------------------------------------------------- folders, CLI


def test_cli_novel_views_option_and_stale_novel_views(tmp_path, capsys):
    out = tmp_path / "d"
    assert ms.main([str(out), "--frames", "5", "--res", "32", "--novel_yaws", "10,-20",
                    "--novel_last", "3", "--novel_every", "2"]) == 0
    assert "4 novel views" in capsys.readouterr().out
    assert [(f["source_img_id"], f["yaw_deg"]) for f in _novel(out)["frames"]] == [
        (2, 10.0), (2, -20.0), (4, 10.0), (4, -20.0)]
    assert ms.main([str(out), "--frames", "5", "--res", "32", "--novel_yaws", ""]) == 0
    assert not (out / "novel").exists()
    assert json.loads((out / "synthetic_gt.json").read_text())["novel"]["frames"] == []
    with pytest.raises(SystemExit):
        ms.main([str(out), "--novel_yaws", "left"])
    assert "comma-separated degrees" in capsys.readouterr().err
