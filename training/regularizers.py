"""Penalties on the shapes of Gaussians that only look right from the capture direction, and
the visual hull that prunes head Gaussians no training view holds.

One camera films a monocular video, and the head turns only a few tens of degrees in it. Two
kinds of Gaussian fit the training frames but break a turned view:

- needles and sheets that reach *along* the line of sight: from the capture camera a needle
  pointing at it is a dot and a sheet edge-on is a line, from 30 degrees they are streaks and
  flakes. :func:`view_extent_penalty` penalises a Gaussian whose standard deviation along the
  line of sight exceeds ``max_ratio`` times its mean one across it; discs facing the camera
  (what a surface seen from the front is made of) cost nothing;
- Gaussians outside the head's visual hull (the volume that projects inside the head's
  silhouette in the training frames), which a turned view sees beside the head:
  :class:`VisualHull` finds them, and densification prunes them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from scene import Scene
from scene.dataset_images import read_silhouette
from utils.graphics_utils import GL_TO_CV, quat_to_rotmat


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of values [N], or their sum weighted by ``weights`` [N] (the CUDA-graphed
    step's padded rows: 1/n on the n real rows, 0 on the padding)."""
    if weights is None:
        return values.mean() if values.shape[0] else values.sum()
    return (values * weights).sum()


def anisotropy_penalty(log_scales: torch.Tensor, max_ratio: float,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over Gaussians [N, 3] of how far the log-ratio of the largest to the smallest
    scale exceeds log(max_ratio) (0 for none); ``weights`` as :func:`weighted_mean`."""
    spread = log_scales.amax(dim=1) - log_scales.amin(dim=1)
    return weighted_mean(torch.relu(spread - math.log(max_ratio)), weights)


def view_extent_penalty(means: torch.Tensor, rotations: torch.Tensor, log_scales: torch.Tensor,
                        eye: torch.Tensor, max_ratio: float,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over Gaussians of how far log(sigma_along / sigma_across) exceeds log(max_ratio):
    sigma_along is the standard deviation along the line from ``eye`` [3] to the Gaussian's
    centre (means [N, 3]; rotations [N, 4] quaternions; log_scales [N, 3]), sigma_across the
    root mean of the variances of the two directions across it. A sphere has the ratio 1, a
    disc facing the eye 0, a sheet edge-on sqrt(2). ``weights`` as :func:`weighted_mean`."""
    view = torch.nn.functional.normalize(means.detach() - eye, dim=-1)
    local = (quat_to_rotmat(rotations).transpose(-1, -2) @ view[..., None])[..., 0]
    var = torch.exp(2.0 * log_scales)
    along = (var * local ** 2).sum(-1)
    across = ((var.sum(-1) - along) / 2).clamp_min(1e-20)
    ratio = 0.5 * torch.log(along.clamp_min(1e-20) / across)
    return weighted_mean(torch.relu(ratio - math.log(max_ratio)), weights)


def radial_normal_penalty(means: torch.Tensor, rotations: torch.Tensor,
                          log_scales: torch.Tensor, centre: torch.Tensor,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over Gaussians of how far a flat Gaussian's normal (its shortest axis) is from the
    direction from the head's ``centre`` [3] to its centre (means [N, 3]; rotations [N, 4];
    log_scales [N, 3]): 1 - |cos| of the angle between them (a gradient of the same size at
    every angle, unlike 1 - cos^2, which stalls across the radial direction), times the
    Gaussian's flatness 1 - s_min / s_mid (0 for a sphere or a needle, whose shortest axis
    says nothing). A head is about star-shaped from its centre, so its surface faces away from
    it: at the outline seen from the front that is a sheet seen edge-on, reaching back along
    the side of the head, where a disc facing the camera would be a flat rim from a turned
    one. Only the rotations get a gradient. ``weights`` as :func:`weighted_mean`."""
    axes = quat_to_rotmat(rotations)  # [N, 3, 3], columns: the local axes
    order = torch.argsort(log_scales.detach(), dim=-1)
    normal = torch.gather(axes, 2, order[:, None, :1].expand(-1, 3, 1))[..., 0]
    radial = torch.nn.functional.normalize(means.detach() - centre, dim=-1)
    cos = (normal * radial).sum(-1).abs()
    s = torch.gather(log_scales.detach(), 1, order)
    flat = 1.0 - torch.exp(s[:, 0] - s[:, 1])
    return weighted_mean(flat * (1.0 - cos), weights)


def offset_penalty(means: torch.Tensor, xyz: torch.Tensor, radius: float,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over Gaussians of the length of the deformation's offset (a frame's ``means`` [N, 3]
    minus the canonical ``xyz`` [N, 3]) in units of the head's ``radius``; ``weights`` as
    :func:`weighted_mean`. Its gradient has the same size for every moved Gaussian, so it
    holds still what the expressions need not move (hair, ears, the back of the head) and
    leaves the mouth and eyes the offsets the images ask for."""
    d = means - xyz
    length = torch.sqrt((d * d).sum(-1) + 1e-12) / radius
    return weighted_mean(length, weights)


class ShapeTerms:
    """The shape penalties of a training step, weighted, by name (none with zero weights)."""

    def __init__(self, lambda_aniso: float, max_aniso: float, lambda_view: float,
                 max_view_ratio: float, lambda_face: float = 0.0, face=None,
                 lambda_offset: float = 0.0, radius: float = 1.0,
                 lambda_radial: float = 0.0, centre=(0.0, 0.0, 0.0)):
        """``face``: a :class:`training.face_prior.FaceSurface` for ``lambda_face`` (the term is
        off without one); ``radius``: the head's, the unit of ``lambda_offset``'s term;
        ``centre``: the head's, from which ``lambda_radial``'s normals point away."""
        self.lambda_aniso, self.max_aniso = lambda_aniso, max_aniso
        self.lambda_view, self.max_view_ratio = lambda_view, max_view_ratio
        self.lambda_face, self.face = lambda_face, face
        self.lambda_offset, self.radius = lambda_offset, float(radius)
        self.lambda_radial = lambda_radial
        self.centre = torch.as_tensor(np.asarray(centre, dtype=np.float32))

    @property
    def active(self) -> bool:
        return bool(self.names())

    def names(self) -> list[str]:
        """The terms' names, in the order :meth:`weighted` computes them."""
        return ((["aniso"] if self.lambda_aniso > 0 else [])
                + (["view_extent"] if self.lambda_view > 0 else [])
                + (["face_depth"] if self.lambda_face > 0 and self.face is not None else [])
                + (["offset"] if self.lambda_offset > 0 else [])
                + (["radial_normal"] if self.lambda_radial > 0 else []))

    def __call__(self, model, campos: torch.Tensor, means: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
        """``model``: the GaussianHead (head and body); campos [3]: the capture camera's centre
        in the head's frame (the body's Gaussians are seen from their frame's origin);
        ``means``: the head's deformed positions of the frame (None before the deformation is
        on)."""
        return self.weighted(model.per_gaussian(), model.body, campos, means=means)

    def weighted(self, head: dict[str, torch.Tensor], body, campos: torch.Tensor,
                 head_w: torch.Tensor | None = None, body_w: torch.Tensor | None = None,
                 means: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The terms for the head's per-Gaussian tensors ``head`` (xyz, rotation, scaling) and
        the body (a :class:`scene.body_model.BodyGaussians` or None); each mean over a set's
        Gaussians is taken with its rows' weights (:func:`weighted_mean`) where given.
        ``means``: the head's positions in the frame (the offset term is 0 without them)."""
        terms = {}
        if self.lambda_aniso > 0:
            aniso = anisotropy_penalty(head["scaling"], self.max_aniso, head_w)
            if body is not None:
                aniso = aniso + anisotropy_penalty(body.scaling, self.max_aniso, body_w)
            terms["aniso"] = self.lambda_aniso * aniso
        if self.lambda_view > 0:
            view = view_extent_penalty(head["xyz"], head["rotation"], head["scaling"], campos,
                                       self.max_view_ratio, head_w)
            if body is not None:
                b = body
                body_means = (b.on_surface(b.xyz[:, :2], b.xyz[:, 2]) if b.shape == "surface"
                              else b.xyz)
                view = view + view_extent_penalty(body_means, b.rotation, b.scaling,
                                                  torch.zeros_like(campos), self.max_view_ratio,
                                                  body_w)
            terms["view_extent"] = self.lambda_view * view
        if self.lambda_face > 0 and self.face is not None:
            terms["face_depth"] = self.lambda_face * self.face.front_penalty(head["xyz"], head_w)
        if self.lambda_offset > 0:
            terms["offset"] = (self.lambda_offset * offset_penalty(means, head["xyz"],
                                                                   self.radius, head_w)
                               if means is not None else head["xyz"].new_zeros(()))
        if self.lambda_radial > 0:
            if self.centre.device != head["xyz"].device:  # once, not a copy every step
                self.centre = self.centre.to(head["xyz"].device)
            terms["radial_normal"] = self.lambda_radial * radial_normal_penalty(
                head["xyz"], head["rotation"], head["scaling"], self.centre, head_w)
        return terms


class VisualHull:
    """The head's visual hull from up to ``max_views`` training frames: a point is inside
    where it projects into the (dilated) silhouette of at least ``min_fraction`` of them.

    Silhouettes: the parsing maps' head where ``head_only`` and every frame has one (a model
    with a body), else the person masks. Without either there is no hull (``None`` from
    :meth:`build`)."""

    def __init__(self, silhouettes: torch.Tensor, w2c: torch.Tensor, k: torch.Tensor,
                 min_fraction: float = 0.9):
        self.silhouettes = silhouettes  # [V, h, w] bool
        self.w2c = w2c  # [V, 4, 4], OpenCV axes
        self.k = k  # [V, 3, 3] at the silhouettes' size
        self.min_fraction = min_fraction

    @classmethod
    def build(cls, scene: Scene, head_only: bool, device: torch.device, max_views: int = 24,
              size: int = 128, dilate: float = 0.03) -> VisualHull | None:
        """``dilate``: the silhouettes grow by this fraction of their width (tracking jitter,
        the deformation's reach)."""
        info = scene.info
        frames = info.train_frames
        head_only = head_only and scene.has_parsing
        pick = np.linspace(0, len(frames) - 1, min(max_views, len(frames))).round().astype(int)
        src = info.source_intrinsics
        sils, w2cs, ks = [], [], []
        for i in pick:
            sil = read_silhouette(info, frames[i], head_only or None)
            if sil is None:
                return None
            h = max(1, round(size * sil.shape[0] / sil.shape[1]))
            sil = cv2.resize(sil.astype(np.float32), (size, h), interpolation=cv2.INTER_AREA)
            r = max(1, round(dilate * size))
            sil = cv2.dilate((sil > 0.5).astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1),
                                                                    np.uint8))
            sx, sy = size / src.width, h / src.height
            sils.append(sil.astype(bool))
            w2cs.append(np.linalg.inv(frames[i].c2w @ GL_TO_CV))
            ks.append([[src.fx * sx, 0, src.cx * sx], [0, src.fy * sy, src.cy * sy], [0, 0, 1]])
        as_t = lambda a, dt: torch.tensor(np.asarray(a), dtype=dt, device=device)  # noqa: E731
        return cls(as_t(sils, torch.bool), as_t(w2cs, torch.float32), as_t(ks, torch.float32))

    @torch.no_grad()
    def inside(self, points: torch.Tensor) -> torch.Tensor:
        """Whether points [N, 3] (head frame) lie inside the hull -> [N] bool."""
        v, h, w = self.silhouettes.shape
        p = points[None] @ self.w2c[:, :3, :3].transpose(-1, -2) + self.w2c[:, None, :3, 3]
        z = p[..., 2].clamp_min(1e-6)
        uv = p[..., :2] / z[..., None] @ self.k[:, :2, :2].transpose(-1, -2) + self.k[:, None,
                                                                                      :2, 2]
        u, vv = uv[..., 0].floor().long(), uv[..., 1].floor().long()
        ok = (u >= 0) & (u < w) & (vv >= 0) & (vv < h) & (p[..., 2] > 0)
        idx = torch.arange(v, device=points.device)[:, None].expand_as(u)
        hit = torch.zeros_like(ok)
        hit[ok] = self.silhouettes[idx[ok], vv[ok], u[ok]]
        return hit.float().mean(0) >= self.min_fraction
