"""tools/make_synthetic.py's people and reenactment ground truth: --identity changes the face
(shape and colours) and nothing of the motion; --driver_seed renders a person performing
another seed's sequence, its motion about its mean pose put on the person's own mean pose."""

from __future__ import annotations

import json

import numpy as np

from tools import make_synthetic as ms
from utils.retarget import mean_pose

RES, FRAMES = 48, 6


def _load(out):
    return (json.loads((out / "synthetic_gt.json").read_text()),
            json.loads((out / "transforms.json").read_text()))


def test_identities_differ_in_face_and_share_the_motion(tmp_path):
    a = ms.make_synthetic(tmp_path / "a", frames=FRAMES, res=RES, seed=3, identity=1,
                          novel_yaws=())
    b = ms.make_synthetic(tmp_path / "b", frames=FRAMES, res=RES, seed=3, identity=2,
                          novel_yaws=())
    (ga, ta), (gb, tb) = _load(a), _load(b)
    assert ga["controls"] == gb["controls"] and ga["head_to_world"] == gb["head_to_world"]
    assert [f["exp_ori"] for f in ta["frames"]] == [f["exp_ori"] for f in tb["frames"]]
    assert ga["face_shape"] != gb["face_shape"] and ga["identity"] == 1
    shape = ms.make_identity(1)
    assert ga["face_shape"]["jaw_width"] == shape.jaw_width
    # a wider head covers more of the image: compare the masks of the same frame
    wa, wb = (ms.build_world(RES, 3, identity=i) for i in (1, 2))
    pose = np.eye(4)
    area = [ms.render_frame(w, {}, pose).mask.astype(float).sum() for w in (wa, wb)]
    wide = [ms.make_identity(i).scale[0] * ms.make_identity(i).scale[1] for i in (1, 2)]
    assert (area[0] > area[1]) == (wide[0] > wide[1]) and abs(area[0] - area[1]) > 0.01 * area[0]
    assert not np.allclose(wa.appearance.skin, wb.appearance.skin)
    # without --identity the base head of earlier versions
    base = ms.build_world(RES, 3)
    assert base.identity == ms.BASE_IDENTITY


def test_driver_seed_is_the_ground_truth_of_retargeting(tmp_path):
    own = 12  # frames of the person's own sequence (its mean pose)
    gt = ms.make_synthetic(tmp_path / "gt", frames=FRAMES, res=RES, seed=3, identity=1,
                           driver_seed=8, pose_mean_frames=own, novel_yaws=())
    g, t = _load(gt)
    controls, driver_poses = ms.make_trajectories(FRAMES, 8)
    np.testing.assert_allclose(g["controls"], controls)
    assert g["driver_seed"] == 8 and g["pose_mean_frames"] == own
    cam = np.array(g["camera_to_world"])
    c2h = np.array([f["transform_matrix"] for f in t["frames"]])
    _, own_poses = ms.make_trajectories(own, 3)
    driver_c2h = np.linalg.inv(driver_poses) @ cam
    # the head's motion between frames (head-to-camera of frame 0 undone) is the driver's
    for i in range(1, FRAMES):
        np.testing.assert_allclose(c2h[0] @ np.linalg.inv(c2h[i]),
                                   driver_c2h[0] @ np.linalg.inv(driver_c2h[i]), atol=1e-9)
    # and it sits about the person's own mean pose
    want = driver_c2h @ np.linalg.inv(mean_pose(driver_c2h)) @ mean_pose(
        np.linalg.inv(own_poses) @ cam)
    np.testing.assert_allclose(c2h, want, atol=1e-9)
    np.testing.assert_allclose(np.array(g["head_to_world"]), cam @ np.linalg.inv(c2h),
                               atol=1e-9)
