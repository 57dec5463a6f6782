"""The training step's per-frame part with padding (what the CUDA graph runs: the head's and
the body's Gaussians and the shape penalties) against the eager step, on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from tests.test_fast_path import KEYS, _cpu_trainer
from training.cuda_graphs import FrameNetworks


def test_padded_frame_step_matches_the_body_and_shape_terms_of_the_eager_step(tmp_path):
    """FrameNetworks.frame with padding (the graphed step's arithmetic: the body's tensors
    padded too, the shape penalties as weighted sums over the real rows) gives what the eager
    step computes (model.with_body(model.derive(...)) and ShapeTerms): the joined Gaussians,
    every penalty, and the gradient of every parameter, the body's included."""
    from tests.helpers import edit_transforms
    from tools.make_synthetic import make_synthetic

    data = make_synthetic(tmp_path / "data", frames=8, res=24, seed=1)  # a head on a body
    t_ = np.linspace(-0.6, 0.6, 8) * 0.1
    x, y = np.meshgrid(t_, t_)
    cap = np.stack([x.ravel(), y.ravel(), np.sqrt(0.01 - x.ravel() ** 2 - y.ravel() ** 2)], 1)
    edit_transforms(data, lambda m: m.update(face_mesh=cap.round(5).tolist()))
    t = _cpu_trainer(tmp_path / "run", data, graphs=False, lambda_face_depth=1.0,
                     lambda_offset=1.0, lambda_radial_normal=1.0)
    m = t.model
    assert m.body is not None and m.body.num_gaussians > 0
    names = t.shape_terms.names()
    assert names == ["aniso", "view_extent", "face_depth", "offset", "radial_normal"]
    with torch.no_grad():  # move some Gaussians in front of the face, stretch and flatten others
        m.xyz[:20] = torch.tensor([0.0, 0.0, 0.13]) + 0.01 * torch.randn(20, 3)
        m.scaling[20:40, 2] += 3.0
        m.scaling[40:60, 0] -= 2.0  # discs
        m.body.scaling[:10, 0] += 3.0
        for head in m.deform._heads():  # some start at 0: offsets of every kind
            head.weight.normal_(0.0, 0.01)
    cam = t.scene.train_cameras[0]
    _, _, campos, exp = cam.tensors("cpu")
    capture = cam.capture("cpu")
    results = []
    for pad in (False, True):
        fn = FrameNetworks(m, graphs=False, bucket=64, pad=pad, shape=t.shape_terms)
        m.zero_grad(set_to_none=True)
        g, terms = fn.frame(exp, campos, True, capture)
        assert list(terms) == names
        if pad:
            assert fn._key[0] > m.num_gaussians and fn._key[1] > m.body.num_gaussians
        gen = torch.Generator().manual_seed(3)
        loss = sum((getattr(g, k) * torch.randn(getattr(g, k).shape, generator=gen)).sum()
                   for k in KEYS) + sum(terms.values())
        loss.backward()
        results.append(({k: getattr(g, k).detach() for k in KEYS},
                        {k: v.detach() for k, v in terms.items()},
                        {k: p.grad.clone() for k, p in m.named_parameters()
                         if p.grad is not None}))
    (g_a, t_a, grad_a), (g_b, t_b, grad_b) = results
    for k in KEYS:
        torch.testing.assert_close(g_b[k], g_a[k], atol=1e-6, rtol=1e-5)
    for k in names:
        assert float(t_a[k]) > 0
        torch.testing.assert_close(t_b[k], t_a[k], atol=1e-7, rtol=1e-5)
    assert grad_a.keys() == grad_b.keys() and any(k.startswith("body.") for k in grad_a)
    for k in grad_a:
        torch.testing.assert_close(grad_b[k], grad_a[k], atol=1e-6, rtol=1e-4, msg=k)


def test_offset_term_is_zero_before_the_deformation_and_measures_offsets_after(tmp_path):
    """--lambda_offset: 0 while the deformation is off (the term stays, so the graph's outputs
    keep their shape), then the weighted mean offset length in head radii, padded or not."""
    from tools.make_synthetic import make_synthetic

    data = make_synthetic(tmp_path / "data", frames=6, res=24, seed=2)
    t = _cpu_trainer(tmp_path / "run", data, graphs=False, lambda_offset=2.0)
    m = t.model
    with torch.no_grad():
        warp = m.deform._heads()[0]
        warp.weight.zero_()
        warp.bias.copy_(torch.tensor([0.03, 0.0, -0.04]))  # 0.05 everywhere
    cam = t.scene.train_cameras[0]
    _, _, campos, exp = cam.tensors("cpu")
    for pad in (False, True):
        fn = FrameNetworks(m, graphs=False, bucket=64, pad=pad, shape=t.shape_terms)
        _, off = fn.frame(exp, campos, False, cam.capture("cpu"))
        assert float(off["offset"]) == 0.0
        _, on = fn.frame(exp, campos, True, cam.capture("cpu"))
        expected = 2.0 * 0.05 / m.cfg.radius
        assert abs(float(on["offset"]) - expected) < 1e-4 * expected
