"""The GaussianHead model: canonical Gaussians, their derivations, the deformation network and
the tri-plane decoders, as one ``nn.Module``.

For frames (expression + camera position each) :meth:`GaussianHead.frames` produces the
Gaussians to rasterize: positions, unit quaternions, positive scales, opacities and
spherical-harmonics colour coefficients. The math:

- rotations renormalised after the expression offset, scales ``exp(log_s + d_s)``;
- each Gaussian's position, normalised to the head's bounding sphere, is rotated by each of its
  K derivations (unit quaternions) and samples the tri-plane, derivation k its own channels;
  ``appearance="deformed"`` (the paper) samples at the deformed position, so whatever passes
  through a point of space in any frame shares its colour; ``"canonical"`` samples at the
  Gaussian's own canonical position, so colour and opacity stay with the Gaussian;
- ``expression_residuals``: the deformation network also changes each Gaussian's opacity
  (logit) and colour (DC band) with the expression (blinks, lips, the inside of the mouth);
- the colour's view direction is taken from the deformed position, towards the rendering
  camera or (``colour_view="capture"``) towards the camera that captured the frame: the light
  of a monocular video is fixed to that camera, so what looks view-dependent in the data is
  mostly shading by the head pose, which a novel view should keep;
- ``body``: the neck and torso are a second set of Gaussians in the capture camera's frame
  (:mod:`scene.body_model`), joined to the head's by :meth:`GaussianHead.with_body`.

Models written by other code with other math subclass this one (chosen by the loader).
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

from scene.body_model import BodyGaussians
from scene.deform_model import DeformNetwork
from scene.triplane import TriPlaneDecoder
from utils.graphics_utils import random_unit_quaternions, rotate_by_quaternions

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
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)  # head bounding sphere
    radius: float = 1.0
    # the deformation network is trained from this iteration on (--warm_up); a model saved
    # earlier is rendered without it
    deform_from: int = 0
    # defaults: the paper's formulation (what files written without these fields used)
    appearance: Literal["deformed", "canonical"] = "deformed"
    expression_residuals: bool = False
    body: bool = False
    # the body's depth: "surface" (on a surface fitted to its silhouette) or "slab" (files
    # written before the surface)
    body_shape: Literal["slab", "surface"] = "slab"
    # where the colour's view direction comes from: the camera rendering the frame, or the
    # camera that captured the frame's expression and pose (scene.rendering.colour_viewpoint)
    colour_view: Literal["render", "capture"] = "render"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["center"] = list(d["center"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["center"] = tuple(d.get("center", (0.0, 0.0, 0.0)))
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class FrameGaussians:
    """Gaussians of one frame (or of B frames, with a leading B axis), ready to rasterize."""

    means: torch.Tensor  # [(B,) N, 3]
    opacities: torch.Tensor  # [(B,) N]
    sh: torch.Tensor  # [(B,) N, (d+1)^2, 3]
    quats: torch.Tensor | None = None  # [(B,) N, 4] unit
    scales: torch.Tensor | None = None  # [(B,) N, 3] positive
    covars: torch.Tensor | None = None  # [(B,) N, 3, 3] (instead of quats and scales)

    def __getitem__(self, b: int) -> FrameGaussians:
        """Frame ``b`` of a batch (views)."""
        return FrameGaussians(**{k: None if v is None else v[b] for k, v in vars(self).items()})


class GaussianHead(nn.Module):
    """Canonical Gaussians + derivations + deformation network + tri-plane decoders.

    ``autocast_dtype`` (bf16 MLPs in mixed precision) and ``fused`` (the fast path's layer
    arrangement, the same function) are run-time settings from :class:`utils.execution.Execution`,
    not part of the weights.
    """

    # rasterization conventions the model was trained with
    near_plane = 0.01
    alpha_max = 0.999
    radius_mode = "gsplat"
    centred_principal_point = False
    triplane_class = TriPlaneDecoder

    def __init__(self, cfg: ModelConfig, num_points: int = 0, *,
                 autocast_dtype: torch.dtype | None = None, fused: bool = False):
        super().__init__()
        self.cfg = cfg
        n, k = num_points, cfg.num_derivations
        self.xyz = nn.Parameter(torch.zeros(n, 3))  # canonical positions
        self.scaling = nn.Parameter(torch.zeros(n, 3))  # log-scales
        self.rotation = nn.Parameter(torch.zeros(n, 4))  # quaternions (w, x, y, z)
        self.derivations = geoopt.ManifoldParameter(
            random_unit_quaternions((n, k)), manifold=geoopt.Sphere()
        )  # [N, K, 4] unit quaternions ("tau" in the original code)
        self.deform = DeformNetwork(cfg.exp_dim, fused=fused,
                                    residuals=cfg.expression_residuals)
        self.triplane = self.triplane_class(
            sh_degree=cfg.sh_degree, num_derivations=k, resolution=cfg.triplane_res,
            channels=cfg.triplane_channels, levels=cfg.triplane_levels, fused=fused,
        )
        self.body = (BodyGaussians(sh_coeffs=(cfg.sh_degree + 1) ** 2, shape=cfg.body_shape)
                     if cfg.body else None)
        self.register_buffer("center", torch.tensor(cfg.center, dtype=torch.float32))
        self.register_buffer("radius", torch.tensor(float(cfg.radius)))
        self.active_sh_degree = 0
        self.autocast_dtype = autocast_dtype
        self.fused = fused

    @property
    def raster_options(self) -> dict:
        """The rasterization conventions, as keyword arguments of
        :func:`gaussian_renderer.rasterize`."""
        return {"near_plane": self.near_plane, "alpha_max": self.alpha_max,
                "radius_mode": self.radius_mode}

    # ------------------------------------------------------------------ construction
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
        body = {"body.deform": self.body.network_parameters()} if self.body is not None else {}
        return {
            "deform": list(self.deform.parameters()),
            "trip": [p for planes in t.tri_plane for p in planes],
            "trip.opacity": list(t.opacity_net.parameters()),
            "trip.shs": list(t.shs_net.parameters()),
            "trip.shs_dc": list(t.shs_dc_net.parameters()),
            "trip.shs_rest": list(t.shs_rest_net.parameters()),
        } | body

    def deforms_at(self, iteration: int) -> bool:
        """Whether the deformation network is in use (trained) at ``iteration``."""
        return iteration >= self.cfg.deform_from

    def sh_degree_at(self, iteration: int) -> int:
        """The active SH degree after ``iteration`` training iterations."""
        return min(self.cfg.sh_degree, iteration // SH_DEGREE_INTERVAL)

    def oneup_sh_degree(self) -> None:
        self.active_sh_degree = min(self.active_sh_degree + 1, self.cfg.sh_degree)

    # ------------------------------------------------------------------ per-frame Gaussians
    def derivation_coords(self, means: torch.Tensor, derivations: torch.Tensor) -> torch.Tensor:
        """Positions [..., N, 3] rotated by every derivation [N, K, 4], as tri-plane
        coordinates. -> [K, ..., N, 3]"""
        return rotate_by_quaternions(derivations, (means - self.center) / self.radius)

    def frames(self, exps: torch.Tensor | None, campos: torch.Tensor,
               gaussians: dict[str, torch.Tensor] | None = None) -> FrameGaussians:
        """The head's Gaussians in B frames, one pass of each network over B x N rows.

        exps [B, E] expressions (None: the canonical Gaussians, as in the warm-up), campos
        [B, 3] camera centres -> FrameGaussians with a leading B axis. ``gaussians``: explicit
        per-Gaussian tensors by name (padded copies in the CUDA-graphed training step) instead
        of the model's own. The body, if any, is joined by :meth:`with_body`.
        """
        t = gaussians if gaussians is not None else self.per_gaussian()
        xyz, rotation, scaling = t["xyz"], t["rotation"], t["scaling"]
        b, n = campos.shape[0], xyz.shape[0]
        q = F.normalize(rotation, dim=-1)
        d_opacity = d_color = None
        if exps is None:
            means = xyz.expand(b, n, 3)
            quats = F.normalize(q, dim=-1).expand(b, n, 4)
            scales = torch.exp(scaling).expand(b, n, 3)
        else:
            d_xyz, d_rot, d_scale, *residuals = self._offsets(xyz, exps)
            means = xyz + d_xyz
            quats = F.normalize(q + d_rot, dim=-1)
            scales = torch.exp(scaling + d_scale)
            if residuals:
                d_opacity, d_color = residuals
        sampled = means if self.cfg.appearance == "deformed" else xyz.expand(b, n, 3)
        coords = self.derivation_coords(sampled, t["derivations"])  # [K, B, N, 3]
        coords = coords.reshape(coords.shape[0], b * n, 3)
        dirs = F.normalize(means - campos[:, None], dim=-1).reshape(b * n, 3)
        offset = None if d_opacity is None else d_opacity.reshape(b * n)
        opacity, sh = self._decode(coords, dirs, offset)
        sh = sh.view(b, n, *sh.shape[1:])
        if d_color is not None:
            sh = torch.cat([sh[:, :, :1] + d_color[:, :, None], sh[:, :, 1:]], dim=2)
        return FrameGaussians(means=means, opacities=opacity.view(b, n), sh=sh, quats=quats,
                              scales=scales)

    def with_body(self, g: FrameGaussians, capture_c2w: torch.Tensor) -> FrameGaussians:
        """The head's Gaussians ``g`` (one frame, or B with a leading axis) joined by the body's
        for the frames' camera-to-head matrices capture_c2w [(B,) 4, 4]; the head's come first.
        ``g`` itself without a body."""
        if self.body is None:
            return g
        batched = g.means.dim() == 3
        body = self.body.frames(capture_c2w if batched else capture_c2w[None])
        if not batched:
            body = {k: v[0] for k, v in body.items()}
        dims = {"means": -2, "quats": -2, "scales": -2, "opacities": -1, "sh": -3}
        return FrameGaussians(**{k: torch.cat([getattr(g, k), body[k]], dim=d)
                                 for k, d in dims.items()})

    def derive(self, exp: torch.Tensor | None, campos: torch.Tensor) -> FrameGaussians:
        """The Gaussians of one frame: exp [E] (None: canonical), campos [3]."""
        return self.frames(None if exp is None else exp[None], campos[None])[0]

    def _offsets(self, xyz: torch.Tensor, exps: torch.Tensor):
        """The deformation network's offsets of position, rotation and scale, [B, N, 3 / 4 / 3]
        (and with residuals of the opacity's logit and the colour's DC band, [B, N, 1 / 3]).

        The positions go in detached: the deformation moves the canonical positions only
        through its output offsets, as in the original code."""
        b, n = exps.shape[0], xyz.shape[0]
        x = xyz.detach()
        e = exps.to(xyz.device)
        if b == 1:
            e = e[0]  # broadcast inside the network
        else:
            x, e = x.repeat(b, 1), e.repeat_interleave(n, dim=0)
        with self.autocast():
            offsets = self.deform(x, e)
        return tuple(o.float().view(b, n, -1) for o in offsets)

    def autocast(self):
        """The autocast context of the MLPs (bf16 in mixed precision; none in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # no weight-cast cache: CUDA graph capture (training.cuda_graphs) does not allow one
        return torch.autocast(self.xyz.device.type, dtype=self.autocast_dtype,
                              cache_enabled=False)

    def _decode(self, coords: torch.Tensor, dirs: torch.Tensor,
                opacity_offset: torch.Tensor | None = None):
        with self.autocast():
            opacity, _, sh = self.triplane(coords, dirs, opacity_offset)
        return opacity.float(), sh.float()

    # ------------------------------------------------------------------ exchange formats
    def tilted_state_dict(self) -> dict[str, torch.Tensor]:
        """The original code's ``tilted.pth``: {'tau': [N, K, 4]}."""
        return {"tau": self.derivations.detach().clone()}
