"""The fast path's optimizers (training/optimizers.py) against the classes they stand in for."""

from __future__ import annotations

import warnings

import pytest
import torch

from training.optimizers import FusedAdam, SphereAdam, load_as_built

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import geoopt


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _params(seed: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g).to(device))
            for shape in ((50, 3), (7,), (4, 5), (3, 3))]


def _groups(ps):
    return [{"params": ps[:2], "lr": 1e-2, "name": "a"},
            {"params": [ps[2]], "lr": 3e-3, "name": "b"},
            {"params": [ps[3]], "lr": 1e-4, "name": "c"}]


@pytest.mark.parametrize("device", DEVICES)
def test_fused_adam_is_torch_fused_adam(device):
    """Bitwise the same parameters and state as torch.optim.Adam(fused=True) over steps where
    some parameters have no gradient, and the state dicts load into each other."""
    a, b = _params(0, device), _params(0, device)
    opt_a = torch.optim.Adam(_groups(a), lr=0.0, eps=1e-15, fused=True)
    opt_b = FusedAdam(_groups(b), lr=0.0, eps=1e-15)
    g = torch.Generator().manual_seed(1)
    for step in range(8):
        grads = [torch.randn(p.shape, generator=g).to(device) for p in a]
        for i, (pa, pb, gr) in enumerate(zip(a, b, grads)):
            skip = step < 3 and i == 3  # a parameter that starts late (as the deformation)
            pa.grad = None if skip else gr.clone()
            pb.grad = None if skip else gr.clone()
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_a.state[pa][k], opt_b.state[pb][k]), k
    assert opt_a.state[a[3]]["step"].item() == 5
    # state dicts interchange: continue one step each from the other's state
    c = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_c = torch.optim.Adam(_groups(c), lr=0.0, eps=1e-15, fused=True)
    opt_c.load_state_dict(opt_b.state_dict())
    d = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_d = FusedAdam(_groups(d), lr=0.0, eps=1e-15)
    opt_d.load_state_dict(opt_a.state_dict())
    for ps in (c, d):
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
    opt_c.step()
    opt_d.step()
    for pc, pd in zip(c, d):
        assert torch.equal(pc, pd)


@pytest.mark.parametrize("device", DEVICES)
def test_optimizer_states_load_across_the_two_paths(device):
    """A checkpoint of the reference path (non-fused Adam) resumes on the fast path and the
    other way round: each optimizer keeps its own kernel (load_as_built), FusedAdam's steps
    end up as float32 on the parameters' device, and both continue with the same update."""
    ref, fast = _params(0, device), _params(0, device)
    opt_ref = torch.optim.Adam(_groups(ref), lr=0.0, eps=1e-15)
    opt_fast = FusedAdam(_groups(fast), lr=0.0, eps=1e-15)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g).to(device) for p in ref]
        for a, b, gr in zip(ref, fast, grads):
            a.grad, b.grad = gr.clone(), gr.clone()
        opt_ref.step()
        opt_fast.step()
    saved_ref = _roundtrip(opt_ref.state_dict())
    saved_fast = _roundtrip(opt_fast.state_dict())
    # the reference's state into the fast path, and the fast path's into the reference
    p1 = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    fast_from_ref = FusedAdam(_groups(p1), lr=0.0, eps=1e-15)
    load_as_built(fast_from_ref, saved_ref)
    p2 = [torch.nn.Parameter(p.detach().clone()) for p in fast]
    ref_from_fast = torch.optim.Adam(_groups(p2), lr=0.0, eps=1e-15)
    load_as_built(ref_from_fast, saved_fast)
    assert all(grp["fused"] for grp in fast_from_ref.param_groups)
    assert not any(grp["fused"] for grp in ref_from_fast.param_groups)
    for p in p1:
        st = fast_from_ref.state[p]["step"]
        assert st.dtype == torch.float32 and st.device == p.device and float(st) == 3
    # FusedAdam also fixes the steps when a non-fused state dict is loaded directly
    p3 = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    direct = FusedAdam(_groups(p3), lr=0.0, eps=1e-15)
    direct.load_state_dict(_roundtrip(opt_ref.state_dict()))  # its own copy: loading aliases
    assert all(grp["fused"] for grp in direct.param_groups)
    assert all(direct.state[p]["step"].device == p.device for p in p3)
    grads = [torch.randn(p.shape, generator=g).to(device) for p in ref]
    for ps in (ref, p1, p2, p3):
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
    for opt in (opt_ref, fast_from_ref, ref_from_fast, direct):
        opt.step()
    for name, ps in (("fast from ref", p1), ("ref from fast", p2), ("direct", p3)):
        for a, b in zip(ref, ps):
            torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-6, atol=1e-7,
                                       msg=lambda m, name=name: f"{name}: {m}")


def _roundtrip(state: dict) -> dict:
    """A state dict through torch.save / torch.load(map_location='cpu'), as checkpoints."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=False)


def test_fused_adam_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdam(_params(0), amsgrad=True)


def _sphere(seed: int, dtype=torch.float64, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(200, 3, 4, generator=g, dtype=dtype), dim=-1)
    x = x.to(device)
    return geoopt.ManifoldParameter(x, manifold=geoopt.Sphere())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sphere_adam_matches_geoopt(dtype, device):
    """Parameters and moments match geoopt's RiemannianAdam after 30 steps (float64: to
    1e-12; float32: to 1e-5), points stay unit quaternions, and the state layout is
    geoopt's (an int step count, moments of the parameter's shape)."""
    a, b = _sphere(0, dtype, device), _sphere(0, dtype, device)
    opt_a = geoopt.optim.RiemannianAdam([{"params": [a], "lr": 5e-3, "name": "derivations"}])
    opt_b = SphereAdam([{"params": [b], "lr": 5e-3, "name": "derivations"}])
    g = torch.Generator().manual_seed(2)
    for _ in range(30):
        gr = torch.randn(a.shape, generator=g, dtype=dtype).to(device)
        a.grad, b.grad = gr.clone(), gr.clone()
        opt_a.step()
        opt_b.step()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(b.detach(), a.detach(), rtol=0, atol=tol)
    sa, sb = opt_a.state[a], opt_b.state[b]
    assert sa.keys() == sb.keys() and sb["step"] == sa["step"] == 30
    assert isinstance(sb["step"], int)
    for k in ("exp_avg", "exp_avg_sq"):
        assert sb[k].shape == sa[k].shape
        torch.testing.assert_close(sb[k], sa[k], rtol=tol * 10, atol=tol)
    torch.testing.assert_close(b.detach().norm(dim=-1), torch.ones(200, 3, dtype=dtype,
                                                                   device=device),
                               rtol=0, atol=tol)
    # the moment lies in the tangent space of the new point, as geoopt leaves it
    dot = (sb["exp_avg"] * b.detach()).sum(-1)
    assert float(dot.abs().max()) < tol


@pytest.mark.parametrize("amsgrad", [False, True])
def test_sphere_adam_falls_back_to_geoopt_off_the_plain_sphere(amsgrad):
    """A Euclidean parameter (its gradient set inside the closure) or AMSGrad goes through
    geoopt's own step: bitwise geoopt's result, and the Euclidean parameter is not
    normalised."""
    e1, e2 = torch.nn.Parameter(torch.ones(5)), torch.nn.Parameter(torch.ones(5))
    s1, s2 = _sphere(3), _sphere(3)
    opt_a = geoopt.optim.RiemannianAdam([e1, s1], lr=1e-2, amsgrad=amsgrad)
    opt_b = SphereAdam([e2, s2], lr=1e-2, amsgrad=amsgrad)
    for k in range(3):
        gr = torch.randn(s1.shape, generator=torch.Generator().manual_seed(k), dtype=s1.dtype)
        for opt, e, s in ((opt_a, e1, s1), (opt_b, e2, s2)):
            e.grad = None

            def closure(e=e, s=s, k=k, gr=gr):
                e.grad = torch.full((5,), float(k + 1))
                s.grad = gr.clone()
                return 0.0

            opt.step(closure)
    assert torch.equal(e1, e2) and torch.equal(s1, s2)
    assert float(e2.detach().norm()) > 2.0  # still near (1, ..., 1), not a unit vector


def test_fast_optimizers_follow_densification(tmp_path):
    """build_optimizers(fused=True) gives the fast classes, and remap_gaussians carries their
    state through a prune + clone as it does torch's and geoopt's."""
    import numpy as np

    from arguments import OptimizationParams
    from scene.gaussian_model import GaussianHead, ModelConfig
    from training.densification import remap_gaussians
    from training.optimizers import build_optimizers

    m = GaussianHead(ModelConfig(exp_dim=4, center=(0.0, 0.0, 0.0), radius=0.2))
    m.init_from_points(np.random.default_rng(0).normal(scale=0.05, size=(40, 3)))
    opts, _ = build_optimizers(m, OptimizationParams(), fused=True)
    assert [type(o) for o in opts] == [FusedAdam, SphereAdam, FusedAdam]
    for p in m.parameters():
        p.grad = torch.randn_like(p)
    for o in opts:
        o.step()
    before = {k: (p.detach().clone(), {kk: vv.clone() if torch.is_tensor(vv) else vv
                                       for kk, vv in _state(opts, p).items()})
              for k, p in m.per_gaussian().items()}
    index = torch.tensor([0, 5, 5, 9])
    fresh = torch.tensor([False, False, True, False])
    remap_gaussians(m, opts, index, fresh=fresh)
    for k, p in m.per_gaussian().items():
        old_p, old_state = before[k]
        assert torch.equal(p.detach(), old_p[index])
        st = _state(opts, p)
        want = old_state["exp_avg"][index]
        if k != "derivations":  # new Gaussians start with zero moments, except derivations
            want[fresh] = 0
        assert torch.equal(st["exp_avg"], want), k
    for p in m.parameters():
        p.grad = torch.randn_like(p)
    for o in opts:
        o.step()
    assert torch.isfinite(m.xyz).all() and m.num_gaussians == 4


def _state(opts, p):
    for o in opts:
        if p in o.state:
            return o.state[p]
    raise KeyError("parameter not in any optimizer")
