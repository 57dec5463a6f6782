"""tools/export.py and scene/export.py: a frame's Gaussians through the 3DGS PLY and the .splat
format and back, against the model's own frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData

from scene.dataset_readers import read_dataset
from scene.export import (
    GaussianArrays,
    factor_covariances,
    frame_gaussians,
    mean_pose,
    read_splat,
    splat_bytes,
)
from scene.gaussian_model import GaussianHead, ModelConfig
from scene.run_folder import load_model, save_model, write_cfg_args, write_meta
from tests.helpers import FIXTURE, needs_fixture
from tools import export
from tools.make_synthetic import make_synthetic
from utils.errors import OptionError
from utils.sh_utils import C0

ITERATION = 3000  # every SH band is active by then


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding a randomly initialised model with a body (no training: the files
    are what is tested), and its dataset."""
    data = make_synthetic(tmp_path_factory.mktemp("data") / "syn", frames=20, res=32, seed=0,
                          novel_yaws=())
    info = read_dataset(data, test_frames=4, eval_frames=4)
    rng = np.random.default_rng(0)
    cfg = ModelConfig(exp_dim=info.exp_dim, sh_degree=3, triplane_res=16, triplane_channels=8,
                      radius=0.15, body=True, appearance="canonical",
                      expression_residuals=True, colour_view="capture")
    torch.manual_seed(0)
    model = GaussianHead(cfg)
    model.init_from_points(rng.normal(scale=0.05, size=(300, 3)))
    with torch.no_grad():  # shapes and rotations of every kind
        model.scaling.add_(torch.randn_like(model.scaling) * 0.5)
        model.rotation.copy_(torch.randn_like(model.rotation))
        for p in model.deform.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    c2ws = np.stack([f.c2w for f in info.train_frames])
    model.body.init_from_points(rng.normal(scale=0.05, size=(100, 3)) + [0, -0.2, -0.5],
                                rng.random((100, 3)), c2ws, length=0.15)
    out = tmp_path_factory.mktemp("runs") / "random"
    write_cfg_args(out, {"source_path": str(data), "test_frames": 4, "eval_frames": 4,
                         "white_background": True})
    write_meta(out, model)
    save_model(out, model, ITERATION, torch.tensor(c2ws[:, :3, 3].mean(0), dtype=torch.float32))
    return out, info


def _read_ply(path) -> dict[str, np.ndarray]:
    v = PlyData.read(str(path))["vertex"]
    names = v.data.dtype.names

    def cols(prefix):
        c = sorted((n for n in names if n.startswith(prefix)), key=lambda n: int(n.split("_")[-1]))
        return np.stack([v[n] for n in c], axis=1)

    n = len(v["x"])
    rest = cols("f_rest_").reshape(n, 3, -1).transpose(0, 2, 1)  # channel-major in the file
    return {"xyz": np.stack([v["x"], v["y"], v["z"]], 1), "scale": cols("scale_"),
            "rot": cols("rot_"), "opacity": np.asarray(v["opacity"]),
            "sh": np.concatenate([cols("f_dc_")[:, None], rest], axis=1)}


def _expected_frame(model, info, k):
    f = info.frames[k]
    c2w = torch.tensor(f.c2w, dtype=torch.float32)
    return frame_gaussians(model, torch.from_numpy(f.exp), c2w[:3, 3], c2w)


def test_a_frame_round_trips_through_the_ply(run, tmp_path, capsys):
    out, info = run
    path = tmp_path / "frame.ply"
    assert export.main(["-m", str(out), "-o", str(path), "--frame", "3", "--device", "cpu"]) == 0
    assert "frame 3 (img_id 3)" in capsys.readouterr().out
    model, _ = load_model(out)
    g = _expected_frame(model, info, 3)
    ply = _read_ply(path)
    n_head = model.num_gaussians
    assert len(ply["xyz"]) == n_head + model.body.num_gaussians
    np.testing.assert_allclose(ply["xyz"], g.means.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.exp(ply["scale"]), g.scales.numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ply["rot"], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ply["rot"], g.quats.numpy(), atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-ply["opacity"])), g.opacities.numpy(),
                               atol=1e-6)
    assert ply["sh"].shape == (len(ply["xyz"]), 16, 3)
    np.testing.assert_allclose(ply["sh"], g.sh.numpy(), atol=1e-6)
    assert np.abs(ply["sh"][:n_head, 1:]).max() > 0  # the head's view-dependent bands
    assert np.all(ply["sh"][n_head:, 1:] == 0)  # the body's colour is the DC band only
    # a frame of another expression and pose is another set of Gaussians
    other = _expected_frame(model, info, 10)
    assert np.abs(other.means.numpy() - ply["xyz"]).max() > 1e-4


def test_the_canonical_gaussians_are_the_saved_point_cloud_with_the_body(run, tmp_path):
    out, info = run
    path = tmp_path / "canonical.ply"
    export.main(["-m", str(out), "-o", str(path), "--device", "cpu"])
    ply = _read_ply(path)
    saved = _read_ply(out / "point_cloud" / f"iteration_{ITERATION}" / "point_cloud.ply")
    n = len(saved["xyz"])
    for key in ("xyz", "scale", "opacity", "sh"):
        np.testing.assert_allclose(ply[key][:n], saved[key], atol=2e-5, err_msg=key)
    q = saved["rot"] / np.linalg.norm(saved["rot"], axis=1, keepdims=True)
    np.testing.assert_allclose(ply["rot"][:n], q, atol=1e-6)
    model, _ = load_model(out)
    pose = torch.tensor(mean_pose([f.c2w for f in info.train_frames]), dtype=torch.float32)
    body = model.body.frames(pose[None])
    np.testing.assert_allclose(ply["xyz"][n:], body["means"][0].detach().numpy(), atol=1e-6)


def test_mean_pose_is_a_rotation_between_the_poses():
    a, b = np.eye(4), np.eye(4)
    t = np.radians(20)
    b[:3, :3] = [[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]]
    a[:3, 3], b[:3, 3] = [0, 0, 1], [0, 0, 3]
    m = mean_pose([a, b])
    h = np.radians(10)
    np.testing.assert_allclose(m[:3, :3], [[np.cos(h), 0, np.sin(h)], [0, 1, 0],
                                           [-np.sin(h), 0, np.cos(h)]], atol=1e-12)
    np.testing.assert_allclose(m[:3, 3], [0, 0, 2])


def _decode_splat_bytes(data: bytes) -> dict[str, np.ndarray]:
    """The .splat layout read by byte offsets, as a web viewer reads it."""
    n = len(data) // 32
    raw = np.frombuffer(data, np.uint8).reshape(n, 32)
    return {"position": raw[:, 0:12].copy().view("<f4"), "scale": raw[:, 12:24].copy().view("<f4"),
            "rgba": raw[:, 24:28], "rotation": raw[:, 28:32]}


def test_the_splat_byte_layout(run, tmp_path):
    out, info = run
    path = tmp_path / "frame.splat"
    export.main(["-m", str(out), "-o", str(path), "--frame", "5", "--device", "cpu"])
    model, _ = load_model(out)
    g = GaussianArrays.from_frame(_expected_frame(model, info, 5))
    data = path.read_bytes()
    assert len(data) == 32 * len(g)
    dec = _decode_splat_bytes(data)
    scales = np.exp(g.log_scales.astype(np.float64))
    opacity = 1 / (1 + np.exp(-g.opacity_logits.astype(np.float64)))
    order = np.argsort(-(scales.prod(1) * opacity), kind="stable")
    importance = np.prod(dec["scale"].astype(np.float64), 1) * dec["rgba"][:, 3]
    assert np.all(np.diff(np.prod(scales[order], 1) * opacity[order]) <= 0)  # decreasing
    assert importance[0] >= importance[-1]
    np.testing.assert_array_equal(dec["position"], g.xyz[order])
    np.testing.assert_allclose(dec["scale"], scales[order], rtol=1e-6)
    rgb = np.clip(0.5 + C0 * g.sh[order, 0].astype(np.float64), 0, 1)
    np.testing.assert_allclose(dec["rgba"][:, :3], rgb * 255, atol=1.0)
    np.testing.assert_allclose(dec["rgba"][:, 3], opacity[order] * 255, atol=1.0)
    q = (dec["rotation"].astype(np.float64) - 128) / 128
    np.testing.assert_allclose(q, g.quats[order], atol=1.0 / 128 + 1e-6)
    # the module's reader agrees with the byte offsets
    back = read_splat(path)
    np.testing.assert_array_equal(back["position"], dec["position"])
    np.testing.assert_array_equal(back["rgba"], dec["rgba"])
    assert splat_bytes(g) == data


def test_a_sequence_of_frames_is_a_folder_of_files(run, tmp_path, capsys):
    out, info = run
    folder = tmp_path / "seq"
    export.main(["-m", str(out), "-o", str(folder), "--frames", "17:", "--format", "splat",
                 "--device", "cpu"])
    assert sorted(p.name for p in folder.iterdir()) == ["00017.splat", "00018.splat",
                                                         "00019.splat"]
    assert "3 frames (17 to 19)" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["-o", "x.obj"], "unknown format 'obj'"),
    (["-o", "x.ply", "--frame", "20"], "frames 0 to 19"),
    (["-o", "x.ply", "--frames", "0:4"], "names a file"),
    (["-o", "seq", "--frames", "5"], "is not A:B"),
    (["-o", "seq", "--frames", "30:40"], "selects no frame"),
])
def test_bad_options_say_what_to_do(run, tmp_path, argv, message):
    out, _ = run
    argv = [a if not a.startswith(("x.", "seq")) else str(tmp_path / a) for a in argv]
    with pytest.raises(OptionError, match=message):
        export.main(["-m", str(out), "--device", "cpu", *argv])


def test_covariances_are_factored_into_rotations_and_scales():
    from utils.graphics_utils import covariance, quat_to_rotmat, random_unit_quaternions

    q = random_unit_quaternions((50,), torch.Generator().manual_seed(0))
    s = torch.exp(torch.randn(50, 3))
    s[0] = torch.tensor([0.3, 0.3, 0.01])  # two equal axes
    cov = covariance(quat_to_rotmat(q), s)
    q2, s2 = factor_covariances(cov)
    np.testing.assert_allclose(q2.norm(dim=-1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(covariance(quat_to_rotmat(q2), s2).numpy(), cov.numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.sort(s2.numpy(), 1), np.sort(s.numpy(), 1), rtol=1e-4)


@needs_fixture
def test_a_frame_of_the_original_release_is_exported(tmp_path):
    """Its frames come as covariances (its math): the file's rotations and scales make them."""
    from utils.graphics_utils import covariance, quat_to_rotmat

    path = tmp_path / "release.ply"
    export.main(["-m", str(FIXTURE / "model"), "-s", str(FIXTURE / "data"), "--test_frames",
                 "100", "-o", str(path), "--frame", "150", "--device", "cpu"])
    model, _ = load_model(FIXTURE / "model")
    info = read_dataset(FIXTURE / "data", test_frames=100, eval_frames=100)
    g = _expected_frame(model, info, 150)
    ply = _read_ply(path)
    np.testing.assert_allclose(ply["xyz"], g.means.numpy(), atol=1e-6)
    cov = covariance(quat_to_rotmat(torch.from_numpy(ply["rot"])),
                     torch.exp(torch.from_numpy(ply["scale"])))
    scale2 = g.covars.diagonal(dim1=-2, dim2=-1).max(-1).values[:, None, None]
    np.testing.assert_allclose((cov / scale2).numpy(), (g.covars / scale2).numpy(), atol=1e-4)
