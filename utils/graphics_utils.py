"""Camera-axis, quaternion and covariance helpers. Quaternions are (w, x, y, z)."""

from __future__ import annotations

import numpy as np
import torch

# OpenGL camera axes (x right, y up, looking down -z; transforms.json) <-> OpenCV axes (x right,
# y down, looking down +z; the rasterizers): c2w_cv = c2w_gl @ GL_TO_CV (its own inverse).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of quaternions, normalised first. q [..., 4] -> [..., 3, 3]"""
    return quat_to_matrix_unnormalized(torch.nn.functional.normalize(q, dim=-1))


def rotate_by_quaternions(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Points rotated by every one of K quaternions each (normalised first): the same as
    ``quat_to_rotmat(q) @ p`` in a handful of element-wise kernels instead of one per matrix
    entry (p + 2w (v x p) + 2 v x (v x p) for q = (w, v)).

    q [N, K, 4], p [..., N, 3] -> [K, ..., N, 3]
    """
    q = torch.nn.functional.normalize(q, dim=-1)
    w, v = q[..., :1], q[..., 1:]  # [N, K, 1], [N, K, 3]
    p = p.unsqueeze(-2)  # [..., N, 1, 3]
    p, v_b = torch.broadcast_tensors(p, v)
    t = 2.0 * torch.linalg.cross(v_b, p)
    out = p + w * t + torch.linalg.cross(v_b, t)  # [..., N, K, 3]
    return out.movedim(-2, 0)


def quat_to_matrix_unnormalized(q: torch.Tensor) -> torch.Tensor:
    """The usual quaternion-to-matrix formula applied as is, without normalising.

    It is a rotation only for unit quaternions. q [..., 4] -> [..., 3, 3]
    """
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def covariance(rotmat: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T. rotmat [N, 3, 3], scales [N, 3] -> [N, 3, 3]"""
    m = rotmat * scales.unsqueeze(-2)
    return m @ m.transpose(-1, -2)


def random_unit_quaternions(shape: tuple[int, ...], generator: torch.Generator | None = None,
                            device: torch.device | str = "cpu") -> torch.Tensor:
    """Quaternions uniform on the unit 3-sphere (hence uniform rotations). -> [*shape, 4]"""
    q = torch.randn(*shape, 4, generator=generator)
    return torch.nn.functional.normalize(q, dim=-1).to(device)


def bounding_sphere(xyz: np.ndarray, margin: float = 1.1) -> tuple[tuple[float, float, float],
                                                                   float]:
    """Centre (of the bounding box) and radius (largest distance from it, times ``margin``)
    of points [N, 3]; any rotation about the centre keeps the points inside the sphere."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if len(xyz) == 0:
        return (0.0, 0.0, 0.0), 1.0
    centre = (xyz.min(0) + xyz.max(0)) / 2
    radius = float(np.linalg.norm(xyz - centre, axis=1).max()) * margin
    return tuple(float(c) for c in centre), max(radius, 1e-6)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of quaternions [..., 4] (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def rotmat_to_quat(r: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w >= 0) of rotation matrices r [..., 3, 3] -> [..., 4]. Each of the four
    candidate formulas is evaluated and the best conditioned one (largest denominator) kept."""
    m = r
    t = (m[..., 0, 0], m[..., 1, 1], m[..., 2, 2])
    cands = torch.stack([
        torch.stack([1 + t[0] + t[1] + t[2], m[..., 2, 1] - m[..., 1, 2],
                     m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + t[0] - t[1] - t[2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - t[0] + t[1] - t[2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                     m[..., 1, 2] + m[..., 2, 1], 1 - t[0] - t[1] + t[2]], -1),
    ], dim=-2)  # [..., 4 candidates, 4]
    best = cands.norm(dim=-1).argmax(dim=-1, keepdim=True)  # [..., 1]
    q = torch.gather(cands, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)
