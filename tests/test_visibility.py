"""--unseen_prune (training/visibility.py): a Gaussian's blending weight in a frame, the frames
looked through, and the pruning at the end of training."""

from __future__ import annotations

import math

import numpy as np
import torch

from scene.cameras import Camera
from scene.dataset_readers import Intrinsics
from scene.gaussian_model import FrameGaussians, GaussianHead, ModelConfig
from tests.helpers import look_at_c2w
from training.visibility import blending_weights, pick_views

INTR = Intrinsics(width=48, height=48, fx=60.0, fy=60.0, cx=24.0, cy=24.0)


def _scene_of(means, opacities, scale=0.04):
    """A head model whose frame Gaussians are exactly these spheres (no body)."""
    model = GaussianHead(ModelConfig(exp_dim=2, body=False))
    model.init_from_points(np.asarray(means, dtype=np.float32))
    n = len(means)
    g = FrameGaussians(means=torch.tensor(means, dtype=torch.float32),
                       opacities=torch.tensor(opacities, dtype=torch.float32),
                       sh=torch.zeros(n, 16, 3),
                       quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n),
                       scales=torch.full((n, 3), scale))
    model.derive = lambda exp, view: g  # the frame's Gaussians, whatever the expression
    return model, g


def test_weight_is_the_pixels_alpha_times_transmittance():
    """A Gaussian alone in its part of the image weighs its rendered alpha summed over the
    image; one right behind an opaque wall of Gaussians weighs next to nothing."""
    wall = [[x, y, 0.0] for x in np.linspace(-0.08, 0.08, 5) for y in np.linspace(-0.08, 0.08, 5)]
    means = wall + [[0.0, 0.0, -0.15], [0.3, 0.0, 0.0]]  # behind the wall; beside it
    model, g = _scene_of(means, [0.99] * len(wall) + [0.99, 0.6])
    cam = Camera(intr=INTR, c2w_gl=look_at_c2w([0.0, 0.0, 1.0]), exp=torch.zeros(2))
    w = blending_weights(model, [cam], 0, "torch", torch.device("cpu"))
    assert w.shape == (len(means),)
    hidden, beside = float(w[-2]), float(w[-1])
    assert hidden < 1e-3 * beside

    from gaussian_renderer import rasterize
    viewmat, K, _, _ = cam.tensors("cpu")
    alone = rasterize(g.means[-1:], g.quats[-1:], g.scales[-1:], g.opacities[-1:],
                      torch.ones(1, 3), viewmat, K, 48, 48, torch.zeros(3),
                      **model.raster_options)
    assert beside > 1.0
    # (the wall's outermost tails reach its pixels a little)
    assert math.isclose(beside, float(alone.alpha.sum()), rel_tol=3e-3)


def test_views_cover_the_clip_and_each_coefficients_extremes():
    exps = torch.zeros(20, 3)
    exps[:, 0] = torch.linspace(0, 1, 20)  # varies most
    exps[7, 1] = 5.0  # a single wide-open mouth
    exps[13, 1] = -1.0
    cams = [Camera(intr=INTR, c2w_gl=np.eye(4), exp=e) for e in exps]
    picked = pick_views(cams, 6)
    assert len(picked) == 6 and picked == sorted(set(picked))
    assert {0, 19, 7, 13} <= set(picked)  # the spread's ends and coefficient 1's extremes
    assert pick_views(cams, 40) == list(range(20))


def test_unseen_head_gaussians_are_pruned_at_the_end_of_training(tmp_path):
    """A run with --unseen_prune ends without the head Gaussians its frames never see: a
    Gaussian moved far behind the head is gone, the densification state and the optimizers
    follow the smaller set, and training can go on."""
    from tests.test_fast_path import _cpu_trainer
    from tools.make_synthetic import make_synthetic
    from training.visibility import prune_unseen

    data = make_synthetic(tmp_path / "data", frames=6, res=24, seed=1)
    t = _cpu_trainer(tmp_path / "run", data, graphs=False, unseen_prune=50.0, unseen_views=4)
    m = t.model
    for it in range(1, 4):
        t.step(it)
    with torch.no_grad():
        m.xyz[:5] = torch.tensor([0.0, 0.0, -3.0])  # far behind the head, outside every view
    n = m.num_gaussians
    removed = prune_unseen(t, 3)
    assert 5 <= removed < n and m.num_gaussians == n - removed
    assert not (m.xyz.detach()[:, 2] < -2.0).any()
    assert len(t.densifier) == m.num_gaussians
    for opt in t.optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                for v in opt.state.get(p, {}).values():
                    if torch.is_tensor(v) and v.dim() > 0 and p.shape[0] != v.shape[0]:
                        raise AssertionError("optimizer state of the old size")
    t.step(4)
