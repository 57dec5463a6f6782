"""--body_prune: the body's silhouette over the surface's grid, and the pruning of body
Gaussians that leave it (over the head)."""

from __future__ import annotations

import numpy as np
import torch

from scene.body_model import BodyGaussians
from scene.body_shape import SURFACE_GRID, fit_body_surface


def _surface():
    h = w = 64
    region = np.zeros((h, w), bool)
    region[40:, 8:56] = True  # a torso in the lower part of the frame
    return fit_body_surface(region, fx=60.0, fy=60.0, cx=32.0, cy=32.0, head_depth=1.0,
                            head_half_width=0.1)


def test_silhouette_on_the_grid_and_inside_test():
    s = _surface()
    assert s.inside.shape == (SURFACE_GRID, SURFACE_GRID) and s.inside.dtype == bool
    assert s.inside[-1, SURFACE_GRID // 2] and not s.inside[0, SURFACE_GRID // 2]
    body = BodyGaussians(0, shape="surface")
    pts = np.array([[0.0, -0.3, -1.0], [0.0, 0.4, -1.0]])  # below the centre, above it
    body.init_from_points(pts, np.full((2, 3), 0.5), np.eye(4)[None], length=0.1, surface=s,
                          ref_depth=1.0)
    xy = body.xyz.detach()[:, :2]
    assert body.in_silhouette(xy).tolist() == [True, False]
    # a model saved before the silhouette: everywhere inside
    sd = {k: v for k, v in body.state_dict().items() if k != "surface_inside"}
    old = BodyGaussians(2, shape="surface")
    old.load_state_dict(sd)
    assert old.in_silhouette(xy).all()
    assert BodyGaussians(2, shape="slab").in_silhouette(xy).all()


def test_body_prune_removes_body_gaussians_over_the_head(tmp_path):
    import train
    from tools import make_synthetic as ms

    data = ms.make_synthetic(tmp_path / "d", frames=12, res=48, seed=0, novel_yaws=())
    common = ["-s", str(data), "--eval", "--iterations", "4", "--test_frames", "2",
              "--init_points", "300", "--body_points", "300", "--device", "cpu", "--quiet",
              "--test_iterations", "4", "--save_iterations", "4"]
    for prune in (True, False):
        t = train.train([*common, "-m", str(tmp_path / f"run{prune}"), "--body_prune",
                         str(prune).lower()])
        b = t.model.body
        assert b.shape == "surface" and b.num_gaussians > 50
        with torch.no_grad():
            # they started on the silhouette (a few may have crossed its edge since)
            assert b.in_silhouette(b.xyz[:, :2]).float().mean() > 0.95
            # five of them move up over the head (the head's centre is the view's origin)
            b.xyz[:5, :2] = 0.0
            assert not b.in_silhouette(b.xyz[:5, :2]).any()
        t.body_densifier.densify_and_prune(b, t.optimizers, t.extent, 4.0)
        outside = int((~b.in_silhouette(b.xyz.detach()[:, :2])).sum())
        if prune:
            assert outside == 0
        else:
            assert outside >= 5
