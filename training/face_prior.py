"""The face mesh as a shape prior for the head.

``tools/preprocess.py`` triangulates the clip's mean face from the tracked landmarks (478 points
of MediaPipe's face mesh, with the poses it solves: the head turns during a video, and that
parallax fixes the face's depth) and writes it to ``transforms.json`` as ``face_mesh`` in the
head's frame. From one camera the depth of a Gaussian on the face is barely observable, so the
nose, cheeks and brows can settle at the wrong depth and show it once the view turns. Two uses:

- **a start on the face** (``--face_init_share``): that share of the initial head Gaussians is
  placed on the face's surface instead of at random in the visual hull;
- **nothing in front of the face** (``--lambda_face_depth``): canonical head Gaussians that lie
  laterally over the face and more than a margin in front of its surface are pulled back (a
  floater in front of a cheek is invisible from the capture camera and a flake from the side).
  The margin (``--face_margin``, a fraction of the head's radius) leaves room for hair over
  the forehead and for glasses.

The surface is represented by the landmarks and their normals (from their neighbours, turned
toward the capture cameras); the distance of a point is measured from its nearest landmark.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from training.regularizers import weighted_mean

NEIGHBOURS = 10  # landmarks per normal estimate


class FaceSurface:
    """Landmarks [N, 3] with outward unit normals [N, 3] (head frame), the lateral reach of one
    landmark (half the typical spacing times 3) and the margin in front of the surface."""

    def __init__(self, points: torch.Tensor, normals: torch.Tensor, reach: float, margin: float):
        self.points, self.normals = points, normals
        self.reach, self.margin = float(reach), float(margin)

    @classmethod
    def from_mesh(cls, mesh: np.ndarray, eye: np.ndarray, margin: float,
                  device: torch.device | str = "cpu") -> FaceSurface:
        """``mesh`` [N, 3] the face's points, ``eye`` [3] the mean capture camera's centre (the
        normals are turned toward it), ``margin`` in the head frame's units."""
        mesh = np.asarray(mesh, dtype=np.float64).reshape(-1, 3)
        if len(mesh) < NEIGHBOURS:
            raise ValueError(f"a face mesh needs at least {NEIGHBOURS} points, got {len(mesh)}")
        tree = cKDTree(mesh)
        _, idx = tree.query(mesh, k=NEIGHBOURS)
        local = mesh[idx] - mesh[idx].mean(axis=1, keepdims=True)  # [N, K, 3]
        _, _, vt = np.linalg.svd(local, full_matrices=False)
        normals = vt[:, 2, :]  # the direction of least spread
        toward = np.asarray(eye, dtype=np.float64) - mesh
        normals *= np.where((normals * toward).sum(1, keepdims=True) < 0, -1.0, 1.0)
        spacing = float(np.median(tree.query(mesh, k=2)[0][:, 1]))
        as_t = lambda a: torch.tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        return cls(as_t(mesh), as_t(normals), 1.5 * spacing, margin)

    def to(self, device: torch.device | str) -> FaceSurface:
        return FaceSurface(self.points.to(device), self.normals.to(device), self.reach,
                           self.margin)

    def offsets(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For points [M, 3]: the signed distance along the nearest landmark's normal (> 0 in
        front of the face) and the distance across it, each [M]."""
        nearest = torch.cdist(xyz.detach(), self.points).argmin(dim=1)
        d = xyz - self.points[nearest]
        along = (d * self.normals[nearest]).sum(-1)
        across = (d - along[:, None] * self.normals[nearest]).norm(dim=-1)
        return along, across

    def front_penalty(self, xyz: torch.Tensor, weights: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Mean over the points [M, 3] (or their sum weighted by ``weights`` [M]) of the
        squared distance beyond the margin in front of the face, for points laterally over it;
        the distance is in units of the margin."""
        along, across = self.offsets(xyz)
        over = (across <= self.reach).float()
        return weighted_mean(over * torch.relu(along / self.margin - 1.0) ** 2, weights)

    def surface_points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points [n, 3] on the face: at random landmarks, moved across the surface by up
        to the reach and in by up to the margin."""
        pts = self.points.cpu().numpy().astype(np.float64)
        nrm = self.normals.cpu().numpy().astype(np.float64)
        k = rng.integers(0, len(pts), size=n)
        jitter = rng.normal(size=(n, 3)) * (self.reach / 2)
        jitter -= (jitter * nrm[k]).sum(1, keepdims=True) * nrm[k]  # across the surface only
        depth = -self.margin * rng.random((n, 1))
        return (pts[k] + jitter + depth * nrm[k]).astype(np.float32)
