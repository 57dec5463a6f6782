"""--lambda_virtual_depth: the turned camera and the depth-roughness term it is scored by."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scene.cameras import Camera
from scene.dataset_readers import Intrinsics
from training.virtual_views import VirtualViews, depth_roughness


def _camera() -> Camera:
    c2w = np.eye(4)
    c2w[:3, 3] = [0.05, 0.02, 0.6]
    return Camera(intr=Intrinsics(64, 48, 80.0, 80.0, 32.0, 24.0), c2w_gl=c2w,
                  exp=torch.zeros(3))


def test_a_slanted_plane_is_smooth_and_a_step_or_a_spike_is_not():
    h, w = 20, 30
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                          torch.arange(w, dtype=torch.float32), indexing="ij")
    alpha = torch.ones(1, h, w)
    plane = (0.5 + 0.01 * x + 0.02 * y)[None]
    assert float(depth_roughness(plane, alpha, unit=0.1)) < 1e-6
    step = plane.clone()
    step[:, :, 15:] += 0.05
    spike = plane.clone()
    spike[:, 10, 10] += 0.05
    rough_step = float(depth_roughness(step, alpha, unit=0.1))
    rough_spike = float(depth_roughness(spike, alpha, unit=0.1))
    assert rough_step > 1e-3 and rough_spike > 1e-3
    # the unit scales it; pixels left uncovered do not count
    assert math.isclose(float(depth_roughness(step, alpha, unit=0.2)), rough_step / 2,
                        rel_tol=0.05)
    holes = alpha.clone()
    holes[:, :, 13:17] = 0.2  # the step lies in pixels below the alpha threshold
    assert float(depth_roughness(step, holes, unit=0.1)) < 1e-6
    assert float(depth_roughness(step, torch.zeros(1, h, w), unit=0.1)) == 0.0


def test_gradient_flattens_a_spike_and_never_reaches_alpha():
    depth = torch.full((1, 9, 9), 0.5)
    depth[0, 4, 4] = 0.6
    depth.requires_grad_(True)
    alpha = torch.ones(1, 9, 9, requires_grad=True)
    depth_roughness(depth, alpha, unit=0.1).backward()
    assert depth.grad[0, 4, 4] > 0  # descending lowers the spike
    assert alpha.grad is None


def test_turned_camera_orbits_the_head_centre_at_the_reduced_size():
    cam = _camera()
    centre = np.array([0.0, 0.01, -0.02])
    views = VirtualViews(max_yaw=30, scale=0.5, centre=centre, radius=0.1, seed=3)
    same = views.camera(cam, yaw_deg=0.0)
    np.testing.assert_allclose(same.c2w_gl, cam.c2w_gl, atol=1e-12)
    turned = views.camera(cam, yaw_deg=30.0)
    assert (turned.width, turned.height) == (32, 24)
    assert math.isclose(turned.intr.fx, 40.0) and math.isclose(turned.intr.cy, 12.0)
    # the same distance from the centre, the same height, turned by 30 degrees about y
    a, b = cam.c2w_gl[:3, 3] - centre, turned.c2w_gl[:3, 3] - centre
    assert math.isclose(np.linalg.norm(a), np.linalg.norm(b), rel_tol=1e-9)
    assert math.isclose(a[1], b[1], abs_tol=1e-12)
    cos = (a[[0, 2]] @ b[[0, 2]]) / (np.linalg.norm(a[[0, 2]]) * np.linalg.norm(b[[0, 2]]))
    assert math.isclose(math.degrees(math.acos(cos)), 30.0, abs_tol=1e-6)
    # the body and the colour's light stay with the capture camera
    np.testing.assert_array_equal(turned.capture_c2w, cam.c2w_gl)
    yaws = np.array([views.yaw() for _ in range(400)])
    assert np.all(np.abs(yaws) >= 10 - 1e-9) and np.all(np.abs(yaws) <= 30)
    assert (yaws > 0).mean() == pytest.approx(0.5, abs=0.1)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="yaw"):
        VirtualViews(max_yaw=95, scale=0.5, centre=np.zeros(3), radius=0.1)
    with pytest.raises(ValueError, match="scale"):
        VirtualViews(max_yaw=30, scale=0.0, centre=np.zeros(3), radius=0.1)


def test_training_with_the_term_moves_the_head_gaussians_through_it(tmp_path):
    """A CPU trainer with --lambda_virtual_depth: the step reports the term, and its gradient
    alone reaches the head's positions."""
    from tests.test_fast_path import _cpu_trainer
    from tools.make_synthetic import make_synthetic
    from utils.errors import OptionError

    data = make_synthetic(tmp_path / "data", frames=6, res=24, seed=4)
    with pytest.raises(OptionError, match="virtual_yaw"):
        _cpu_trainer(tmp_path / "bad", data, graphs=False, lambda_virtual_depth=1.0,
                     virtual_yaw=120.0)
    t = _cpu_trainer(tmp_path / "run", data, graphs=False, lambda_virtual_depth=1.0,
                     virtual_every=1)
    terms = t.step(1)
    assert "virtual_depth" in terms and float(terms["virtual_depth"]) > 0
    cam = t.scene.train_cameras[0]
    _, _, campos, exp = cam.tensors("cpu")
    g, _ = t.frame_networks.frame(exp, campos, False, cam.capture("cpu"))
    term = t.virtual.term(t.model, g, t.model.num_gaussians, cam, t.background, "torch")
    t.model.zero_grad(set_to_none=True)
    term.backward()
    assert t.model.xyz.grad is not None and t.model.xyz.grad.abs().sum() > 0
    body_grad = t.model.body.xyz.grad  # the body is not in the turned view
    assert body_grad is None or not body_grad.any()
