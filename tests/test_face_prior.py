"""The face mesh as a shape prior: its surface, the penalty in front of it, the start on it,
and transforms.json's ``face_mesh`` through reading and training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scene.dataset_readers import read_dataset, read_points3d
from tests.helpers import edit_transforms, write_tiny_dataset
from training.face_prior import FaceSurface
from utils.errors import DatasetError


def _cap(radius: float = 0.1, n: int = 24) -> np.ndarray:
    """Points on the front (+z) cap of a sphere about the origin: a face seen from +z."""
    t = np.linspace(-0.6, 0.6, n)
    x, y = np.meshgrid(t * radius, t * radius)
    z = np.sqrt(radius ** 2 - x ** 2 - y ** 2)
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def test_the_surface_faces_the_camera_and_penalises_only_what_lies_in_front():
    mesh = _cap()
    face = FaceSurface.from_mesh(mesh, eye=np.array([0.0, 0.0, 0.5]), margin=0.01)
    radial = torch.tensor(mesh / np.linalg.norm(mesh, axis=1, keepdims=True),
                          dtype=torch.float32)
    # normals point out of the sphere, toward the camera
    assert torch.allclose((face.normals * radial).sum(-1), torch.ones(len(mesh)), atol=0.02)
    # the same face with the camera behind it: normals flip
    back = FaceSurface.from_mesh(mesh, eye=np.array([0.0, 0.0, -0.5]), margin=0.01)
    assert torch.allclose(back.normals, -face.normals)
    centre = torch.tensor([[0.0, 0.0, 0.1]])
    on = centre.clone()
    inside = centre * 0.5
    within = centre + torch.tensor([[0.0, 0.0, 0.008]])  # in front, inside the margin
    floater = centre + torch.tensor([[0.0, 0.0, 0.03]])  # 3 margins in front
    beside = torch.tensor([[0.3, 0.0, 0.1]])  # in front of nothing: far beside the face
    for pts in (on, inside, within, beside):
        assert face.front_penalty(pts).item() == 0.0, pts
    assert face.front_penalty(floater).item() == pytest.approx((3.0 - 1.0) ** 2, rel=0.05)
    # the gradient pulls a floater back toward the face
    x = floater.clone().requires_grad_(True)
    face.front_penalty(x).backward()
    assert x.grad[0, 2] > 0 and abs(x.grad[0, 0]) < 0.1 * x.grad[0, 2]  # along the normal
    # weighted rows (the CUDA-graphed step's padding): only the weighted rows count
    rows = torch.cat([floater, on, floater])
    w = torch.tensor([0.5, 0.5, 0.0])
    assert face.front_penalty(rows, w).item() == pytest.approx(
        0.5 * face.front_penalty(floater).item())
    assert face.front_penalty(torch.zeros(0, 3)).item() == 0.0


def test_points_started_on_the_face_lie_on_it():
    mesh = _cap()
    face = FaceSurface.from_mesh(mesh, eye=np.array([0.0, 0.0, 0.5]), margin=0.005)
    pts = face.surface_points(500, np.random.default_rng(0))
    r = np.linalg.norm(pts, axis=1)
    assert pts.shape == (500, 3) and pts.dtype == np.float32
    assert np.all(r <= 0.1 + 0.003) and np.all(r >= 0.1 - 0.005 - 0.003)
    with pytest.raises(ValueError, match="at least"):
        FaceSurface.from_mesh(mesh[:5], eye=np.zeros(3), margin=0.01)


def test_face_mesh_is_read_and_checked(tmp_path):
    data = write_tiny_dataset(tmp_path / "d", n=6, size=16)
    assert read_dataset(data, test_frames=1, eval_frames=1).face_mesh is None
    edit_transforms(data, lambda m: m.update(face_mesh=_cap(n=6).round(5).tolist()))
    mesh = read_dataset(data, test_frames=1, eval_frames=1).face_mesh
    assert mesh.shape == (36, 3)
    edit_transforms(data, lambda m: m.update(face_mesh=[[0.0, 1.0]] * 20))
    with pytest.raises(DatasetError, match="face_mesh.*tools/preprocess.py"):
        read_dataset(data, test_frames=1, eval_frames=1)


def test_training_with_the_face_prior_starts_on_the_face_and_logs_the_term(tmp_path):
    import train

    data = write_tiny_dataset(tmp_path / "d", n=8, size=24)
    edit_transforms(data, lambda m: m.update(face_mesh=_cap(n=8).round(5).tolist()))
    run = tmp_path / "run"
    trainer = train.train(["-s", str(data), "-m", str(run), "--eval", "--iterations", "12",
                           "--test_frames", "2", "--init_points", "400", "--body", "false",
                           "--device", "cpu", "--quiet", "--face_init_share", "0.5",
                           "--lambda_face_depth", "1.0", "--test_iterations", "12",
                           "--save_iterations", "12"])
    seen = trainer.shape_terms(trainer.model, trainer.scene.mean_campos())
    assert "face_depth" in seen and torch.isfinite(seen["face_depth"])
    xyz = read_points3d(run / "input.ply")
    near = np.abs(np.linalg.norm(xyz, axis=1) - 0.1) < 0.01
    assert near.sum() >= 180  # half of 400 on the cap, and few random ones by chance
    cfg = (run / "cfg_args").read_text()
    assert "face_init_share=0.5" in cfg
    json.loads((run / "eval_log.json").read_text())
