"""The body below the head (neck, shoulders, torso) as its own set of Gaussians.

In the data the camera moves around a fixed head, but the real camera was static: the body is
(nearly) fixed in the *capture camera's* frame and moves in the head's frame whenever the head
turns. A head model cannot explain it (its Gaussians live in the head's frame and deform with
the expression only), so the body gets Gaussians of its own, defined in the capture camera's
frame (OpenGL axes, as ``transform_matrix``), placed into the head's frame for a frame through
that frame's camera-to-head matrix. Two things move it with the head: a learned fraction
``follow`` (starting at 1) of the head's translation from its mean position (a person who
leans towards the camera brings the shoulders along; turning the head does not turn the
body), and a small network conditioned on the head's pose relative to the camera for the rest
(the neck and shoulders follow the head a little), as AD-NeRF conditions its torso field on the
head pose. Seen from one camera only, a body Gaussian's depth is not observable:

- ``shape="surface"``: the Gaussians lie on a rounded surface fitted to the body's silhouette
  (:mod:`scene.body_shape`). A Gaussian's position parameter holds where it is across the view
  (x, y at the reference depth) and on which of the volume's two sides it lies (z: 0 the
  front, seen by the capture camera, 1 the back, which only a turned camera sees at the
  body's outline; clamped to [0, 1]); its depth is that side's at that point of the image, so
  it stays on the surface whatever training or densification does;
- ``shape="slab"`` (models written before the surface): each keeps the depth it starts at.

Colours are view-independent (the DC band only).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scene.body_shape import SURFACE_GRID, BodySurface
from scene.deform_model import PositionalEncoding
from utils.graphics_utils import quat_multiply, rotmat_to_quat
from utils.sh_utils import C0

BODY_PER_GAUSSIAN = ("xyz", "scaling", "rotation", "color", "opacity")


class BodyGaussians(nn.Module):
    """Body Gaussians in the capture camera's frame and their pose-conditioned offsets.

    Buffers: the reference head pose (mean of the training frames' head-to-camera poses) and the
    length scale of the pose code; with ``shape="surface"`` the body's surface (depths on a
    grid over the image, its box in normalised image coordinates, the reference depth).
    """

    def __init__(self, num_points: int = 0, sh_coeffs: int = 16, freqs: int = 4,
                 width: int = 64, shape: str = "slab"):
        super().__init__()
        if shape not in ("slab", "surface"):
            raise ValueError(f"unknown body shape {shape!r}")
        self.shape = shape
        n = num_points
        self.sh_coeffs = sh_coeffs
        self.xyz = nn.Parameter(torch.zeros(n, 3))  # capture camera frame
        self.scaling = nn.Parameter(torch.zeros(n, 3))  # log-scales
        self.rotation = nn.Parameter(torch.zeros(n, 4))  # (w, x, y, z), capture camera frame
        self.color = nn.Parameter(torch.zeros(n, 3))  # SH DC coefficients
        self.opacity = nn.Parameter(torch.zeros(n))  # logits
        self.embed = PositionalEncoding(3, freqs)
        self.deform = nn.Sequential(
            nn.Linear(self.embed.out_dim + 9, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))
        nn.init.zeros_(self.deform[-1].weight)  # no offsets at the start
        nn.init.zeros_(self.deform[-1].bias)
        self.follow = nn.Parameter(torch.ones(()))
        self.register_buffer("ref_rotation", torch.eye(3))
        self.register_buffer("ref_translation", torch.zeros(3))
        self.register_buffer("length", torch.ones(()))
        self.register_buffer("xy_only", torch.tensor([1.0, 1.0, 0.0]), persistent=False)
        if shape == "surface":
            self.register_buffer("surface", torch.zeros(SURFACE_GRID, SURFACE_GRID))
            self.register_buffer("surface_back", torch.zeros(SURFACE_GRID, SURFACE_GRID))
            self.register_buffer("surface_box", torch.tensor([-1.0, 1.0, 1.0, -1.0]))
            self.register_buffer("ref_depth", torch.ones(()))
            # 1 where the body's silhouette (grown by a cell) is, over the surface's grid
            self.register_buffer("surface_inside", torch.ones(SURFACE_GRID, SURFACE_GRID))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # models saved before the back of the surface: a front surface only
        front, back = prefix + "surface", prefix + "surface_back"
        if self.shape == "surface" and front in state_dict and back not in state_dict:
            state_dict[back] = state_dict[front].clone()
        # and before the silhouette: everywhere inside
        inside = prefix + "surface_inside"
        if self.shape == "surface" and front in state_dict and inside not in state_dict:
            state_dict[inside] = torch.ones_like(state_dict[front])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def num_gaussians(self) -> int:
        return self.xyz.shape[0]

    def per_gaussian(self) -> dict[str, nn.Parameter]:
        return {name: getattr(self, name) for name in BODY_PER_GAUSSIAN}

    def set_gaussians(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace per-Gaussian parameters (new tensors become new leaf parameters)."""
        for name, t in tensors.items():
            setattr(self, name, t if isinstance(t, nn.Parameter) else nn.Parameter(t.detach()))
        lengths = {n: getattr(self, n).shape[0] for n in BODY_PER_GAUSSIAN}
        if len(set(lengths.values())) != 1:
            raise RuntimeError(f"body parameters disagree in length: {lengths}")

    def network_parameters(self) -> list[nn.Parameter]:
        return [*self.deform.parameters(), self.follow]

    @torch.no_grad()
    def init_from_points(self, xyz: np.ndarray, rgb: np.ndarray, capture_c2w: np.ndarray,
                         length: float, opacity: float = 0.1,
                         surface: BodySurface | None = None, ref_depth: float = 1.0,
                         back: np.ndarray | None = None, back_opacity: float = 0.5) -> None:
        """Start from points [M, 3] in the capture camera's frame with colours [M, 3] in [0, 1]:
        scales from the 3 nearest neighbours, identity rotations. ``capture_c2w`` [F, 4, 4] are
        the training frames' camera-to-head matrices (their mean head pose is the pose code's
        origin) and ``length`` the pose code's unit of translation. With the surface shape,
        ``surface`` and ``ref_depth`` (the head's distance from the camera) are required: each
        point moves along its ray onto the surface, as a disc in the surface's tangent plane
        (a third as thick as wide); the points where ``back`` [M] bool is set go to the back of
        the body's volume instead, facing away, with opacity ``back_opacity`` (no training frame
        sees them; a turned camera sees them at the body's outline)."""
        from scipy.spatial import cKDTree

        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        n = len(xyz)
        dev = self.xyz.device
        if self.shape == "surface" and (n or surface is not None):
            if surface is None:
                raise ValueError("a body of surface shape needs its surface")
            self.surface.copy_(torch.from_numpy(surface.depth))
            self.surface_back.copy_(torch.from_numpy(
                surface.depth if surface.back is None else surface.back))
            self.surface_box.copy_(torch.tensor(surface.box, dtype=torch.float32))
            self.ref_depth.fill_(float(ref_depth))
            if surface.inside is not None:
                self.surface_inside.copy_(torch.from_numpy(surface.inside.astype(np.float32)))
            ray = xyz[:, :2] / np.maximum(-xyz[:, 2:], 1e-9)  # normalised image coordinates
            xy = torch.tensor(ray * ref_depth, dtype=torch.float32, device=dev)
            side = torch.zeros(n, device=dev)
            if back is not None:
                side = torch.tensor(np.asarray(back, dtype=np.float32).reshape(n), device=dev)
            placed = self.on_surface(xy, side)
            xyz = placed.double().cpu().numpy()
            normals = self.surface_normals(xy)
            # the back leans as the front's mirror image about the image plane: normal
            # (-x, -y, z), the same disc as (x, y, -z), with z >= 0 as _quat_from_z needs
            normals[:, :2] = torch.where(side[:, None] > 0.5, -normals[:, :2], normals[:, :2])
            rot = _quat_from_z(normals)
            flat = torch.tensor([1.0, 1.0, 1.0 / 3.0], device=dev).log()
            params = torch.cat([xy, side[:, None]], dim=1)
        else:
            rot = torch.zeros(n, 4, device=dev)
            rot[:, 0] = 1.0
            flat = torch.zeros(3, device=dev)
            params = torch.tensor(xyz, dtype=torch.float32, device=dev)
        k = min(4, n)
        dists, _ = cKDTree(xyz).query(xyz, k=k) if n else (np.zeros((0, 1)), None)
        dist2 = np.maximum((np.asarray(dists).reshape(n, -1)[:, 1:] ** 2).mean(1)
                           if k > 1 else np.full(n, 1e-4), 1e-7)
        color = (torch.tensor(np.asarray(rgb), dtype=torch.float32, device=dev) - 0.5) / C0
        log_s = torch.log(torch.tensor(np.sqrt(dist2), dtype=torch.float32, device=dev))
        logit = torch.full((n,), float(np.log(opacity / (1 - opacity))), device=dev)
        if back is not None and self.shape == "surface" and n:
            b_logit = float(np.log(back_opacity / (1 - back_opacity)))
            logit = torch.where(params[:, 2] > 0.5, torch.full_like(logit, b_logit), logit)
        self.set_gaussians({
            "xyz": params, "scaling": log_s[:, None] + flat,
            "rotation": rot, "color": color.reshape(n, 3), "opacity": logit,
        })
        h2c = np.linalg.inv(np.asarray(capture_c2w, dtype=np.float64))  # head-to-camera
        # the mean rotation (projected back onto rotations) and translation
        u, _, vt = np.linalg.svd(h2c[:, :3, :3].mean(0))
        ref = u @ vt
        if np.linalg.det(ref) < 0:
            ref = u @ np.diag([1.0, 1.0, -1.0]) @ vt
        self.ref_rotation.copy_(torch.tensor(ref, dtype=torch.float32))
        self.ref_translation.copy_(torch.tensor(h2c[:, :3, 3].mean(0), dtype=torch.float32))
        self.length.fill_(float(length))

    def _grid(self, xy: torch.Tensor) -> torch.Tensor:
        """Positions xy [M, 2] (at the reference depth) in grid_sample's coordinates of the
        surface's maps [M, 2]."""
        box = self.surface_box
        p = xy / self.ref_depth
        return torch.stack([(p[:, 0] - box[0]) / (box[1] - box[0]) * 2 - 1,
                            (p[:, 1] - box[2]) / (box[3] - box[2]) * 2 - 1], dim=-1)

    def surface_depth(self, xy: torch.Tensor, side: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """The surface's depth (distance along the camera's axis) [M] where positions
        xy [M, 2] (across the view, at the reference depth) are seen: on its front, or, by
        ``side`` [M] (clamped to [0, 1]), that far towards its back."""
        grid = self._grid(xy)
        maps = self.surface[None] if side is None else torch.stack(
            [self.surface, self.surface_back])
        d = F.grid_sample(maps[None], grid[None, None], mode="bilinear",
                          padding_mode="border", align_corners=True)[0, :, 0]  # [1 or 2, M]
        if side is None:
            return d[0]
        return d[0] + side.detach().clamp(0.0, 1.0) * (d[1] - d[0])

    def on_surface(self, xy: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        """The points [M, 3] of the surface seen where xy [M, 2] (at the reference depth)
        are, in the capture camera's frame (on the side ``side`` [M], default the front)."""
        d = self.surface_depth(xy, side)
        return torch.cat([xy * (d / self.ref_depth)[:, None], -d[:, None]], dim=1)

    def in_silhouette(self, xy: torch.Tensor) -> torch.Tensor:
        """Whether positions xy [M, 2] (across the view, at the reference depth) lie inside
        the body's silhouette in the capture camera (grown by a grid cell) -> [M] bool; all
        True for the slab shape, which has no silhouette."""
        if self.shape != "surface":
            return torch.ones(xy.shape[0], dtype=torch.bool, device=xy.device)
        v = F.grid_sample(self.surface_inside[None, None], self._grid(xy)[None, None],
                          mode="nearest", padding_mode="zeros", align_corners=True)[0, 0, 0]
        return v > 0.5

    def surface_normals(self, xy: torch.Tensor) -> torch.Tensor:
        """Unit normals [M, 3] of the surface at xy [M, 2], facing the camera."""
        e = 1e-3 * self.ref_depth
        dx = torch.tensor([e, 0.0], device=xy.device)
        dy = torch.tensor([0.0, e], device=xy.device)
        n = torch.linalg.cross(self.on_surface(xy + dx) - self.on_surface(xy - dx),
                               self.on_surface(xy + dy) - self.on_surface(xy - dy), dim=-1)
        n = F.normalize(n, dim=-1)
        return torch.where(n[:, 2:] < 0, -n, n)

    def pose_code(self, capture_c2w: torch.Tensor) -> torch.Tensor:
        """The head's pose relative to the camera, as the deformation network's input:
        capture_c2w [B, 4, 4] (camera-to-head) -> [B, 9] (the first two columns of the rotation
        relative to the reference, minus the identity's, and the translation offset in units of
        ``length``)."""
        r_ch = capture_c2w[:, :3, :3]
        r_hc = r_ch.transpose(-1, -2)  # head-to-camera rotation
        t_hc = -(r_hc @ capture_c2w[:, :3, 3:])[..., 0]
        rel = self.ref_rotation.T @ r_hc
        eye = torch.eye(3, device=rel.device, dtype=rel.dtype)
        rot_code = (rel - eye)[..., :2].transpose(-1, -2).reshape(-1, 6)
        return torch.cat([rot_code, (t_hc - self.ref_translation) / self.length], dim=-1)

    def frames(self, capture_c2w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The body's Gaussians in the head's frame for B frames with camera-to-head matrices
        capture_c2w [B, 4, 4] -> means [B, M, 3], quats [B, M, 4], scales [B, M, 3], opacities
        [B, M], sh [B, M, K, 3] (the DC band only)."""
        b, m = capture_c2w.shape[0], self.num_gaussians
        code = self.pose_code(capture_c2w)  # [B, 9]
        inp = torch.cat([self.embed(self.xyz)[None].expand(b, m, -1),
                         code[:, None].expand(b, m, 9)], dim=-1)
        shift = self.follow * code[:, 6:] * self.length  # the head's translation offset
        # depth along the capture camera's axis is not observable from it: the Gaussians lie on
        # the body's surface (or keep their initial depth), and the pose network moves them
        # across the view only
        if self.shape == "surface":
            xyz = self.on_surface(self.xyz[:, :2], self.xyz[:, 2])
        else:
            xyz = torch.cat([self.xyz[:, :2], self.xyz[:, 2:].detach()], dim=1)
        d = self.deform(inp) * self.xy_only
        x = xyz + shift[:, None] + d  # [B, M, 3], capture camera frame
        r, t = capture_c2w[:, :3, :3], capture_c2w[:, :3, 3]
        means = x @ r.transpose(-1, -2) + t[:, None]
        q_frame = rotmat_to_quat(r)[:, None].expand(b, m, 4)
        quats = quat_multiply(q_frame, F.normalize(self.rotation, dim=-1).expand(b, m, 4))
        sh = torch.zeros(b, m, self.sh_coeffs, 3, device=self.xyz.device)
        sh = torch.cat([self.color[None, :, None].expand(b, m, 1, 3),
                        sh[:, :, 1:]], dim=2)
        return {"means": means, "quats": quats,
                "scales": torch.exp(self.scaling).expand(b, m, 3),
                "opacities": torch.sigmoid(self.opacity).expand(b, m), "sh": sh}


def _quat_from_z(n: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [M, 4] of the shortest rotations taking the z axis to unit vectors
    n [M, 3] (n_z > -1)."""
    q = torch.stack([1.0 + n[:, 2], -n[:, 1], n[:, 0], torch.zeros_like(n[:, 0])], dim=-1)
    return F.normalize(q, dim=-1)
