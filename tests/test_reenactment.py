"""Cross-identity reenactment: retargeting named codes and head motion (utils/retarget.py,
scene/render_sets.plan_driving) and the clear errors for spaces that cannot be mixed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scene.dataset_readers import read_dataset
from scene.render_sets import plan_driving
from tests.helpers import edit_transforms, write_tiny_dataset
from utils.errors import DatasetError, OptionError
from utils.retarget import mean_pose, parse_gains, retarget_codes, retarget_poses

NAMES = ["jawOpen", "mouthSmileLeft", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp"]
SPACE = "gaussianhead-named-v1"


def _named(root, neutral=None, names=NAMES, space=SPACE):
    def fn(meta):
        meta["exp_names"], meta["exp_space"] = list(names), space
        meta["exp_neutral"] = list(neutral if neutral is not None else [0.0] * len(names))
    edit_transforms(root, fn)
    return root


def _poses(n, seed):
    rng = np.random.default_rng(seed)
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.1, (n, 3))).as_matrix()
    out[:, :3, 3] = rng.normal(0, 0.02, (n, 3)) + [0, 0, 0.5]
    return out


def test_mean_pose_and_retargeted_poses():
    poses = _poses(20, 0)
    m = mean_pose(poses)
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(m[:3, 3], poses[:, :3, 3].mean(0))
    # driving an avatar with its own clip gives back its own poses
    np.testing.assert_allclose(retarget_poses(poses, m, m), poses, atol=1e-12)
    # a driver who sits elsewhere before the camera (its head moved by G in the camera's
    # frame: camera-to-head c2h @ inv(G)) drives the same motion, up to the second-order
    # difference between the mean of rotations and the rotation of the mean
    g = np.eye(4)
    g[:3, :3] = Rotation.from_euler("y", 25, degrees=True).as_matrix()
    g[:3, 3] = [0.1, -0.05, 0.2]
    moved = poses @ np.linalg.inv(g)
    avatar_mean = mean_pose(_poses(30, 1))
    np.testing.assert_allclose(retarget_poses(moved, mean_pose(moved), avatar_mean),
                               retarget_poses(poses, m, avatar_mean), atol=3e-3)
    # the retargeted poses sit about the avatar's mean
    out = retarget_poses(moved, mean_pose(moved), avatar_mean)
    np.testing.assert_allclose(mean_pose(out), avatar_mean, atol=3e-3)


def test_gains_and_codes():
    np.testing.assert_array_equal(parse_gains(None, NAMES), np.ones(5))
    np.testing.assert_array_equal(parse_gains("1.5", NAMES), np.full(5, 1.5))
    np.testing.assert_array_equal(parse_gains("jawOpen=1.2, eyeBlinkLeft=0", NAMES),
                                  [1.2, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="'smile=2' is not NAME=GAIN"):
        parse_gains("smile=2", NAMES)
    with pytest.raises(ValueError, match="gain of jawOpen must be a number"):
        parse_gains("jawOpen=big", NAMES)
    driver = np.array([[0.2, 0.5, 1.0, 0.0, 0.3]])
    out = retarget_codes(driver, np.array([0.1, 0.0, 0.0, 0.0, 0.3]),
                         np.array([0.0, 0.1, 0.0, 0.0, 0.0]), np.array([2.0, 1, 1, 1, 1]))
    np.testing.assert_allclose(out, [[0.2, 0.6, 1.0, 0.0, 0.0]], atol=1e-6)


@pytest.fixture
def pair(tmp_path):
    avatar = _named(write_tiny_dataset(tmp_path / "a", n=6, exp_dim=5, seed=0),
                    neutral=[0.1, 0, 0, 0, 0])
    driver = _named(write_tiny_dataset(tmp_path / "b", n=9, exp_dim=5, seed=1),
                    neutral=[0.05, 0, 0, 0, 0])
    return avatar, driver, read_dataset(avatar, test_frames=2, eval_frames=2)


def test_named_driving_is_retargeted_and_limited_by_max_frames(pair):
    avatar, driver, info = pair
    assert info.expression.named and info.expression.names == tuple(NAMES)
    d = plan_driving(driver, info, 5, use_pose=False, gains="jawOpen=2", max_frames=4)
    drv = read_dataset(driver, test_frames=2, eval_frames=2)
    raw = np.stack([f.exp for f in drv.frames])[:4]
    want = np.clip(np.array([0.1, 0, 0, 0, 0]) + [2, 1, 1, 1, 1] * (raw - [0.05, 0, 0, 0, 0]),
                   0, 1)
    assert d.retargeted and len(d.c2w) == 4 and d.exps.shape == (4, 5)
    np.testing.assert_allclose(d.exps, want, atol=1e-6)
    # the avatar's own test poses, cycled
    test = info.test_frames
    for k in range(4):
        np.testing.assert_array_equal(d.c2w[k], test[k % len(test)].c2w)
    # with the driver's poses: its motion about its mean put on the avatar's mean
    d = plan_driving(driver, info, 5, use_pose=True)
    assert len(d.c2w) == 9
    drv_c2w = np.stack([f.c2w for f in drv.frames])
    want = retarget_poses(drv_c2w, mean_pose(drv_c2w), mean_pose(np.stack(
        [f.c2w for f in info.frames])))
    np.testing.assert_allclose(np.stack(d.c2w), want, atol=1e-9)


def test_spaces_that_cannot_be_mixed_are_clear_errors(pair, tmp_path):
    avatar, driver, info = pair
    unnamed = write_tiny_dataset(tmp_path / "u", n=4, exp_dim=5, seed=2)
    with pytest.raises(DatasetError, match=r"one is named, the other is not\. Fix: make both"):
        plan_driving(unnamed, info, 5, use_pose=False)
    other = _named(write_tiny_dataset(tmp_path / "o", n=4, exp_dim=5, seed=3),
                   names=NAMES[:4] + ["cheekPuff"])
    with pytest.raises(DatasetError, match="exp_names differ .coefficient 4: cheekPuff against "
                                           "browInnerUp"):
        plan_driving(other, info, 5, use_pose=False)
    old = _named(write_tiny_dataset(tmp_path / "v", n=4, exp_dim=5, seed=3), space="other-v0")
    with pytest.raises(DatasetError, match="different spaces"):
        plan_driving(old, info, 5, use_pose=False)
    with pytest.raises(OptionError, match="--driving_gain: 'nose=2'"):
        plan_driving(driver, info, 5, use_pose=False, gains="nose=2")
    # unnamed data drive an unnamed avatar of the same length as they are (no gains)
    plain = read_dataset(unnamed, test_frames=2, eval_frames=2)
    d = plan_driving(write_tiny_dataset(tmp_path / "u2", n=3, exp_dim=5, seed=4), plain, 5,
                     use_pose=False)
    assert not d.retargeted and len(d.c2w) == 3
    with pytest.raises(OptionError, match="--driving_gain needs named expressions"):
        plan_driving(unnamed, plain, 5, use_pose=False, gains="1.2")
    with pytest.raises(DatasetError, match="its expressions have 7 values, the avatar's 5"):
        plan_driving(write_tiny_dataset(tmp_path / "u3", n=3, exp_dim=7), plain, 5, False)


def test_malformed_space_keys_are_clear_errors(tmp_path):
    root = _named(write_tiny_dataset(tmp_path / "a", n=4, exp_dim=5), names=NAMES[:3])
    with pytest.raises(DatasetError, match="'exp_names' has 3 names but 'exp_ori' has 5"):
        read_dataset(root, test_frames=2, eval_frames=2)
    root = _named(write_tiny_dataset(tmp_path / "b", n=4, exp_dim=5), neutral=[0.0, 1.0])
    with pytest.raises(DatasetError, match="'exp_neutral' must be 5 finite numbers"):
        read_dataset(root, test_frames=2, eval_frames=2)
