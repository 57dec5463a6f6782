"""The fast training path against the reference path.

On the CPU: the padded per-frame networks (:class:`FrameNetworks`) and the training loss
(:class:`TrainingLoss`) compute what ``model.derive`` and the plain loss formulas compute,
values and gradients, and the separable SSIM equals the 2-D window. On a GPU (``gpu``
marker): the same with the CUDA graphs replayed, across changes of the Gaussian count.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scene.gaussian_model import GaussianHead, ModelConfig
from training.cuda_graphs import FrameNetworks
from training.losses import TrainingLoss
from utils.loss_utils import l1_loss, ssim

KEYS = ("means", "opacities", "sh", "quats", "scales")


def _model(n: int, device: str = "cpu", **execution) -> GaussianHead:
    torch.manual_seed(0)
    m = GaussianHead(ModelConfig(exp_dim=6, center=(0.01, -0.02, 0.0), radius=0.2),
                     **execution)
    m.init_from_points(np.random.default_rng(0).normal(scale=0.05, size=(n, 3)))
    with torch.no_grad():  # non-trivial offsets
        m.deform.gaussian_warp.bias.fill_(0.01)
        m.deform.gaussian_rotation.bias.fill_(0.05)
    return m.to(device)


def _twin(m: GaussianHead, **execution) -> GaussianHead:
    """The same model (same weights, separate parameters) with other run-time settings."""
    kw = {"autocast_dtype": m.autocast_dtype, "fused": m.fused} | execution
    t = type(m)(m.cfg, **kw)
    t.set_gaussians({k: v.detach().clone() for k, v in m.per_gaussian().items()})
    t.load_state_dict(m.state_dict())
    t.active_sh_degree = m.active_sh_degree
    return t.to(m.xyz.device)


def _loss_and_grads(m: GaussianHead, g, cot: dict[str, torch.Tensor]):
    m.zero_grad(set_to_none=True)
    loss = sum((getattr(g, k) * cot[k]).sum() for k in KEYS)
    loss.backward()
    return ({k: getattr(g, k).detach().clone() for k in KEYS},
            {name: p.grad.clone() for name, p in m.named_parameters() if p.grad is not None})


def _close(a, b, atol, rtol, rel_norm, what):
    if rel_norm is None:
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda s: f"{what}: {s}")
    else:  # bf16: rounding differs per element; the error relative to the tensor's size
        err = float((a - b).norm() / b.norm().clamp_min(1e-12))
        assert err <= rel_norm, f"{what}: relative error {err:.2e} > {rel_norm:.0e}"


def _compare(m, fn, exp, campos, deform, atol=1e-5, rtol=1e-4, ref_fused=False,
             rel_norm=None):
    """fn (bound to ``m``, with m's layers) against model.derive of a twin of ``m`` (eager;
    fused layers if ``ref_fused``); elementwise, or by the norm of the difference
    (``rel_norm``)."""
    twin = _twin(m, fused=ref_fused)
    ref_g = twin.derive(exp if deform else None, campos)
    torch.manual_seed(1)
    cot = {k: torch.randn_like(getattr(ref_g, k)) for k in KEYS}
    ref = _loss_and_grads(twin, ref_g, cot)
    m.zero_grad(set_to_none=True)  # a graphed forward refuses to run over held gradients
    fast = _loss_and_grads(m, fn(exp, campos, deform=deform), cot)
    for k in KEYS:
        _close(fast[0][k], ref[0][k], atol, rtol, rel_norm, k)
    assert fast[1].keys() == ref[1].keys()
    for name in ref[1]:
        _close(fast[1][name], ref[1][name], atol, rtol, rel_norm, f"gradient of {name}")


@pytest.mark.parametrize("deform", [True, False])
def test_padded_frame_networks_match_derive(deform):
    """Values and gradients of every parameter equal model.derive's, with padding rows."""
    m = _model(40)
    fn = FrameNetworks(m, graphs=False, bucket=16, pad=True)
    _compare(m, fn, torch.rand(6), torch.tensor([0.0, 0.0, 0.5]), deform)
    assert fn._key[0] == 48  # 40 rows padded to three buckets


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_deformation_layers_match_the_eager_network(precision):
    """The fast path's linear+ReLU layers (epilogue bias and ReLU, bias gradient as a matrix
    product, one head product) compute the eager network's outputs and gradients."""
    from scene.deform_model import DeformNetwork

    torch.manual_seed(0)
    net = DeformNetwork(46)
    xyz, exp = torch.randn(300, 3) * 0.1, torch.rand(46)
    results = []
    for fused in (False, True):
        net.fused = fused
        net.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
        with ctx if precision == "bf16" else torch.autocast("cpu", enabled=False):
            out = net(xyz, exp)
        gen = torch.Generator().manual_seed(1)
        sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in out).backward()
        results.append(([o.detach().float() for o in out],
                        {n: p.grad.clone() for n, p in net.named_parameters()}))
    (out_a, grad_a), (out_b, grad_b) = results
    tol = {"fp32": 1e-5, "bf16": 3e-2}[precision]
    for a, b in zip(out_a, out_b):
        assert float((a - b).norm() / a.norm()) < tol
    assert grad_a.keys() == grad_b.keys()
    for n in grad_a:
        rel = float((grad_a[n] - grad_b[n]).norm() / grad_a[n].norm().clamp_min(1e-20))
        assert rel < tol, (n, rel)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_aligned_decoders_match_the_decoders(precision):
    """The tri-plane decoders with padded operands and one SH head product (the fast path)
    compute the same opacity, geometry and SH, and the same gradient for every parameter and
    for the sample coordinates and directions."""
    from scene.triplane import TriPlaneDecoder

    torch.manual_seed(0)
    dec = TriPlaneDecoder()
    gen = torch.Generator().manual_seed(2)
    coords = (torch.rand(4, 200, 3, generator=gen) * 2 - 1).requires_grad_(True)
    dirs = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=-1)
    dirs.requires_grad_(True)
    results = []
    for fused in (False, True):
        dec.fused = fused
        dec.zero_grad(set_to_none=True)
        coords.grad = dirs.grad = None
        ctx = torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
        with ctx if precision == "bf16" else torch.autocast("cpu", enabled=False):
            out = dec(coords, dirs)
        g = torch.Generator().manual_seed(1)
        sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in out).backward()
        grads = {n: p.grad.clone() for n, p in dec.named_parameters()}
        grads |= {"coords": coords.grad.clone(), "dirs": dirs.grad.clone()}
        results.append(([o.detach().float() for o in out], grads))
    (out_a, grad_a), (out_b, grad_b) = results
    tol = {"fp32": 1e-5, "bf16": 3e-2}[precision]
    for a, b in zip(out_a, out_b):
        assert a.shape == b.shape and float((a - b).norm() / a.norm()) < tol
    assert grad_a.keys() == grad_b.keys()
    for n in grad_a:
        rel = float((grad_a[n] - grad_b[n]).norm() / grad_a[n].norm().clamp_min(1e-20))
        assert rel < tol, (n, rel)


def test_frame_networks_bucket_follows_the_gaussian_count():
    m = _model(40)
    fn = FrameNetworks(m, graphs=False, bucket=16, pad=True)
    exp, campos = torch.rand(6), torch.tensor([0.0, 0.0, 0.5])
    caps = []
    for n in (40, 45, 48, 50, 40, 30, 10):
        with torch.no_grad():
            xyz = torch.randn(n, 3) * 0.05
        rot = torch.zeros(n, 4)
        rot[:, 0] = 1
        m.set_gaussians({"xyz": xyz, "rotation": rot, "scaling": torch.full((n, 3), -4.0),
                         "derivations": F.normalize(torch.randn(n, 4, 4), dim=-1)})
        g = fn(exp, campos, deform=True)
        assert g.means.shape == (n, 3) and g.sh.shape[0] == n
        caps.append(fn._key[0])
    # grows by whole buckets, keeps its capacity while shrinking by less than two buckets
    assert caps == [48, 48, 48, 64, 64, 32, 32]
    _compare(m, fn, exp, campos, True)


def test_training_loss_matches_the_formula():
    torch.manual_seed(0)
    img = torch.rand(3, 20, 24, requires_grad=True)
    gt_u8 = (torch.rand(20, 24, 3) * 255).to(torch.uint8)
    gt = gt_u8.permute(2, 0, 1).float() / 255
    loss_fn = TrainingLoss(lambda_dssim=0.2, lambda_vgg=0.01, vgg=None, graphs=False)
    total, terms = loss_fn(img, gt_u8)
    ref = 0.8 * l1_loss(img, gt) + 0.2 * (1 - ssim(img, gt))
    torch.testing.assert_close(total, ref)
    torch.testing.assert_close(terms["l1"], l1_loss(img, gt).detach())
    assert set(terms) == {"l1", "ssim", "total"}
    (g_fast,) = torch.autograd.grad(total, img)
    (g_ref,) = torch.autograd.grad(ref, img)
    torch.testing.assert_close(g_fast, g_ref)


def test_separable_ssim_equals_the_2d_window():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 40, 52, dtype=torch.float64)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    w = torch.outer(g, g).expand(3, 1, 11, 11)

    def blur(t):
        return F.conv2d(t, w, padding=5, groups=3)

    mu1, mu2 = blur(a), blur(b)
    s1, s2, s12 = blur(a * a) - mu1**2, blur(b * b) - mu2**2, blur(a * b) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    ref = (((2 * mu1 * mu2 + c1) * (2 * s12 + c2))
           / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))).mean()
    torch.testing.assert_close(ssim(a, b), ref, atol=1e-12, rtol=1e-12)
    assert float(ssim(a, a)) == pytest.approx(1.0)


def _cpu_trainer(root, data, graphs: bool, **options):
    from arguments import ModelParams, OptimizationParams, PipelineParams
    from training.trainer import Trainer
    from utils.execution import Execution

    # the fast path as on CUDA (fused layers, fast optimizers), graphs emulated or run eagerly
    ex = Execution(device=torch.device("cpu"), backend="torch", precision="fp32", fused=True,
                   fast_optimizers=True)
    t = Trainer(
        ModelParams(source_path=str(data), model_path=str(root), init_points=300,
                    test_frames=1),
        OptimizationParams(iterations=60, warm_up=20, densify_from_iter=5,
                           densification_interval=10, densify_until_iter=60,
                           densify_grad_threshold=1e-7, min_opacity=0.02, **options),
        PipelineParams(device="cpu"), test_iterations=[], save_iterations=[], quiet=True,
        tensorboard=False, execution=ex, log=lambda *a: None)
    t.frame_networks = FrameNetworks(t.model, graphs=graphs, bucket=64, pad=True,
                                     shape=t.shape_terms)
    t.loss_fn.graphs = graphs
    return t


def test_emulated_cuda_graphs_train_exactly_like_the_eager_code(tmp_path, monkeypatch):
    """Whole training runs of a head on a body (deformation switched on, densification
    growing and pruning the sets, recaptures; the body and the shape penalties in the graph)
    with the graphs' buffer behaviour emulated on the CPU
    (tests/cuda_graph_emulation.py) give bitwise the same losses and parameters as the same
    code run eagerly; a step's returned terms survive the next step; a forward that would
    accumulate gradients is refused."""
    import training.cuda_graphs
    import training.losses
    from tests import cuda_graph_emulation
    from tools.make_synthetic import make_synthetic

    monkeypatch.setattr(torch.cuda, "make_graphed_callables",
                        cuda_graph_emulation.make_graphed_callables)
    for module in (training.cuda_graphs, training.losses):
        monkeypatch.setattr(module, "prepare_capture", lambda device: None)
    data = make_synthetic(tmp_path / "data", frames=8, res=24, seed=1)  # a head on a body
    eager = _cpu_trainer(tmp_path / "eager", data, graphs=False)
    graphed = _cpu_trainer(tmp_path / "graphed", data, graphs=True)
    assert graphed.model.body.num_gaussians > 0 and graphed.frame_networks.shape is not None
    counts = set()
    previous = None
    for it in range(1, 61):
        torch.manual_seed(it)  # densification's split draws from the global generator
        a = eager.step(it)
        torch.manual_seed(it)
        b = graphed.step(it)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (it, k, a[k], b[k])
        if previous is not None:  # the last step's terms were not overwritten by this one
            assert torch.equal(previous[0]["total"], previous[1])
        previous = (b, b["total"].clone())
        counts.add(graphed.model.num_gaussians)
    print(f"\nGaussian counts {sorted(counts)}, captures {graphed.frame_networks.captures}")
    assert len(counts) > 2 and graphed.frame_networks.captures >= 3, (
        counts, graphed.frame_networks.captures)
    sa, sb = eager.model.state_dict(), graphed.model.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # gradients left on the networks: the next graphed forward refuses to overwrite them
    g = graphed.frame_networks(torch.rand(graphed.scene.exp_dim), torch.zeros(3), deform=True)
    g.means.sum().backward()
    with pytest.raises(RuntimeError, match="set_to_none"):
        graphed.frame_networks(torch.rand(graphed.scene.exp_dim), torch.zeros(3), deform=True)


# ------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_cuda_graphs_match_the_eager_path(precision):
    """Replayed graphs, with the fused deformation layers as training runs them, give the
    eager values and gradients, across recaptures (count changes, deformation switched on)
    and while the count stays inside a bucket."""
    from utils.execution import configure_precision

    dtype = configure_precision(precision, torch.device("cuda"))
    m = _model(3000, "cuda", autocast_dtype=dtype, fused=True)
    fn = FrameNetworks(m, graphs=True, bucket=1024)
    exp, campos = torch.rand(6, device="cuda"), torch.tensor([0.0, 0.0, 0.5], device="cuda")
    if precision == "fp32":  # graphed fused layers against the eager, unfused network
        check = functools.partial(_compare, atol=1e-4, rtol=1e-3)
    else:  # bf16: against the same (fused) arithmetic run eagerly, unpadded (padding changes
        # the products' reduction order and so the bf16 rounding of sums over the Gaussians)
        check = functools.partial(_compare, ref_fused=True, rel_norm=2e-2)
    check(m, fn, exp, campos, deform=False)
    check(m, fn, exp, campos, deform=True)
    assert fn.captures == 2
    for _ in range(3):  # replays with new inputs
        exp = torch.rand(6, device="cuda")
        check(m, fn, exp, campos, deform=True)
    assert fn.captures == 2
    for rows, captures, cap in ((2500, 2, 3072), (900, 3, 1024), (1500, 4, 2048)):
        # fewer rows inside the bucket: no capture; less than a third of it, or more: capture
        keep = torch.arange(rows, device="cuda") * m.num_gaussians // rows
        m.set_gaussians({k: getattr(m, k).detach()[keep] for k in
                         ("xyz", "rotation", "scaling", "derivations")})
        check(m, fn, exp, campos, deform=True)
        assert (fn.captures, fn._key[0]) == (captures, cap)
    # many recaptures in a row (each frees the previous graph): every one must still compute
    # the eager result (a stale cuBLAS workspace in a freed graph pool broke the second one)
    for k in range(30):
        rows = (2100, 100)[k % 2]  # out of the bucket every time: a capture each
        keep = torch.arange(rows, device="cuda") % m.num_gaussians
        m.set_gaussians({name: getattr(m, name).detach()[keep] for name in
                         ("xyz", "rotation", "scaling", "derivations")})
        m.zero_grad(set_to_none=True)
        g = fn(exp, campos, deform=True)
        assert g.means.shape[0] == rows
        if k % 10 == 9:
            check(m, fn, exp, campos, deform=True)
    assert fn.captures == 4 + 30



@pytest.mark.gpu
def test_graphed_loss_matches_the_eager_loss(tmp_path):
    """The graphed loss, VGG term included (random VGG16 weights), gives the eager value and
    image gradient, replay after replay."""
    import torchvision

    from utils.loss_utils import VGGPerceptualLoss

    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16().state_dict(), tmp_path / "vgg16.pth")
    vgg = VGGPerceptualLoss(str(tmp_path / "vgg16.pth")).cuda()
    for term in (None, vgg):
        loss_fn = TrainingLoss(0.2, 0.01, term, graphs=True)
        ref_fn = TrainingLoss(0.2, 0.01, term, graphs=False)
        for _ in range(3):
            img = torch.rand(3, 64, 80, device="cuda", requires_grad=True)
            gt = (torch.rand(64, 80, 3, device="cuda") * 255).to(torch.uint8)
            fast, ref = loss_fn(img, gt), ref_fn(img, gt)
            torch.testing.assert_close(fast[0], ref[0], rtol=1e-4, atol=1e-6)
            assert fast[1].keys() == ref[1].keys()
            for k in ref[1]:
                torch.testing.assert_close(fast[1][k], ref[1][k], rtol=1e-4, atol=1e-6)
            (ga,) = torch.autograd.grad(fast[0], img)
            (gb,) = torch.autograd.grad(ref[0], img)
            torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-8)



@pytest.mark.gpu
def test_graphed_loss_with_alpha_and_regions_matches_the_eager_loss():
    """The alpha and the eye-and-mouth terms in the graphed loss: the eager values and image
    and alpha gradients, with a new region map (a new area to normalise by) at each replay."""
    loss_fn = TrainingLoss(0.2, 0.0, None, graphs=True, lambda_alpha=0.1, lambda_regions=1.0)
    ref_fn = TrainingLoss(0.2, 0.0, None, graphs=False, lambda_alpha=0.1, lambda_regions=1.0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for k in range(4):
        img = torch.rand(3, 48, 40, device="cuda", generator=gen, requires_grad=True)
        alpha = torch.rand(1, 48, 40, device="cuda", generator=gen, requires_grad=True)
        gt = (torch.rand(48, 40, 3, device="cuda", generator=gen) * 255).to(torch.uint8)
        mask = (torch.rand(48, 40, device="cuda", generator=gen) * 255).to(torch.uint8)
        regions = torch.zeros(48, 40, dtype=torch.uint8, device="cuda")
        regions[10:14 + 3 * k, 5:30] = 1
        fast = loss_fn(img, gt, alpha, mask, regions)
        ref = ref_fn(img, gt, alpha, mask, regions)
        assert "regions" in fast[1] and fast[1].keys() == ref[1].keys()
        for key in ref[1]:
            torch.testing.assert_close(fast[1][key], ref[1][key], rtol=1e-4, atol=1e-6)
        ga = torch.autograd.grad(fast[0], (img, alpha))
        gb = torch.autograd.grad(ref[0], (img, alpha))
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-8)

def _check_render_networks(device: str, graphs: bool):
    from scene.rendering import RenderNetworks

    m = _model(700, device, fused=device == "cuda")
    m.active_sh_degree = 3
    unfused = _twin(m, fused=False)
    nets = RenderNetworks(m, graphs=graphs)
    gen = torch.Generator().manual_seed(0)
    for b in (3, 3, 1, 1):  # a capture per batch size, then replays with new inputs
        exps = torch.rand(b, 6, generator=gen).to(device)
        campos = (torch.rand(b, 3, generator=gen) - 0.5).to(device) + torch.tensor(
            [0.0, 0.0, 0.6], device=device)
        g = nets.frame(exps[0], campos[0]) if b == 1 else nets(exps, campos)
        same = m.frames(exps, campos)  # the same arithmetic, eagerly
        for k in range(b):
            ref = unfused.derive(exps[k], campos[k])  # unfused layers (on CUDA: other products)
            for name in KEYS:
                got = getattr(g, name) if b == 1 else getattr(g, name)[k]
                torch.testing.assert_close(got, getattr(same, name)[k], atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(got, getattr(ref, name), atol=1e-4, rtol=1e-3)
    return nets


def test_render_networks_match_derive_on_the_cpu():
    """Without graphs, RenderNetworks is model.frames: every frame of a batch, and frame(),
    equal model.derive."""
    nets = _check_render_networks("cpu", graphs=False)
    assert nets.captures == 0


@pytest.mark.gpu
def test_graphed_render_networks_match_derive():
    """Replayed render graphs (fused layers) give model.derive's Gaussians for every frame,
    for new inputs and across batch sizes."""
    nets = _check_render_networks("cuda", graphs=True)
    assert nets.captures == 2
