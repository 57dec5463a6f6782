"""The model: checkpoints of the original release render as the original did; our own files
keep the release's layout, keys and shapes; our math keeps Gaussians valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scene.gaussian_model import GaussianHead, ModelConfig
from scene.release import ReleaseGaussianHead, V1GaussianHead, quat_to_matrix_release
from scene.run_folder import load_model, save_model, write_meta
from tests.helpers import FIXTURE, needs_fixture
from utils.graphics_utils import quat_to_rotmat

REPO = Path(__file__).resolve().parents[1]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0**2
    return float(-10 * np.log10(max(mse, 1e-12)))


@needs_fixture
@pytest.mark.parametrize("backend,device", [
    ("torch", "cpu"),
    pytest.param("gsplat", "cuda", marks=pytest.mark.gpu),
    pytest.param("torch", "cuda", marks=pytest.mark.gpu),
])
def test_release_checkpoint_renders_like_the_original(tmp_path, backend, device):
    """render.py on the fixture matches the original's own renders."""
    out = tmp_path / "renders"
    r = subprocess.run(
        [sys.executable, "render.py", "-m", str(FIXTURE / "model"), "-s", str(FIXTURE / "data"),
         "--test_frames", "100", "--eval_frames", "100", "--skip_train", "--backend", backend,
         "--device", device, "-o", str(out), "--max_frames", "20", "--no_video", "--quiet"],
        cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "original release" in r.stdout
    psnrs = []
    for k in range(20):
        ours = cv2.imread(str(out / "test" / "ours_4000" / "renders" / f"{k:05d}.png"))
        ref = cv2.imread(str(FIXTURE / "model" / "reference_renders_iter4000" / f"{k:05d}.png"))
        psnrs.append(_psnr(ours, ref))
    print(f"fixture via {backend} on {device}, PSNR vs the original's renders: mean "
          f"{np.mean(psnrs):.2f} dB, min {np.min(psnrs):.2f} dB")
    assert np.mean(psnrs) >= 35.0 and min(psnrs) >= 30.0


def test_release_derivation_matrices_are_reproduced_exactly():
    """The release joins nine [N] entry tensors with torch.cat(dim=-1) and views the result as
    [N, 3, 3]; a direct transcription of that must equal our implementation."""
    torch.manual_seed(0)
    tau = torch.randn(7, 4, 4)

    def transcription(x):  # the release's steps, one derivation at a time
        q = x * torch.sqrt(2.0 / torch.norm(x, dim=-1).unsqueeze(-1))
        q = torch.bmm(q.unsqueeze(-1), q.unsqueeze(1))
        e = [1 - q[:, 2, 2] - q[:, 3, 3], q[:, 1, 2] - q[:, 3, 0], q[:, 1, 3] + q[:, 2, 0],
             q[:, 1, 2] + q[:, 3, 0], 1 - q[:, 1, 1] - q[:, 3, 3], q[:, 2, 3] - q[:, 1, 0],
             q[:, 1, 3] - q[:, 2, 0], q[:, 2, 3] + q[:, 1, 0], 1 - q[:, 1, 1] - q[:, 2, 2]]
        return torch.cat(e, dim=-1).view(-1, 3, 3)

    expected = torch.stack([transcription(tau[:, k]) for k in range(4)], dim=1)
    torch.testing.assert_close(quat_to_matrix_release(tau), expected)


def test_fixed_derivations_are_rotations():
    q = torch.nn.functional.normalize(torch.randn(50, 4, 4), dim=-1)
    r = quat_to_rotmat(q)
    eye = torch.eye(3).expand_as(r)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(50, 4), atol=1e-5, rtol=0)


def test_rotating_by_quaternions_equals_the_rotation_matrices():
    """The derivation coordinates (rotate_by_quaternions) equal the rotation
    matrices applied to the points, for one frame and for a batch, non-unit quaternions too,
    gradients included."""
    from utils.graphics_utils import rotate_by_quaternions

    gen = torch.Generator().manual_seed(3)
    q = (2 * torch.randn(30, 4, 4, generator=gen, dtype=torch.float64)).requires_grad_(True)
    p = torch.randn(2, 30, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    ref = torch.einsum("nkij,bnj->kbni", quat_to_rotmat(q), p)
    out = rotate_by_quaternions(q, p)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(rotate_by_quaternions(q, p[0]), ref[:, 0], atol=1e-12,
                               rtol=1e-12)
    cot = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    g_ref = torch.autograd.grad((ref * cot).sum(), (q, p))
    g_out = torch.autograd.grad((out * cot).sum(), (q, p))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_derivation_coordinates_rotate_and_older_configs_keep_theirs(tmp_path):
    """New models rotate positions by their derivations (distances to the head's centre are
    kept); a run written before model_meta.json version 2 (or with derivation_coords "v1") is
    loaded as V1GaussianHead and keeps the formula it was trained with, in single and batched
    frames alike."""
    from scene.run_folder import FORMAT_VERSION, model_class, read_config

    m = _small_model(30)
    means = m.xyz.detach() + 0.01
    p = (means - m.center) / m.radius
    coords = m.derivation_coords(means, m.derivations)  # [K, N, 3]
    torch.testing.assert_close(coords.norm(dim=-1), p.norm(dim=-1).expand(4, -1))
    v1 = V1GaussianHead(m.cfg)
    v1.set_gaussians(m.per_gaussian())
    v1.load_state_dict(m.state_dict())
    old = v1.derivation_coords(means, v1.derivations)
    expected = torch.einsum("nkij,nj->knj", quat_to_rotmat(m.derivations.detach()), p)
    torch.testing.assert_close(old, expected)
    assert (old - coords).abs().max() > 1e-3
    exps, campos = torch.rand(2, 6), torch.tensor([[0.0, 0.0, 0.6], [0.1, 0.0, 0.6]])
    for model in (m, v1):
        batch = model.frames(exps, campos)
        for k in range(2):
            one = model.derive(exps[k], campos[k])
            torch.testing.assert_close(batch.sh[k], one.sh, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(batch.opacities[k], one.opacities, atol=1e-5, rtol=1e-4)
    # model_meta.json: version 1 without the field reads as "v1"; ours are written with it
    write_meta(tmp_path, m)
    meta = json.loads((tmp_path / "model_meta.json").read_text())
    assert meta["version"] == FORMAT_VERSION == 3
    assert read_config(tmp_path, 0) == (m.cfg, GaussianHead)
    meta["version"] = 1
    del meta["model"]["derivation_coords"]
    (tmp_path / "model_meta.json").write_text(json.dumps(meta))
    assert read_config(tmp_path, 0) == (m.cfg, V1GaussianHead)
    assert model_class({"derivation_coords": "v1"}, 2) is V1GaussianHead
    write_meta(tmp_path, v1)
    assert read_config(tmp_path, 0)[1] is V1GaussianHead


def _small_model(n=40, cls=GaussianHead, exp_dim=6, **execution) -> GaussianHead:
    torch.manual_seed(0)
    cfg = ModelConfig(exp_dim=exp_dim, center=(0.0, 0.0, 0.0), radius=0.2)
    m = cls(cfg, **execution)
    m.init_from_points(np.random.default_rng(0).normal(scale=0.05, size=(n, 3)))
    return m


def test_fixed_offsets_keep_gaussians_valid():
    m = _small_model()
    with torch.no_grad():
        m.deform.gaussian_rotation.bias.fill_(-3.0)  # large offsets
        m.deform.gaussian_scaling.bias.fill_(-5.0)
    g = m.derive(torch.rand(6), torch.tensor([0.0, 0.0, 0.5]))
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(40))
    assert (g.scales > 0).all()
    assert g.sh.shape == (40, 16, 3) and g.opacities.shape == (40,)
    assert ((g.opacities > 0) & (g.opacities < 1)).all()


def test_initial_scales_from_three_nearest_neighbours():
    m = GaussianHead(ModelConfig(exp_dim=3))
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [10, 10, 10]], float)
    m.init_from_points(pts)
    # point 0: neighbours at 1, 2, 3 -> sqrt(mean(1, 4, 9))
    assert float(torch.exp(m.scaling[0, 0]).detach()) == pytest.approx(np.sqrt(14 / 3), rel=1e-5)
    torch.testing.assert_close(m.derivations.norm(dim=-1), torch.ones(5, 4))
    # independent derivations per Gaussian (the release gave all Gaussians the same four)
    assert (m.derivations[0] - m.derivations[1]).abs().max() > 1e-3


@needs_fixture
def test_saved_files_keep_the_release_keys_and_shapes(tmp_path):
    m = _small_model(exp_dim=46)
    save_model(tmp_path, m, 7)
    for comp in ("deform", "trip", "tilted"):
        ours = torch.load(tmp_path / comp / "iteration_7" / f"{comp}.pth", weights_only=True)
        ref = torch.load(FIXTURE / "model" / comp / "iteration_4000" / f"{comp}.pth",
                         map_location="cpu", weights_only=True)
        assert ours.keys() == ref.keys()
        for k in ours:
            if comp == "tilted":
                assert ours[k].shape[1:] == ref[k].shape[1:]
            else:
                assert ours[k].shape == ref[k].shape, k
    from plyfile import PlyData

    ours = PlyData.read(str(tmp_path / "point_cloud/iteration_7/point_cloud.ply"))["vertex"]
    ref = PlyData.read(str(FIXTURE / "model/point_cloud/iteration_4000/point_cloud.ply"))["vertex"]
    assert ours.data.dtype.names == ref.data.dtype.names


def test_our_model_round_trips_and_is_not_mistaken_for_a_release(tmp_path):
    m = _small_model()
    save_model(tmp_path, m, 5)
    write_meta(tmp_path, m)
    loaded, it = load_model(tmp_path)
    assert it == 5 and type(loaded) is GaussianHead
    exp, cam = torch.rand(6), torch.tensor([0.1, 0.0, 0.5])
    a, b = m.derive(exp, cam), loaded.derive(exp, cam)
    torch.testing.assert_close(a.means, b.means)
    torch.testing.assert_close(a.sh, b.sh)
    torch.testing.assert_close(a.opacities, b.opacities)
    # without model_meta.json the same files are read as a release checkpoint
    (tmp_path / "model_meta.json").unlink()
    legacy, _ = load_model(tmp_path)
    assert type(legacy) is ReleaseGaussianHead and legacy.centred_principal_point
    # ... unless cfg_args says that our train.py wrote the run: then it is refused
    from scene.run_folder import write_cfg_args
    from utils.errors import CheckpointError

    write_cfg_args(tmp_path, {"source_path": "/d", "num_derivations": 4, "backend": "auto"})
    with pytest.raises(CheckpointError, match="model_meta.json is missing"):
        load_model(tmp_path)


@needs_fixture
def test_release_checkpoint_config_is_inferred():
    m, it = load_model(FIXTURE / "model")
    assert it == 4000 and type(m) is ReleaseGaussianHead
    assert m.cfg.exp_dim == 46 and m.cfg.num_derivations == 4 and m.num_gaussians == 13848
    assert m.alpha_max == 0.99 and m.near_plane == 0.2 and m.active_sh_degree == 3


def test_missing_component_is_a_clear_error(tmp_path):
    from utils.errors import CheckpointError

    m = _small_model()
    save_model(tmp_path, m, 3)
    (tmp_path / "trip" / "iteration_3" / "trip.pth").unlink()
    with pytest.raises(CheckpointError, match="trip.pth is missing"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="no saved iteration 9"):
        load_model(tmp_path, iteration=9)
    # a save cut short at iteration 3 leaves iteration 2 the latest whole one
    save_model(tmp_path, m, 2)
    assert load_model(tmp_path)[1] == 2
    with pytest.raises(CheckpointError, match="trip.pth is missing"):
        load_model(tmp_path, iteration=3)


def test_batched_frames_match_single_frames():
    m = _small_model()
    with torch.no_grad():
        m.deform.gaussian_warp.bias.fill_(0.01)
    exps = torch.rand(3, 6)
    campos = torch.tensor([[0.0, 0.0, 0.5], [0.1, 0.0, 0.5], [0.0, 0.1, 0.4]])
    batch = m.frames(exps, campos)
    for b in range(3):
        one = m.derive(exps[b], campos[b])
        for k in ("means", "opacities", "sh", "quats", "scales"):
            torch.testing.assert_close(getattr(batch, k)[b], getattr(one, k))


def test_mixed_precision_path_matches_fp32():
    """The bf16 MLP path (used on GPUs) computes the same Gaussians as the fp32 reference,
    within bf16 rounding, and renders the same image (checked here on the CPU)."""
    from scene.cameras import Camera
    from scene.dataset_readers import Intrinsics
    from scene.rendering import render_view
    from tests.helpers import look_at_c2w

    m = _small_model(n=300)
    mixed = _small_model(n=300, autocast_dtype=torch.bfloat16)
    mixed.load_state_dict(m.state_dict())
    exp, campos = torch.rand(6), torch.tensor([0.0, 0.0, 0.5])
    ref = m.derive(exp, campos)
    fast = mixed.derive(exp, campos)
    for k in ("means", "opacities", "sh", "quats", "scales"):
        a, b = getattr(fast, k), getattr(ref, k)
        rel = float(((a - b).norm() / b.norm()).detach())
        assert rel < 2e-2, (k, rel)
    cam = Camera(Intrinsics(48, 48, 70.0, 70.0, 24.0, 24.0), look_at_c2w([0.0, 0.0, 0.5]), exp)
    bg = torch.ones(3)
    m.active_sh_degree = 3
    ia = render_view(m, fast, cam, bg, "torch").image
    ib = render_view(m, ref, cam, bg, "torch").image
    psnr = float(-10 * torch.log10(((ia - ib) ** 2).mean()).detach())
    assert psnr > 40, psnr
