"""Tests of the pure-PyTorch Gaussian rasterizer (gaussian_renderer/torch_rasterizer.py).

The main oracle is a brute-force renderer written independently of the implementation
(tests/rasterizer_reference.py).

Tolerances (written down once here):
- float64 forward vs reference: atol 1e-9 (both run in double precision).
- float64 gradients vs reference: atol 1e-8 * max|grad| + rtol 1e-6.
- float32 forward vs float32 reference: atol 2e-5.
- float32 gradients vs float32 reference: cosine similarity >= 0.9999.
- gsplat on a GPU (gpu marker): PSNR >= 40 dB, gradient cosine similarity >= 0.99.
"""

from __future__ import annotations

import math

import pytest
import torch

from gaussian_renderer.torch_rasterizer import RasterOutput, rasterize_gaussians
from tests.rasterizer_reference import (
    assert_grad_close,
    image_grads,
    make_scene,
    reference_render,
    run_rasterizer,
    scene_leaves,
)

CASES = [
    # (width, height, n, tile_size, D)
    (20, 17, 8, 4, 3),
    (20, 17, 40, 4, 1),
    (33, 40, 64, 8, 4),
    (33, 40, 24, 8, 3),
]


# --------------------------------------------------------------------------- #
# Reference comparisons
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("radius_mode", ["gsplat", "inria"])
@pytest.mark.parametrize("alpha_max", [0.99, 0.999])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_reference_float64(case, alpha_max, radius_mode):
    width, height, n, ts, d = case
    seed = sum(case) + int(alpha_max * 1000) + (radius_mode == "inria")
    scene = make_scene(n, d, width, height, seed)
    kw = {"tile_size": ts, "alpha_max": alpha_max, "radius_mode": radius_mode}
    if radius_mode == "inria":
        kw["near_plane"] = 0.2  # the original rasterizer's frustum test
    ours_l, ref_l = scene_leaves(scene), scene_leaves(scene)
    ours = run_rasterizer(rasterize_gaussians, scene, ours_l, width, height, **kw)
    ours.means2d.retain_grad()
    ref = run_rasterizer(reference_render, scene, ref_l, width, height, **kw)

    assert isinstance(ours, RasterOutput)
    assert ours.colors.shape == (height, width, d) and ours.alphas.shape == (height, width, 1)
    assert ours.radii.dtype == torch.int32
    assert torch.equal(ours.radii.long(), ref["radii"])
    assert (ours.radii[:, 0] > 0).sum() >= 2, "scene should have visible Gaussians"
    assert (ours.radii[:, 0] == 0).sum() >= 1, "scene should have culled Gaussians"
    torch.testing.assert_close(ours.means2d, ref["means2d"], atol=1e-9, rtol=0)
    torch.testing.assert_close(ours.colors, ref["colors"], atol=1e-9, rtol=0)
    torch.testing.assert_close(ours.alphas, ref["alphas"], atol=1e-9, rtol=0)
    assert ref["alphas"].max() > 0.5

    g_ours = image_grads(ours.colors, ours.alphas, ours_l, seed)
    g_ref = image_grads(ref["colors"], ref["alphas"], ref_l, seed)
    assert_grad_close(g_ours, g_ref)
    # d loss / d means2d, as read by densification, matches the reference's
    # own screen-space means and is zero for culled Gaussians.
    m2_ref = ref["means2d"].grad
    scale = m2_ref.abs().max().item()
    torch.testing.assert_close(ours.means2d.grad, m2_ref, atol=1e-8 * scale, rtol=1e-6)
    assert torch.all(ours.means2d.grad[ours.radii[:, 0] == 0] == 0)
    # Only the upper triangle of the covariances is read (as gsplat does).
    lower = torch.tril_indices(3, 3, offset=-1)
    assert torch.all(g_ours["covars"][:, lower[0], lower[1]] == 0)


@pytest.mark.parametrize("radius_mode", ["gsplat", "inria"])
@pytest.mark.parametrize("case", CASES[1:3], ids=lambda c: "x".join(map(str, c)))
def test_matches_reference_float32(case, radius_mode):
    width, height, n, ts, d = case
    scene = make_scene(n, d, width, height, seed=7, dtype=torch.float32)
    kw = {"tile_size": ts, "radius_mode": radius_mode, "near_plane": 0.1}
    ours_l, ref_l = scene_leaves(scene), scene_leaves(scene)
    ours = run_rasterizer(rasterize_gaussians, scene, ours_l, width, height, **kw)
    ref = run_rasterizer(reference_render, scene, ref_l, width, height, **kw)
    assert ours.colors.dtype == torch.float32
    torch.testing.assert_close(ours.colors, ref["colors"], atol=2e-5, rtol=0)
    torch.testing.assert_close(ours.alphas, ref["alphas"], atol=2e-5, rtol=0)
    g_ours = image_grads(ours.colors, ours.alphas, ours_l, 3)
    g_ref = image_grads(ref["colors"], ref["alphas"], ref_l, 3)
    for k in g_ref:
        cos = torch.nn.functional.cosine_similarity(
            g_ours[k].flatten().double(), g_ref[k].flatten().double(), dim=0
        )
        assert cos >= 0.9999, (k, cos.item())


def test_means_gradient_matches_finite_differences():
    """The hand-written backward agrees with central differences (float64)."""
    width, height, n, ts, d = 20, 17, 12, 4, 3
    scene = make_scene(n, d, width, height, seed=11)
    leaves = scene_leaves(scene)
    out = run_rasterizer(rasterize_gaussians, scene, leaves, width, height, tile_size=ts)
    out.means2d.retain_grad()
    g = image_grads(out.colors, out.alphas, leaves, seed=5)
    gen = torch.Generator().manual_seed(5)
    w_c = torch.randn(out.colors.shape, generator=gen, dtype=torch.float64)
    w_a = torch.randn(out.alphas.shape, generator=gen, dtype=torch.float64)

    def loss_of(**override):
        with torch.no_grad():
            lv = {k: v.detach().clone() for k, v in leaves.items()}
            lv.update(override)
            o = run_rasterizer(rasterize_gaussians, scene, lv, width, height, tile_size=ts)
            return float((o.colors * w_c).sum() + (o.alphas * w_a).sum())

    visible = torch.nonzero(out.radii[:, 0] > 0).flatten()[:4].tolist()
    eps = 1e-6
    for name, shape_idx in [("means", (0,)), ("means", (2,)), ("opacities", ()), ("colors", (1,))]:
        for i in visible:
            idx = (i,) + shape_idx
            plus = leaves[name].detach().clone()
            minus = leaves[name].detach().clone()
            plus[idx] += eps
            minus[idx] -= eps
            fd = (loss_of(**{name: plus}) - loss_of(**{name: minus})) / (2 * eps)
            assert abs(fd - g[name][idx].item()) <= 1e-5 * (1 + abs(fd)), (name, idx, fd)
    # Covariances: perturb symmetric pairs so the finite difference sees the
    # same matrix the renderer reads.
    for i in visible:
        for r, c in [(0, 0), (0, 1), (1, 2)]:
            plus = leaves["covars"].detach().clone()
            minus = leaves["covars"].detach().clone()
            plus[i, r, c] += eps
            minus[i, r, c] -= eps
            fd = (loss_of(covars=plus) - loss_of(covars=minus)) / (2 * eps)
            got = g["covars"][i, r, c].item()
            assert abs(fd - got) <= 1e-5 * (1 + abs(fd)), ((i, r, c), fd, got)


def test_chunking_does_not_change_results():
    width, height, n, ts, d = 33, 40, 64, 8, 3
    scene = make_scene(n, d, width, height, seed=3)
    results = []
    for budget in (512, 1e-6):  # one chunk / one tile per chunk
        leaves = scene_leaves(scene)
        out = run_rasterizer(
            rasterize_gaussians, scene, leaves, width, height, tile_size=ts, memory_budget_mb=budget
        )
        results.append((out.colors, out.alphas, image_grads(out.colors, out.alphas, leaves, 1)))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-12, rtol=0)
    for k in results[0][2]:
        torch.testing.assert_close(results[0][2][k], results[1][2][k], atol=1e-12, rtol=1e-10)


# --------------------------------------------------------------------------- #
# Edge cases
# --------------------------------------------------------------------------- #


def _simple_camera(width, height, dtype=torch.float64):
    K = torch.tensor(
        [[40.0, 0.0, width / 2], [0.0, 40.0, height / 2], [0.0, 0.0, 1.0]], dtype=dtype
    )
    return torch.eye(4, dtype=dtype), K


def test_all_culled_gives_background():
    width, height, d = 12, 10, 3
    viewmat, K = _simple_camera(width, height)
    n = 5
    leaves = {
        "means": torch.tensor([[0.0, 0.0, -1.0]] * n, dtype=torch.float64),  # behind the camera
        "covars": torch.eye(3, dtype=torch.float64).repeat(n, 1, 1) * 0.01,
        "opacities": torch.full((n,), 0.9, dtype=torch.float64),
        "colors": torch.rand(n, d, dtype=torch.float64),
        "background": torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64),
    }
    leaves = {k: v.requires_grad_(True) for k, v in leaves.items()}
    scene = {"viewmat": viewmat, "K": K}
    out = run_rasterizer(rasterize_gaussians, scene, leaves, width, height, tile_size=4)
    assert torch.all(out.radii == 0)
    assert torch.equal(out.colors, leaves["background"].detach().expand(height, width, d))
    assert torch.all(out.alphas == 0)
    g = image_grads(out.colors, out.alphas, leaves, 0)
    for k in ["means", "covars", "opacities", "colors"]:
        assert torch.all(g[k] == 0), k
        assert torch.isfinite(g[k]).all()
    out = run_rasterizer(rasterize_gaussians, scene, leaves, width, height, tile_size=4)
    out.colors.sum().backward()
    assert torch.all(leaves["background"].grad == height * width)


def test_no_gaussians():
    width, height, d = 9, 7, 4
    viewmat, K = _simple_camera(width, height)
    means = torch.zeros(0, 3, requires_grad=True)
    colors = torch.zeros(0, d, requires_grad=True)
    out = rasterize_gaussians(
        means,
        torch.zeros(0, 3, 3),
        torch.zeros(0),
        colors,
        viewmat.float(),
        K.float(),
        width,
        height,
        torch.ones(d),
    )
    assert out.colors.shape == (height, width, d)
    assert torch.all(out.colors == 1) and torch.all(out.alphas == 0)
    assert out.means2d.shape == (0, 2) and out.radii.shape == (0, 2)
    out.colors.sum().backward()
    assert means.grad is not None and means.grad.shape == (0, 3)


@pytest.mark.parametrize("alpha_max", [0.99, 0.999])
def test_opaque_gaussians_and_stop_rule(alpha_max):
    """Opaque Gaussians stacked on the optical axis: each is capped at alpha_max,
    and the one that would push the transmittance to <= 1e-4 is excluded, with
    every Gaussian behind it (no colour, no gradient at that pixel)."""
    width, height = 16, 16
    viewmat, K = _simple_camera(width, height)
    K[0, 2], K[1, 2] = 8.5, 8.5  # centres land exactly on pixel (8, 8): sigma == 0
    n = 4
    leaves = {
        "means": torch.tensor([[0.0, 0.0, 1.0 + 0.5 * i] for i in range(n)], dtype=torch.float64),
        "covars": torch.eye(3, dtype=torch.float64).repeat(n, 1, 1) * 0.05**2,
        "opacities": torch.ones(n, dtype=torch.float64),
        "colors": torch.tensor([[1.0], [0.5], [0.25], [0.125]], dtype=torch.float64),
        "background": torch.tensor([0.1], dtype=torch.float64),
    }
    leaves = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
    scene = {"viewmat": viewmat, "K": K}

    # The rules applied by hand at the centre pixel, front to back.
    T, colour, weights = 1.0, 0.0, []
    for c in [1.0, 0.5, 0.25, 0.125]:
        next_T = T * (1.0 - alpha_max)
        if next_T <= 1e-4:
            break
        colour += c * alpha_max * T
        weights.append(alpha_max * T)
        T = next_T
    weights += [0.0] * (n - len(weights))
    assert len([w for w in weights if w > 0]) < n  # the stop rule really fires

    out = run_rasterizer(rasterize_gaussians, scene, leaves, width, height, alpha_max=alpha_max)
    assert out.colors[8, 8, 0].item() == pytest.approx(colour + T * 0.1, abs=1e-12)
    assert out.alphas[8, 8, 0].item() == pytest.approx(1.0 - T, abs=1e-12)
    centre = torch.autograd.grad(out.colors[8, 8, 0], leaves["colors"], retain_graph=True)[0]
    torch.testing.assert_close(
        centre[:, 0], torch.tensor(weights, dtype=torch.float64), atol=1e-12, rtol=0
    )
    ref = run_rasterizer(
        reference_render, scene, scene_leaves(leaves), width, height, alpha_max=alpha_max
    )
    torch.testing.assert_close(out.colors, ref["colors"], atol=1e-12, rtol=0)
    g = image_grads(out.colors, out.alphas, leaves, 0)
    assert all(torch.isfinite(v).all() for v in g.values())


@pytest.mark.parametrize("d", [1, 4])
def test_channel_counts(d):
    width, height, n, ts = 20, 17, 16, 4
    scene = make_scene(n, d, width, height, seed=21 + d)
    ours_l, ref_l = scene_leaves(scene), scene_leaves(scene)
    ours = run_rasterizer(rasterize_gaussians, scene, ours_l, width, height, tile_size=ts)
    ref = run_rasterizer(reference_render, scene, ref_l, width, height, tile_size=ts)
    assert ours.colors.shape == (height, width, d)
    torch.testing.assert_close(ours.colors, ref["colors"], atol=1e-9, rtol=0)
    assert_grad_close(
        image_grads(ours.colors, ours.alphas, ours_l, 2),
        image_grads(ref["colors"], ref["alphas"], ref_l, 2),
    )


def test_without_background_and_bad_shapes():
    width, height, n, d = 20, 17, 10, 3
    scene = make_scene(n, d, width, height, seed=4)
    args = (scene["means"], scene["covars"], scene["opacities"], scene["colors"])
    out = rasterize_gaussians(*args, scene["viewmat"], scene["K"], width, height, tile_size=4)
    ref = reference_render(*args, scene["viewmat"], scene["K"], width, height, tile_size=4)
    torch.testing.assert_close(out.colors, ref["colors"], atol=1e-9, rtol=0)
    with pytest.raises(ValueError):
        rasterize_gaussians(
            scene["means"][:, :2], *args[1:], scene["viewmat"], scene["K"], width, height
        )
    with pytest.raises(ValueError):
        rasterize_gaussians(*args, scene["viewmat"], scene["K"], width, height, torch.zeros(2))
    with pytest.raises(ValueError):
        rasterize_gaussians(*args, scene["viewmat"], scene["K"], width, height, radius_mode="x")


# --------------------------------------------------------------------------- #
# GPU: agreement with gsplat
# --------------------------------------------------------------------------- #


def _psnr(a, b):
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "seed, width, height, n", [(0, 96, 80, 400), (1, 96, 80, 400), (2, 256, 224, 5000)]
)
def test_matches_gsplat_on_gpu(seed, width, height, n):
    gsplat = pytest.importorskip("gsplat")
    dev = torch.device("cuda")
    d = 3
    scene = make_scene(n, d, width, height, seed=100 + seed, dtype=torch.float32)
    scene = {k: v.to(dev) for k, v in scene.items()}

    ours_l = {k: v.to(dev) for k, v in scene_leaves(scene).items()}
    ours_l = {k: v.detach().requires_grad_(True) for k, v in ours_l.items()}
    ours = run_rasterizer(rasterize_gaussians, scene, ours_l, width, height)
    ours.means2d.retain_grad()

    gs_l = {k: v.detach().clone().requires_grad_(True) for k, v in ours_l.items()}
    colors_gs, alphas_gs, info = gsplat.rasterization(
        gs_l["means"],
        None,
        None,
        gs_l["opacities"],
        gs_l["colors"],
        scene["viewmat"][None],
        scene["K"][None],
        width,
        height,
        covars=gs_l["covars"],
        packed=False,
        backgrounds=gs_l["background"][None],
        rasterize_mode="classic",
    )
    info["means2d"].retain_grad()
    psnr_c = _psnr(ours.colors, colors_gs[0])
    psnr_a = _psnr(ours.alphas, alphas_gs[0])
    radii_gs = info["radii"][0]
    radii_agree = (radii_gs.reshape(n, -1)[:, :2].int() == ours.radii).all(-1).float().mean()

    gen = torch.Generator().manual_seed(seed)
    w_c = torch.randn(ours.colors.shape, generator=gen).to(dev)
    w_a = torch.randn(ours.alphas.shape, generator=gen).to(dev)
    ((ours.colors * w_c).sum() + (ours.alphas * w_a).sum()).backward()
    ((colors_gs[0] * w_c).sum() + (alphas_gs[0] * w_a).sum()).backward()

    def cos(a, b):
        return torch.nn.functional.cosine_similarity(
            a.flatten().double(), b.flatten().double(), dim=0
        ).item()

    names = ["means", "covars", "opacities", "colors", "background"]
    sims = {k: cos(ours_l[k].grad, gs_l[k].grad) for k in names}
    sims["means2d"] = cos(ours.means2d.grad, info["means2d"].grad[0])
    print(
        f"\n[gsplat seed {seed}, {width}x{height}, N={n}] "
        f"PSNR colors {psnr_c:.1f} dB, alphas {psnr_a:.1f} dB, "
        f"radii agree {radii_agree:.4f}, grad cosine {sims}"
    )
    assert psnr_c >= 40 and psnr_a >= 40
    for k, v in sims.items():
        assert v >= 0.99, (k, v)
