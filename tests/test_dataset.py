"""The dataset reader: the released layout, split rules, mask naming, principal point, memory,
and one clear error for every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scene import Scene
from scene.cameras import Camera
from scene.dataset_images import load_images
from scene.dataset_readers import read_dataset
from tests.helpers import FIXTURE, edit_transforms, needs_fixture, write_tiny_dataset
from utils.errors import DatasetError, OptionError, UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tiny(tmp_path):
    return write_tiny_dataset(tmp_path / "tiny")


# ---------------------------------------------------------------------------- the released data


@needs_fixture
def test_reads_the_released_layout():
    info = read_dataset(FIXTURE / "data", test_frames=100, eval_frames=100)
    assert len(info.frames) == 200 and info.exp_dim == 46
    assert info.mask_offset == 1  # one-based mask names, as released
    assert info.train_ids == list(range(100)) and info.test_ids == list(range(100, 200))
    assert info.intrinsics.fx == pytest.approx(371.2)
    assert info.points3d_path is not None
    imgs = load_images(info, info.test_ids[:3])
    assert imgs.dtype == np.uint8 and imgs.shape == (3, 256, 256, 3)
    # composited onto white: the corners (background in the mask) are white
    assert (imgs[:, :4, :4] >= 250).all()


@needs_fixture
def test_cameras_json_matches_the_release(tmp_path):
    scene = Scene(FIXTURE / "data", test_frames=100, eval_frames=100, load_train=False)
    from scene.run_folder import write_cameras_json

    info = scene.info
    write_cameras_json(tmp_path / "cameras.json", info.test_frames + info.train_frames,
                       info.intrinsics)
    ours = json.loads((tmp_path / "cameras.json").read_text())
    ref = json.loads((FIXTURE / "model" / "cameras.json").read_text())
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a["img_name"] == b["img_name"] and a["id"] == b["id"]
        np.testing.assert_allclose(a["position"], b["position"], atol=1e-9)
        np.testing.assert_allclose(a["rotation"], b["rotation"], atol=1e-9)
        assert a["fx"] == pytest.approx(b["fx"]) and a["fy"] == pytest.approx(b["fy"])


# ---------------------------------------------------------------------------- split rules


def test_split_holds_out_the_last_frames(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=10)
    info = read_dataset(root, test_frames=4, eval_frames=2)
    assert info.train_ids == list(range(6))
    assert info.test_ids == [8, 9]
    assert not set(info.train_ids) & set(range(6, 10))  # held-out frames never trained on
    info = read_dataset(root, test_frames=4, eval_frames=50)  # more than held out
    assert info.test_ids == [6, 7, 8, 9]
    info = read_dataset(root, test_frames=0, eval_frames=50)
    assert info.train_ids == list(range(10)) and info.test_ids == []


def test_each_training_frame_appears_once(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=10)
    scene = Scene(root, test_frames=3, eval_frames=3)
    ids = [c.img_id for c in scene.train_cameras]  # img_id k is frame k here
    assert ids == list(range(7))  # no duplicates (the release trained twice on each)


def test_is_debug_keeps_the_first_50_training_frames(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=60, size=8)
    info = read_dataset(root, test_frames=5, eval_frames=5, is_debug=True)
    assert info.train_ids == list(range(50)) and info.test_ids == list(range(55, 60))


# ------------------------------------------------------------ masks, principal point


@pytest.mark.parametrize("offset", [0, 1])
def test_mask_offset_is_detected(tmp_path, offset):
    root = write_tiny_dataset(tmp_path / "d", n=4, mask_offset=offset)
    info = read_dataset(root, test_frames=1, eval_frames=1)
    assert info.mask_offset == offset
    assert any(("one-based" if offset else "zero-based") in n for n in info.notes)
    assert info.frames[2].mask_path.name == f"{2 + offset}.png"


def test_background_colour_is_applied(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=3)
    info = read_dataset(root, test_frames=1, eval_frames=1)
    white = load_images(info, [0], (1.0, 1.0, 1.0))[0]
    black = load_images(info, [0], (0.0, 0.0, 0.0))[0]
    assert (white[0, 0] == 255).all() and (black[0, 0] == 0).all()
    assert np.abs(white[8, 8].astype(int) - black[8, 8].astype(int)).max() <= 1  # subject


def test_only_head_masks_with_the_parsing_map(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=3)
    # keep only a quarter of the head in the parsing map; the rest must become background
    par = np.full((16, 16, 3), 255, np.uint8)
    par[:8, :8] = (255, 0, 0)  # BGR for RGB (0, 0, 255)
    import cv2

    for i in range(3):
        cv2.imwrite(str(root / "parsing" / f"{i}.png"), par)
    info = read_dataset(root, test_frames=1, eval_frames=1, only_head=True)
    img = load_images(info, [0])[0]
    assert (img[12, 12] == 255).all()  # inside the mask but not head: background
    assert not (img[7, 7] == 255).all()


def test_principal_point_is_honoured(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=3, cx=5.0)
    info = read_dataset(root, test_frames=1, eval_frames=1)
    cam = Camera(intr=info.intrinsics, c2w_gl=info.frames[0].c2w,
                 exp=torch.zeros(5))
    K = cam.K()
    assert float(K[0, 2]) == 5.0 and float(K[1, 2]) == 8.0
    assert float(cam.K(centred=True)[0, 2]) == 8.0  # the release's convention (legacy only)
    # a point on the optical axis projects to (cx, cy)
    p = torch.tensor(cam.c2w_gl[:3, 3] - 0.4 * cam.c2w_gl[:3, 2], dtype=torch.float32)
    pc = cam.viewmat()[:3, :3] @ p + cam.viewmat()[:3, 3]
    uv = (K @ pc)[:2] / pc[2]
    np.testing.assert_allclose(uv.numpy(), [5.0, 8.0], atol=1e-4)


def test_resolution_scales_images_and_intrinsics(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=3)
    info = read_dataset(root, test_frames=1, eval_frames=1, resolution=2)
    assert (info.intrinsics.width, info.intrinsics.height) == (8, 8)
    assert info.intrinsics.fx == pytest.approx(1.45 * 8)
    assert load_images(info, [0]).shape == (1, 8, 8, 3)


def test_images_are_held_as_uint8(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=4)
    scene = Scene(root, test_frames=1, eval_frames=1)
    assert scene.images.images.dtype == torch.uint8
    # 5000 frames of 512x512 would take 5000 * 512 * 512 * 3 bytes = 3.9 GB < 5 GB
    assert 5000 * 512 * 512 * scene.images.images.element_size() * 3 < 5e9
    gt = scene.gt(scene.train_cameras[0], "cpu")
    assert gt.dtype == torch.float32 and gt.shape == (3, 16, 16) and gt.max() <= 1.0


def test_random_points_lie_in_the_visual_hull(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=6, size=32)
    scene = Scene(root, test_frames=1, eval_frames=1)
    pts, note = scene.initial_points(2000, seed=0)
    assert "visual hull" in note and len(pts) == 2000
    # every point projects inside the disc mask of the first frame
    cam = scene.train_cameras[0]
    vm, K = cam.viewmat().double(), cam.K().double()
    pc = torch.from_numpy(pts).double() @ vm[:3, :3].T + vm[:3, 3]
    uv = (pc @ K.T)[:, :2] / pc[:, 2:]
    r = (uv - 16).norm(dim=1)
    assert (pc[:, 2] > 0).all() and (r < 32 / 3 + 2).float().mean() > 0.97


# ---------------------------------------------------------------------------- bad input


def _err(root, **kw) -> str:
    with pytest.raises(UserError) as ei:
        info = read_dataset(root, **{"test_frames": 1, "eval_frames": 1, **kw})
        load_images(info, info.train_ids + info.test_ids)
    return str(ei.value)


def test_missing_folder(tmp_path):
    msg = _err(tmp_path / "nope")
    assert "nope" in msg and "Fix" in msg


def test_missing_transforms(tmp_path):
    (tmp_path / "d").mkdir()
    msg = _err(tmp_path / "d")
    assert "transforms.json" in msg and "Fix" in msg


def test_invalid_json(tiny):
    (tiny / "transforms.json").write_text('{"h": 16, "w": 16,\n "frames": [}')
    msg = _err(tiny)
    assert "not valid JSON" in msg and "line 2" in msg


@pytest.mark.parametrize("key", ["h", "w", "fx", "fy", "cx", "cy", "frames"])
def test_missing_top_level_key(tiny, key):
    edit_transforms(tiny, lambda m: m.pop(key))
    msg = _err(tiny)
    assert f"'{key}'" in msg and "transforms.json" in msg


@pytest.mark.parametrize("key,value", [("h", "16"), ("fx", None), ("w", -3), ("frames", {})])
def test_wrong_typed_top_level_key(tiny, key, value):
    edit_transforms(tiny, lambda m: m.__setitem__(key, value))
    msg = _err(tiny)
    assert f"'{key}'" in msg


@pytest.mark.parametrize("key", ["img_id", "transform_matrix", "exp_ori"])
def test_missing_frame_key(tiny, key):
    edit_transforms(tiny, lambda m: m["frames"][3].pop(key))
    msg = _err(tiny)
    assert "frames[3]" in msg and f"'{key}'" in msg


@pytest.mark.parametrize("key,value", [("img_id", "3"), ("transform_matrix", [[1, 0], [0, 1]]),
                                       ("exp_ori", "abc"), ("exp_ori", [])])
def test_wrong_typed_frame_key(tiny, key, value):
    edit_transforms(tiny, lambda m: m["frames"][2].__setitem__(key, value))
    msg = _err(tiny)
    assert "frames[2]" in msg and f"'{key}'" in msg


def test_empty_frames(tiny):
    edit_transforms(tiny, lambda m: m.__setitem__("frames", []))
    assert "'frames' is empty" in _err(tiny)


def test_missing_images_are_listed(tiny):
    for i in (1, 2, 4):
        os.remove(tiny / "ori_imgs" / f"{i}.jpg")
    msg = _err(tiny)
    assert "3 frame image(s) missing" in msg and "1, 2, 4" in msg


def test_png_frames_are_accepted(tiny):
    import cv2

    img = cv2.imread(str(tiny / "ori_imgs" / "0.jpg"))
    os.remove(tiny / "ori_imgs" / "0.jpg")
    cv2.imwrite(str(tiny / "ori_imgs" / "0.png"), img)
    info = read_dataset(tiny, test_frames=1, eval_frames=1)
    assert info.frames[0].image_path.suffix == ".png"


def test_corrupt_image(tiny):
    (tiny / "ori_imgs" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    msg = _err(tiny)
    assert "2.jpg" in msg and "img_id 2" in msg and "corrupt" in msg


def test_image_size_disagrees_with_transforms(tiny):
    import cv2

    cv2.imwrite(str(tiny / "ori_imgs" / "1.jpg"), np.zeros((20, 16, 3), np.uint8))
    msg = _err(tiny)
    assert "1.jpg" in msg and "16x20" in msg and "w=16, h=16" in msg


def test_mask_of_the_wrong_size(tiny):
    import cv2

    cv2.imwrite(str(tiny / "mask" / "3.png"), np.zeros((8, 8), np.uint8))  # img_id 2, one-based
    msg = _err(tiny)
    assert "3.png" in msg and "mask" in msg and "img_id 2" in msg


def test_missing_masks(tiny):
    os.remove(tiny / "mask" / "4.png")
    msg = _err(tiny)
    assert "no mask for img_id 3" in msg


def test_exp_lengths_differ(tiny):
    edit_transforms(tiny, lambda m: m["frames"][4].__setitem__("exp_ori", [0.1, 0.2]))
    msg = _err(tiny)
    assert "frames[4]" in msg and "exp_ori" in msg and "same length" in msg


@pytest.mark.parametrize("bad", ["nan", "singular"])
def test_bad_transform_matrix(tiny, bad):
    def edit(m):
        mat = m["frames"][1]["transform_matrix"]
        if bad == "nan":
            mat[0][3] = float("nan")
        else:
            mat[0] = [0.0, 0.0, 0.0, 0.0]
    edit_transforms(tiny, edit)
    msg = _err(tiny)
    assert "frames[1]" in msg and ("NaN" in msg if bad == "nan" else "not invertible" in msg)


def test_test_frames_leave_no_training_frame(tiny):
    with pytest.raises(OptionError) as ei:
        read_dataset(tiny, test_frames=6)
    assert "--test_frames 6" in str(ei.value) and "below 6" in str(ei.value)


def test_only_head_without_parsing(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", n=3, parsing=False)
    os.rmdir(root / "parsing")
    msg = _err(root, only_head=True)
    assert "--only_head" in msg and "parsing" in msg


def test_duplicate_img_id(tiny):
    edit_transforms(tiny, lambda m: m["frames"][2].__setitem__("img_id", 1))
    assert "img_id 1 appears" in _err(tiny)


def test_train_py_reports_bad_data_without_traceback_or_output(tiny, tmp_path):
    (tiny / "ori_imgs" / "2.jpg").write_bytes(b"garbage")
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "train.py", "-s", str(tiny), "-m", str(out), "--test_frames", "1",
         "--iterations", "5"], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "GH_TRACEBACK": ""})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "2.jpg" in r.stderr and "Fix" in r.stderr
    assert not out.exists()  # nothing written before the data were checked


def test_dataset_error_is_a_user_error():
    assert issubclass(DatasetError, UserError)
