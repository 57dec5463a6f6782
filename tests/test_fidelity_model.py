"""The model's fidelity options: the body in the capture camera's frame, appearance anchored to
the canonical Gaussians, expression residuals of opacity and colour, the alpha loss, and the
schedule that scales with --iterations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from arguments import SCHEDULE_FRACTIONS, OptimizationParams
from scene.body_model import BodyGaussians
from scene.gaussian_model import GaussianHead, ModelConfig
from scene.run_folder import load_model, read_config, save_model, write_meta
from tests.helpers import look_at_c2w
from training.losses import TrainingLoss
from utils.graphics_utils import covariance, quat_to_rotmat
from utils.loss_utils import l1_loss, ssim
from utils.sh_utils import C0


def _model(n=60, **cfg) -> GaussianHead:
    torch.manual_seed(0)
    m = GaussianHead(ModelConfig(exp_dim=5, radius=0.2, **cfg))
    m.init_from_points(np.random.default_rng(0).normal(scale=0.05, size=(n, 3)))
    if m.body is not None:
        rng = np.random.default_rng(1)
        pts = rng.normal(scale=0.05, size=(30, 3)) + [0.0, -0.2, -0.5]
        poses = np.stack([look_at_c2w([0.1 * np.sin(a), 0.0, 0.5]) for a in (-1, 0, 1)])
        m.body.init_from_points(pts, rng.random((30, 3)), poses, length=0.2)
    return m


def test_body_lives_in_the_capture_camera_frame():
    """With the pose network at zero and ``follow`` at 0, a body Gaussian sits at T x in the
    head's frame for camera-to-head T: the same point in the camera's frame whatever the head
    pose, its covariance turned with T. With ``follow`` 1 (the start) it moves by the head's
    translation from its mean position, in the camera's frame."""
    b = _model(body=True).body
    poses = torch.tensor(np.stack([look_at_c2w([0.15 * np.sin(a), 0.02, 0.5])
                                   for a in (-0.8, 0.3)]), dtype=torch.float32)
    followed = b.frames(poses)["means"]
    with torch.no_grad():
        b.follow.zero_()
    out = b.frames(poses)
    for k in range(2):
        r, t = poses[k, :3, :3], poses[k, :3, 3]
        head_in_camera = -(r.T @ t)
        torch.testing.assert_close((followed[k] - t) @ r - b.xyz.detach(),
                                   (head_in_camera - b.ref_translation).expand(30, 3),
                                   atol=1e-5, rtol=1e-4)
    for k in range(2):
        r, t = poses[k, :3, :3], poses[k, :3, 3]
        torch.testing.assert_close(out["means"][k], b.xyz @ r.T + t)
        # back in the camera's frame: the same point for both head poses
        torch.testing.assert_close((out["means"][k] - t) @ r, b.xyz.detach(), atol=1e-5,
                                   rtol=1e-5)
        cov = covariance(quat_to_rotmat(out["quats"][k]), out["scales"][k])
        own = covariance(quat_to_rotmat(b.rotation.detach()), torch.exp(b.scaling.detach()))
        torch.testing.assert_close(cov, r @ own @ r.T, atol=1e-6, rtol=1e-4)
    # colours are the DC band (rgb = C0 c + 0.5), view-independent
    assert out["sh"].shape == (2, 30, 16, 3) and (out["sh"][:, :, 1:] == 0).all()
    # the pose code is zero at the reference pose (the mean of the training poses)
    ref = torch.eye(4)
    ref[:3, :3] = b.ref_rotation.T
    ref[:3, 3] = -(b.ref_rotation.T @ b.ref_translation)
    torch.testing.assert_close(b.pose_code(ref[None]), torch.zeros(1, 9), atol=1e-6, rtol=0)


def test_with_body_joins_the_sets_single_and_batched():
    m = _model(body=True)
    exps, campos = torch.rand(2, 5), torch.tensor([[0.0, 0.0, 0.5], [0.05, 0.0, 0.5]])
    poses = torch.tensor(np.stack([look_at_c2w(c) for c in campos.numpy()]),
                         dtype=torch.float32)
    batch = m.with_body(m.frames(exps, campos), poses)
    assert batch.means.shape == (2, 90, 3) and batch.opacities.shape == (2, 90)
    assert batch.sh.shape == (2, 90, 16, 3) and batch.quats.shape == (2, 90, 4)
    one = m.with_body(m.derive(exps[1], campos[1]), poses[1])
    for k in ("means", "opacities", "sh", "quats", "scales"):
        torch.testing.assert_close(getattr(one, k), getattr(batch, k)[1], atol=1e-5, rtol=1e-4)
    no_body = _model()
    g = no_body.derive(exps[0], campos[0])
    assert no_body.with_body(g, poses[0]) is g


def test_canonical_appearance_keeps_colour_with_the_gaussian():
    """Moving the Gaussians (the deformation's position offset) changes the colour and opacity
    sampled at the deformed position (the paper) but not those anchored to the canonical one."""
    exp, campos = torch.rand(5), torch.tensor([0.0, 0.0, 0.5])
    for appearance, moves in (("deformed", True), ("canonical", False)):
        m = _model(appearance=appearance)
        still = m.derive(exp, campos)
        with torch.no_grad():
            m.deform.gaussian_warp.bias.add_(torch.tensor([0.02, -0.01, 0.0]))
        moved = m.derive(exp, campos)
        assert not torch.allclose(moved.means, still.means)
        changed = (moved.opacities - still.opacities).abs().max() > 1e-4
        assert bool(changed) == moves, appearance


def test_expression_residuals_change_opacity_and_colour():
    """The residual heads start at zero (the same Gaussians as without them); their outputs
    shift the opacity's logit and the colour's DC band."""
    exp, campos = torch.rand(5), torch.tensor([0.0, 0.0, 0.5])
    plain, res = _model(), _model(expression_residuals=True)
    res.set_gaussians({k: v.detach().clone() for k, v in plain.per_gaussian().items()})
    missing = res.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["deform.gaussian_color.bias", "deform.gaussian_color.weight",
                               "deform.gaussian_opacity.bias", "deform.gaussian_opacity.weight"]
    a, b = plain.derive(exp, campos), res.derive(exp, campos)
    for k in ("means", "opacities", "sh"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k))
    with torch.no_grad():
        res.deform.gaussian_opacity.bias.fill_(0.5)
        res.deform.gaussian_color.bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
    c = res.derive(exp, campos)
    logit = torch.logit(a.opacities)
    torch.testing.assert_close(torch.logit(c.opacities), logit + 0.5, atol=1e-4, rtol=1e-4)
    shift = torch.tensor([0.1, 0.0, -0.2]).expand(60, 3)
    torch.testing.assert_close(c.sh[:, 0] - a.sh[:, 0], shift, atol=1e-6, rtol=0)
    torch.testing.assert_close(c.sh[:, 1:], a.sh[:, 1:])


@pytest.mark.parametrize("residuals", [False, True])
def test_fused_deformation_with_residual_heads_matches_the_eager_network(residuals):
    from scene.deform_model import DeformNetwork

    torch.manual_seed(0)
    net = DeformNetwork(7, residuals=residuals)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    xyz, exp = torch.randn(50, 3) * 0.1, torch.rand(7)
    eager = net(xyz, exp)
    net.fused = True
    fused = net(xyz, exp)
    assert len(eager) == len(fused) == (5 if residuals else 3)
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_model_files_round_trip_with_body_and_options(tmp_path):
    m = _model(body=True, appearance="canonical", expression_residuals=True)
    m.active_sh_degree = 2
    save_model(tmp_path, m, 2000)
    write_meta(tmp_path, m)
    assert (tmp_path / "body" / "iteration_2000" / "body.pth").is_file()
    loaded, it = load_model(tmp_path)
    assert it == 2000 and loaded.cfg == m.cfg and loaded.body.num_gaussians == 30
    exp, campos = torch.rand(5), torch.tensor([0.02, 0.0, 0.5])
    pose = torch.tensor(look_at_c2w([0.02, 0.0, 0.5]), dtype=torch.float32)
    a = m.with_body(m.derive(exp, campos), pose)
    b = loaded.with_body(loaded.derive(exp, campos), pose)
    for k in ("means", "opacities", "sh", "quats", "scales"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k))
    # the body is a required component of such a run
    (tmp_path / "body" / "iteration_2000" / "body.pth").unlink()
    from utils.errors import CheckpointError

    with pytest.raises(CheckpointError, match="body.pth is missing"):
        load_model(tmp_path, iteration=2000)


def test_files_without_the_new_fields_load_as_the_paper(tmp_path):
    """model_meta.json written before the options existed: the paper's formulation."""
    m = _model()
    write_meta(tmp_path, m)
    meta = json.loads((tmp_path / "model_meta.json").read_text())
    for k in ("appearance", "expression_residuals", "body"):
        meta["model"].pop(k)
    meta["version"] = 2
    (tmp_path / "model_meta.json").write_text(json.dumps(meta))
    cfg, _ = read_config(tmp_path, 0)
    assert (cfg.appearance, cfg.expression_residuals, cfg.body) == ("deformed", False, False)


def test_alpha_term_of_the_loss():
    torch.manual_seed(0)
    img = torch.rand(3, 16, 20, requires_grad=True)
    alpha = torch.rand(1, 16, 20, requires_grad=True)
    gt_u8 = (torch.rand(16, 20, 3) * 255).to(torch.uint8)
    mask_u8 = (torch.rand(16, 20) * 255).to(torch.uint8)
    total, terms = TrainingLoss(0.2, 0.0, None, graphs=False, lambda_alpha=0.3)(
        img, gt_u8, alpha, mask_u8)
    gt = gt_u8.permute(2, 0, 1).float() / 255
    ref = (0.8 * l1_loss(img, gt) + 0.2 * (1 - ssim(img, gt))
           + 0.3 * (alpha[0] - mask_u8.float() / 255).abs().mean())
    torch.testing.assert_close(total, ref)
    assert set(terms) == {"l1", "ssim", "alpha", "total"}
    (g,) = torch.autograd.grad(total, alpha)
    assert g.abs().sum() > 0


def test_schedule_scales_with_iterations():
    o = OptimizationParams(iterations=40_000).resolved()
    assert o.warm_up == round(SCHEDULE_FRACTIONS["warm_up"] * 40_000)
    assert o.densify_until_iter == 20_000 and o.position_lr_max_steps == 40_000
    given = OptimizationParams(iterations=40_000, warm_up=3_000,
                               densify_until_iter=15_000).resolved()
    assert given.warm_up == 3_000 and given.densify_until_iter == 15_000
    assert OptimizationParams().warm_up == -1  # the options themselves stay as given


def test_body_colour_initialisation():
    b = BodyGaussians(sh_coeffs=4)
    rgb = np.array([[0.2, 0.5, 0.9], [1.0, 0.0, 0.5]])
    b.init_from_points(np.array([[0.0, 0.0, -0.5], [0.01, 0.0, -0.5]]), rgb,
                       np.eye(4)[None], length=0.1)
    torch.testing.assert_close(b.color * C0 + 0.5, torch.tensor(rgb, dtype=torch.float32))


def test_identity_start_leaves_the_canonical_gaussians_in_place_and_still_learns():
    """--deform_start identity: zero position, rotation and scale offsets for any input (the
    residual heads start at zero either way), and gradients still reach the heads."""
    from scene.deform_model import DeformNetwork

    torch.manual_seed(0)
    net = DeformNetwork(exp_dim=5, depth=4, width=32, residuals=True)
    x, e = torch.randn(50, 3), torch.randn(5)
    assert net(x, e)[0].abs().max() > 1e-3  # random by default, as the paper
    net.start_as_identity()
    outs = net(x, e)
    for o in outs:
        assert torch.count_nonzero(o) == 0
    sum(o.sum() for o in outs[:3]).backward()
    assert net.gaussian_warp.weight.grad.abs().sum() > 0
