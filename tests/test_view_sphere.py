"""Where the head's first Gaussians are sought (scene.cameras.view_sphere, --head_centre): a
monocular clip's nearly parallel optical axes do not fix the head's depth, so the centre is
drawn towards the head frame's origin; cameras that circle a point still find it."""

import math

import numpy as np
import pytest

from scene.cameras import view_sphere
from scene.dataset_readers import Intrinsics
from tests.helpers import look_at_c2w

INTR = Intrinsics(width=256, height=256, fx=300.0, fy=300.0, cx=128.0, cy=128.0)


def _webcam(crossing, yaw_deg=3.0, n=40, distance=0.7):
    """A webcam clip in the head frame: the head turns a few degrees, and the tracker's
    jitter makes the optical axes cross at ``crossing`` instead of the head's centre."""
    cams = []
    for k in range(n):
        yaw = math.radians(yaw_deg * math.sin(2 * math.pi * k / n))
        pos = distance * np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        cams.append(look_at_c2w(pos, crossing))
    return cams


def test_a_monocular_clip_centres_on_the_head_not_on_the_axes_crossing():
    cams = _webcam(crossing=[0.0, 0.0, 0.2])
    axes, _ = view_sphere(cams, INTR, prior=0.0)
    assert axes[2] == pytest.approx(0.2, abs=1e-3)  # the crossing alone: 0.2 in front
    centre, radius = view_sphere(cams, INTR)
    assert abs(centre[2]) < 0.02 and abs(centre[0]) < 1e-3
    # the radius is the field of view's half-diagonal at the cameras' distance from the centre
    assert radius == pytest.approx(0.7 * math.hypot(128 / 300, 128 / 300), rel=0.03)


def test_cameras_that_circle_a_point_still_find_it():
    target = np.array([0.05, -0.02, 0.03])
    cams = [look_at_c2w(target + 0.6 * np.array([math.sin(a), 0.3 * math.cos(3 * a), math.cos(a)]),
                    target) for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    centre, _ = view_sphere(cams, INTR)
    # drawn towards the origin by at most an eighth or so of the way
    assert np.linalg.norm(centre - target) < 0.2 * np.linalg.norm(target)
    exact, _ = view_sphere(cams, INTR, prior=0.0)
    np.testing.assert_allclose(exact, target, atol=1e-6)


def test_head_centre_option_picks_the_sphere(tmp_path):
    from scene import Scene
    from tests.helpers import write_tiny_dataset

    scene = Scene(write_tiny_dataset(tmp_path / "d", n=6, size=32), test_frames=1,
                  eval_frames=1)
    a, _ = scene.initial_points(500, seed=0, centre="origin")
    b, _ = scene.initial_points(500, seed=0, centre="axes")
    assert a.shape == b.shape == (500, 3)
    with pytest.raises(ValueError, match="head centre"):
        scene.initial_points(10, seed=0, centre="nowhere")
