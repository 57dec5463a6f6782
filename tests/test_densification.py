"""Densification invariants: after every structural change, every per-Gaussian tensor, its
optimizer moments, the derivations and their moments agree in length and stay trainable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arguments import OptimizationParams
from scene.gaussian_model import PER_GAUSSIAN, GaussianHead, ModelConfig
from training.densification import Densifier, DensifyConfig, remap_gaussians
from training.optimizers import build_optimizers


def _setup(n=60, seed=0):
    torch.manual_seed(seed)
    m = GaussianHead(ModelConfig(exp_dim=4, radius=0.3))
    m.init_from_points(np.random.default_rng(seed).normal(scale=0.1, size=(n, 3)))
    optimizers, _ = build_optimizers(m, OptimizationParams())
    for _ in range(3):  # fill the Adam moments
        g = m.derive(torch.rand(4), torch.tensor([0.0, 0.0, 0.6]))
        loss = ((g.means ** 2).sum() + g.opacities.sum() + g.sh.sum() + g.scales.sum()
                + (g.quats * torch.arange(4.0)).sum())
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return m, optimizers


def _check_invariants(m: GaussianHead, optimizers, densifier: Densifier | None = None):
    n = m.num_gaussians
    for name in PER_GAUSSIAN:
        p = getattr(m, name)
        assert p.shape[0] == n, name
        assert p.requires_grad and p.is_leaf, name
        found = [opt for opt in optimizers for g in opt.param_groups
                 if any(q is p for q in g["params"])]
        assert len(found) == 1, f"{name} must be in exactly one optimizer"
        state = found[0].state.get(p)
        assert state, f"{name} lost its optimizer state"
        for key, v in state.items():
            if torch.is_tensor(v) and v.dim() > 0:
                assert v.shape == p.shape, (name, key)
    torch.testing.assert_close(m.derivations.norm(dim=-1), torch.ones(n, m.cfg.num_derivations))
    if densifier is not None:
        for k, v in densifier.state_dict().items():
            assert v.shape[0] == n, k
    # the optimizers still step without errors
    g = m.derive(torch.rand(4), torch.tensor([0.0, 0.0, 0.6]))
    (g.means.sum() + g.opacities.sum()).backward()
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_remap_prunes_clones_and_carries_moments():
    m, opts = _setup()
    n = m.num_gaussians
    old_tau = m.derivations.detach().clone()
    tau_state = opts[1].state[m.derivations]["exp_avg"].clone()
    xyz_state = opts[0].state[m.xyz]["exp_avg"].clone()
    index = torch.tensor([0, 5, 7, 7, 3])
    fresh = torch.tensor([False, False, False, True, False])
    remap_gaussians(m, opts, index, fresh=fresh)
    assert m.num_gaussians == 5
    torch.testing.assert_close(m.derivations.detach(), old_tau[index])
    # derivations: the child keeps its parent's moments; xyz: a fresh row starts at zero
    torch.testing.assert_close(opts[1].state[m.derivations]["exp_avg"], tau_state[index])
    expect = xyz_state[index].clone()
    expect[3] = 0
    torch.testing.assert_close(opts[0].state[m.xyz]["exp_avg"], expect)
    assert n == 60
    _check_invariants(m, opts)


@pytest.mark.parametrize("case", ["clone", "split", "prune_opacity", "mixed"])
def test_densify_and_prune_invariants(case):
    m, opts = _setup()
    n = m.num_gaussians
    cfg = DensifyConfig(grad_threshold=1e-3, percent_dense=0.01, min_opacity=0.005)
    d = Densifier(cfg, n, m.xyz.device)
    extent = 1.0
    scales = torch.exp(m.scaling.detach()).amax(1)
    big = scales > cfg.percent_dense * extent
    sel = torch.zeros(n, dtype=torch.bool)
    sel[::3] = True
    if case == "clone":
        with torch.no_grad():
            m.scaling[sel] = np.log(0.001)  # small: cloned
        big = torch.exp(m.scaling.detach()).amax(1) > 0.01
    if case == "split":
        with torch.no_grad():
            m.scaling[sel] = np.log(0.05)  # large: split
        big = torch.exp(m.scaling.detach()).amax(1) > 0.01
    d.grad_accum[sel] = 1.0
    d.denom[:] = 1.0
    d.max_opacity[:] = 0.5
    if case in ("prune_opacity", "mixed"):
        d.max_opacity[1::4] = 0.001
        if case == "prune_opacity":
            d.grad_accum[:] = 0.0
    tau_before = m.derivations.detach().clone()
    tau_m_before = opts[1].state[m.derivations]["exp_avg"].clone()
    stats = d.densify_and_prune(m, opts, extent, iteration=600)
    n_sel = int(sel.sum()) if case != "prune_opacity" else 0
    n_clone = int((sel & ~big).sum()) if case != "prune_opacity" else 0
    n_split = n_sel - n_clone
    assert stats["cloned"] == n_clone and stats["split"] == n_split
    assert m.num_gaussians == stats["total"] == n + n_clone + n_split - stats["pruned"]
    if case == "clone":
        assert stats["pruned"] == 0 and m.num_gaussians == n + n_clone
        # clones sit at the end, copies of their parents, derivation moments included
        ids = torch.nonzero(sel).squeeze(1)
        torch.testing.assert_close(m.derivations.detach()[n:], tau_before[ids])
        torch.testing.assert_close(opts[1].state[m.derivations]["exp_avg"][n:],
                                   tau_m_before[ids])
    if case == "split":
        assert m.num_gaussians == n + n_split  # 2 children replace each parent
        child_scales = torch.exp(m.scaling.detach()[-2 * n_split:])
        torch.testing.assert_close(child_scales, torch.full_like(child_scales, 0.05 / 1.6))
    if case == "prune_opacity":
        assert stats["pruned"] == len(range(1, n, 4))
    _check_invariants(m, opts, d)


def test_training_steps_keep_derivations_on_the_sphere():
    m, opts = _setup()
    d = Densifier(DensifyConfig(grad_threshold=1e-4), m.num_gaussians, m.xyz.device)
    for it in range(1, 30):
        g = m.derive(torch.rand(4), torch.tensor([0.0, 0.0, 0.6]))
        loss = (g.sh ** 2).mean() + g.opacities.mean()
        loss.backward()
        d.grad_accum += torch.rand(m.num_gaussians) * 1e-3
        d.denom += 1
        if it % 10 == 0:
            d.densify_and_prune(m, opts, 1.0, it)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.testing.assert_close(m.derivations.norm(dim=-1),
                                   torch.ones(m.num_gaussians, 4), atol=1e-5, rtol=0)
    _check_invariants(m, opts, d)


def test_screen_gradients_are_converted_to_ndc():
    d = Densifier(DensifyConfig(), 2, torch.device("cpu"))
    grad = torch.tensor([[1e-6, 0.0], [0.0, 2e-6]])
    d.observe(grad, torch.tensor([3, 0]), torch.tensor([0.5, 0.5]), width=200, height=100)
    # pixel gradients x (W/2, H/2) = NDC gradients, the release's unit; invisible ones skipped
    torch.testing.assert_close(d.grad_accum, torch.tensor([1e-4, 0.0]))
    torch.testing.assert_close(d.denom, torch.tensor([1.0, 0.0]))
    assert d.max_radii.tolist() == [3.0, 0.0]


def test_schedule_matches_the_release():
    d = Densifier(DensifyConfig(), 1, torch.device("cpu"))
    assert not d.due(500) and d.due(600) and d.due(14_900) and not d.due(15_000)
    assert not d.due(650)


def test_opacity_pruning_needs_transparency_in_every_frame_seen():
    """A Gaussian transparent in the last frame but opaque in an earlier one (an inner mouth,
    shown only when it opens) survives; one transparent in every frame is pruned."""
    m, opts = _setup(n=8)
    d = Densifier(DensifyConfig(grad_threshold=1e9), m.num_gaussians, m.xyz.device)
    d.reset(m.num_gaussians, m.xyz.device)
    radii = torch.ones(8)
    first = torch.full((8,), 0.5)
    first[[2, 5]] = 0.001
    last = torch.full((8,), 0.5)
    last[[2, 3]] = 0.001
    d.observe(None, radii, first, 64, 64)
    d.observe(None, radii, last, 64, 64)
    kept_xyz = m.xyz.detach()[[0, 1, 3, 4, 5, 6, 7]].clone()
    stats = d.densify_and_prune(m, opts, extent=1.0, iteration=600)
    assert stats["pruned"] == 1 and m.num_gaussians == 7
    torch.testing.assert_close(m.xyz.detach(), kept_xyz)
    _check_invariants(m, opts, d)
