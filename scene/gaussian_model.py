"""The GaussianHead model: canonical Gaussians, their derivations, the deformation network and
the tri-plane decoders, as one ``nn.Module``.

For a frame (expression + camera) :meth:`GaussianHead.derive` produces the Gaussians to
rasterize: positions, shapes (quaternion + scale, or covariances in legacy mode), opacities
and spherical-harmonics colour coefficients.

``semantics`` selects the math:

- ``"fixed"`` (every model trained here): rotations renormalised after the offset, scales
  ``exp(log_s + d_s)`` (always positive), derivations are unit quaternions turned into true
  rotations about the head's centre, each derivation samples its own tri-plane channels,
  coordinates normalised to the head's bounding sphere, view direction from the deformed
  position, principal point as given.
- ``"release"`` (checkpoints written by the original release; chosen by the loader, never by a
  flag): exactly the original's math (the ``release`` branches below, in
  :mod:`scene.triplane` and in :mod:`utils.graphics_utils`).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scene.deform_model import DeformNetwork
from scene.triplane import TriPlaneDecoder
from utils.graphics_utils import (
    covariance,
    quat_to_matrix_release,
    quat_to_matrix_unnormalized,
    quat_to_rotmat,
    random_unit_quaternions,
    rotate_by_quaternions,
)

with warnings.catch_warnings():  # geoopt 0.5 calls the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    import geoopt

PER_GAUSSIAN = ("xyz", "scaling", "rotation", "derivations")
SH_DEGREE_INTERVAL = 1000  # the active SH degree rises by one every this many iterations


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model before loading its weights."""

    exp_dim: int
    sh_degree: int = 3
    num_derivations: int = 4
    triplane_res: int = 64
    triplane_channels: int = 32
    triplane_levels: int = 1
    semantics: Literal["fixed", "release"] = "fixed"
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)  # head bounding sphere (fixed only)
    radius: float = 1.0
    # rasterization conventions of the semantics (the release's CUDA rasterizer differs)
    alpha_max: float = 0.999
    near_plane: float = 0.01
    radius_mode: Literal["gsplat", "inria"] = "gsplat"
    centred_principal_point: bool = False
    # the deformation network is trained from this iteration on (--warm_up); a model saved
    # earlier is rendered without it (the release's checkpoints: always with it)
    deform_from: int = 0
    # how the fixed semantics apply a derivation to a position: "rotate" (the rotation of the
    # unit quaternion); "v1", models and checkpoints written before this field existed, which
    # multiplied each coordinate j by column j's sum of the rotation matrix (an einsum that
    # kept the summed index). Configs without the field are "v1", so they render as trained.
    derivation_coords: Literal["rotate", "v1"] = "rotate"

    @classmethod
    def release(cls, exp_dim: int, sh_degree: int, num_derivations: int, triplane_res: int,
                triplane_channels: int, triplane_levels: int) -> ModelConfig:
        """The original release's conventions (3DGS rasterizer: alpha <= 0.99, near 0.2)."""
        return cls(exp_dim=exp_dim, sh_degree=sh_degree, num_derivations=num_derivations,
                   triplane_res=triplane_res, triplane_channels=triplane_channels,
                   triplane_levels=triplane_levels, semantics="release", alpha_max=0.99,
                   near_plane=0.2, radius_mode="inria", centred_principal_point=True)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["center"] = list(d["center"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["center"] = tuple(d.get("center", (0.0, 0.0, 0.0)))
        d.setdefault("derivation_coords", "v1")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class FrameGaussians:
    """Gaussians of one frame, ready to rasterize."""

    means: torch.Tensor  # [N, 3]
    opacities: torch.Tensor  # [N]
    sh: torch.Tensor  # [N, (d+1)^2, 3]
    quats: torch.Tensor | None = None  # [N, 4] unit (fixed semantics)
    scales: torch.Tensor | None = None  # [N, 3] positive (fixed semantics)
    covars: torch.Tensor | None = None  # [N, 3, 3] (release semantics)

    def covariances(self) -> torch.Tensor:
        if self.covars is not None:
            return self.covars
        return covariance(quat_to_rotmat(self.quats), self.scales)


class GaussianHead(nn.Module):
    """Canonical Gaussians + derivations + deformation network + tri-plane decoders."""

    def __init__(self, cfg: ModelConfig, num_points: int = 0):
        super().__init__()
        self.cfg = cfg
        n, k = num_points, cfg.num_derivations
        self.xyz = nn.Parameter(torch.zeros(n, 3))  # canonical positions
        self.scaling = nn.Parameter(torch.zeros(n, 3))  # log-scales
        self.rotation = nn.Parameter(torch.zeros(n, 4))  # quaternions (w, x, y, z)
        self.derivations = geoopt.ManifoldParameter(
            random_unit_quaternions((n, k)), manifold=geoopt.Sphere()
        )  # [N, K, 4] unit quaternions ("tau" in the release)
        self.deform = DeformNetwork(cfg.exp_dim)
        self.triplane = TriPlaneDecoder(
            sh_degree=cfg.sh_degree, num_derivations=k, resolution=cfg.triplane_res,
            channels=cfg.triplane_channels, levels=cfg.triplane_levels,
            semantics=cfg.semantics,
        )
        self.register_buffer("center", torch.tensor(cfg.center, dtype=torch.float32))
        self.register_buffer("radius", torch.tensor(float(cfg.radius)))
        self.active_sh_degree = 0
        # run-time choice, not part of the model: autocast dtype of the MLPs (bf16 on CUDA in
        # mixed precision; None = fp32)
        self.autocast_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ construction
    @property
    def fused(self) -> bool:
        """The fast path's layer arrangement (a run-time switch, not part of the weights): fused
        linear+ReLU layers in the deformation network, aligned decoder operands; the same
        function."""
        return self.deform.fused

    @fused.setter
    def fused(self, on: bool) -> None:
        self.deform.fused = on
        self.triplane.fused = on

    @property
    def num_gaussians(self) -> int:
        return self.xyz.shape[0]

    @torch.no_grad()
    def init_from_points(self, xyz: np.ndarray, generator: torch.Generator | None = None
                         ) -> None:
        """Start from a point cloud: identity rotations, isotropic scales from the RMS distance
        to the 3 nearest neighbours, derivations uniform on the rotation group, drawn
        independently for every Gaussian."""
        from scipy.spatial import cKDTree

        xyz = np.asarray(xyz, dtype=np.float64)
        k = min(4, len(xyz))
        dists, _ = cKDTree(xyz).query(xyz, k=k)
        dist2 = np.maximum((np.asarray(dists).reshape(len(xyz), -1)[:, 1:] ** 2).mean(1)
                           if k > 1 else np.ones(len(xyz)), 1e-7)
        device = self.xyz.device
        n = len(xyz)
        rot = torch.zeros(n, 4, device=device)
        rot[:, 0] = 1.0
        self.set_gaussians({
            "xyz": torch.tensor(xyz, dtype=torch.float32, device=device),
            "scaling": torch.log(torch.tensor(np.sqrt(dist2), dtype=torch.float32,
                                              device=device))[:, None].repeat(1, 3),
            "rotation": rot,
            "derivations": random_unit_quaternions((n, self.cfg.num_derivations),
                                                   generator, device),
        })

    def per_gaussian(self) -> dict[str, nn.Parameter]:
        """The per-Gaussian parameters, by name (every one has N rows)."""
        return {name: getattr(self, name) for name in PER_GAUSSIAN}

    def set_gaussians(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace per-Gaussian parameters (new tensors become new leaf parameters)."""
        for name, t in tensors.items():
            if isinstance(t, nn.Parameter) and t.__class__ is getattr(self, name).__class__:
                param = t
            elif name == "derivations":
                param = geoopt.ManifoldParameter(t.detach(), manifold=geoopt.Sphere())
            else:
                param = nn.Parameter(t.detach())
            setattr(self, name, param)
        lengths = {n: getattr(self, n).shape[0] for n in PER_GAUSSIAN}
        if len(set(lengths.values())) != 1:
            raise RuntimeError(f"per-Gaussian parameters disagree in length: {lengths}")

    def network_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Network weights by optimizer group (never mixed with per-Gaussian tensors)."""
        t = self.triplane
        return {
            "deform": list(self.deform.parameters()),
            "trip": [p for planes in t.tri_plane for p in planes],
            "trip.opacity": list(t.opacity_net.parameters()),
            "trip.shs": list(t.shs_net.parameters()),
            "trip.shs_dc": list(t.shs_dc_net.parameters()),
            "trip.shs_rest": list(t.shs_rest_net.parameters()),
        }

    def deforms_at(self, iteration: int) -> bool:
        """Whether the deformation network is in use (trained) at ``iteration``."""
        return iteration >= self.cfg.deform_from

    def sh_degree_at(self, iteration: int) -> int:
        """The active SH degree after ``iteration`` training iterations."""
        return min(self.cfg.sh_degree, iteration // SH_DEGREE_INTERVAL)

    def oneup_sh_degree(self) -> None:
        self.active_sh_degree = min(self.active_sh_degree + 1, self.cfg.sh_degree)

    # ------------------------------------------------------------------ per-frame Gaussians
    def derivation_coords(self, means: torch.Tensor, derivations: torch.Tensor | None = None
                          ) -> torch.Tensor:
        """Positions rotated by every derivation, as tri-plane coordinates. -> [K, N, 3]"""
        derivations = self.derivations if derivations is None else derivations
        if self.cfg.semantics == "fixed":
            p = (means - self.center) / self.radius
            if self.cfg.derivation_coords == "rotate":
                return rotate_by_quaternions(derivations, p)
            return torch.einsum("nkij,nj->knj", quat_to_rotmat(derivations), p)  # "v1"
        # the release: its scrambled matrices, applied as "v1" applies them
        return torch.einsum("nkij,nj->knj", quat_to_matrix_release(derivations), means)

    def derive(self, exp: torch.Tensor | None, campos: torch.Tensor,
               deform: bool = True) -> FrameGaussians:
        """Gaussians of a frame with expression ``exp`` [E] seen from ``campos`` [3].

        ``deform=False`` (the warm-up) uses the canonical Gaussians.
        """
        if self.cfg.semantics == "fixed":
            return self.frame(self.xyz, self.rotation, self.scaling, self.derivations,
                              exp if deform else None, campos)
        xyz = self.xyz
        d_xyz, d_rot, d_scale = self._offsets(xyz, exp if deform else None)
        means = xyz if d_xyz is None else xyz + d_xyz
        coords = self.derivation_coords(means)
        # release: unnormalised rotation and exp(s) + d_s straight into the covariance, and the
        # decoder's view direction from the canonical position
        rot = F.normalize(self.rotation, dim=-1)
        scales = torch.exp(self.scaling)
        if d_rot is not None:
            rot = rot + d_rot
            scales = scales + d_scale
        covars = covariance(quat_to_matrix_unnormalized(rot), scales)
        dirs = F.normalize(xyz - campos, dim=-1)
        opacity, sh = self._decode(coords, dirs)
        return FrameGaussians(means=means, opacities=opacity, sh=sh, covars=covars)

    def frame(self, xyz: torch.Tensor, rotation: torch.Tensor, scaling: torch.Tensor,
              derivations: torch.Tensor, exp: torch.Tensor | None, campos: torch.Tensor
              ) -> FrameGaussians:
        """The fixed semantics' per-frame Gaussians from explicit per-Gaussian tensors (the
        model's own in :meth:`derive`; padded copies in the CUDA-graphed training step).
        ``exp=None``: no deformation (the warm-up)."""
        d_xyz, d_rot, d_scale = self._offsets(xyz, exp)
        means = xyz if d_xyz is None else xyz + d_xyz
        coords = self.derivation_coords(means, derivations)
        q = F.normalize(rotation, dim=-1)
        quats = F.normalize(q if d_rot is None else q + d_rot, dim=-1)
        scales = torch.exp(scaling if d_scale is None else scaling + d_scale)
        dirs = F.normalize(means - campos, dim=-1)
        opacity, sh = self._decode(coords, dirs)
        return FrameGaussians(means=means, opacities=opacity, sh=sh, quats=quats, scales=scales)

    def _offsets(self, xyz: torch.Tensor, exp: torch.Tensor | None):
        """The deformation network's offsets (position, rotation, scale), or Nones."""
        if exp is None:
            return None, None, None
        # The release feeds detached positions: the deformation does not move the canonical
        # positions through its input, only through its output offsets.
        with self._autocast():
            offsets = self.deform(xyz.detach(), exp.to(xyz.device))
        return tuple(o.float() for o in offsets)

    def derive_batch(self, exps: torch.Tensor, campos: torch.Tensor) -> FrameGaussians:
        """Gaussians of B frames at once (one pass of each network over B x N rows).

        exps [B, E], campos [B, 3] -> FrameGaussians whose tensors have a leading B axis.
        """
        if self.cfg.semantics != "fixed":
            frames = [self.derive(e, c) for e, c in zip(exps, campos)]
            return FrameGaussians(**{
                k: torch.stack([getattr(f, k) for f in frames]) for k in
                ("means", "opacities", "sh", "covars")})
        b, n = exps.shape[0], self.num_gaussians
        xyz = self.xyz.detach()
        with self._autocast():
            offsets = self.deform(xyz.repeat(b, 1), exps.repeat_interleave(n, dim=0))
        d_xyz, d_rot, d_scale = (o.float().view(b, n, -1) for o in offsets)
        means = self.xyz + d_xyz  # [B, N, 3]
        p = (means - self.center) / self.radius
        if self.cfg.derivation_coords == "rotate":
            coords = rotate_by_quaternions(self.derivations, p)
        else:  # "v1"
            coords = torch.einsum("nkij,bnj->kbnj", quat_to_rotmat(self.derivations), p)
        coords = coords.reshape(self.cfg.num_derivations, b * n, 3)
        dirs = F.normalize(means - campos[:, None], dim=-1).reshape(b * n, 3)
        opacity, sh = self._decode(coords, dirs)
        q = F.normalize(self.rotation, dim=-1)
        return FrameGaussians(
            means=means, opacities=opacity.view(b, n), sh=sh.view(b, n, *sh.shape[1:]),
            quats=F.normalize(q + d_rot, dim=-1), scales=torch.exp(self.scaling + d_scale))

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # no weight-cast cache: CUDA graph capture (scene.cuda_graphs) does not allow one
        return torch.autocast(self.xyz.device.type, dtype=self.autocast_dtype,
                              cache_enabled=False)

    def _decode(self, coords: torch.Tensor, dirs: torch.Tensor):
        with self._autocast():
            opacity, _, sh = self.triplane(coords, dirs)
        return opacity.float(), sh.float()

    # ------------------------------------------------------------------ exchange formats
    def tilted_state_dict(self) -> dict[str, torch.Tensor]:
        """The release's ``tilted.pth``: {'tau': [N, K, 4]}."""
        return {"tau": self.derivations.detach().clone()}
