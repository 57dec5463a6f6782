"""The math of models this project did not train itself, reproduced exactly, in one place.

The loader (:func:`scene.run_folder.load_model`) picks one of these classes when it reads a run
folder, and nothing else in the code asks which math a model uses.

- :class:`ReleaseGaussianHead`: checkpoints of the original GaussianHead release (a run folder
  without ``model_meta.json``). Its math, bug for bug: the rotation offset added to the
  normalised quaternion without renormalising and turned into a matrix as is; scales
  ``exp(s) + d_s`` straight into the covariance; derivation matrices from the scrambled
  quaternion formula (:func:`quat_to_matrix_release`) applied to raw world coordinates, every
  coordinate multiplied by a column sum; every derivation sampling the last channel slice of
  each plane; no activation inside the colour MLP; the colour's view direction from the
  canonical position; the principal point at the image centre; the 3DGS rasterizer's alpha
  clamp (0.99), near plane (0.2) and square screen radius; every SH band from the start.
- :class:`V1GaussianHead`: runs of this project written before ``model_meta.json`` version 2,
  which applied a derivation to a normalised position by multiplying each coordinate j by
  column j's sum of the rotation matrix (an einsum that kept the summed index).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scene.gaussian_model import FrameGaussians, GaussianHead, ModelConfig
from scene.triplane import TriPlaneDecoder
from utils.errors import CheckpointError
from utils.graphics_utils import covariance, quat_to_matrix_unnormalized, quat_to_rotmat


def quat_to_matrix_release(q: torch.Tensor) -> torch.Tensor:
    """The original release's derivation matrices, reproduced bug for bug.

    The release rescales q by sqrt(2 / |q|) (a rotation only when |q| = 1), computes the nine
    entries of the product form as nine [N] tensors and joins them with ``torch.cat`` along
    the last axis, which lays them out entry-major ([9 * N]) before ``view(N, 3, 3)``. Matrix
    n therefore holds entries of Gaussians ``(9 n + j) // ...`` rather than its own: derivation
    rotations of the release are scrambled across Gaussians. Its checkpoints were trained
    with exactly this, so loading them must use it too.
    q [N, K, 4] -> [N, K, 3, 3]
    """
    n, k = q.shape[:2]
    s = q * torch.sqrt(2.0 / q.norm(dim=-1, keepdim=True))
    w, x, y, z = s.unbind(-1)  # each [N, K]
    entries = torch.stack([
        1 - y * y - z * z, x * y - z * w, x * z + y * w,
        x * y + z * w, 1 - x * x - z * z, y * z - x * w,
        x * z - y * w, y * z + x * w, 1 - x * x - y * y,
    ])  # [9, N, K]: entry-major, as the release's concatenation
    return entries.permute(2, 0, 1).reshape(k, n, 3, 3).permute(1, 0, 2, 3)


def _column_sum_coords(matrices: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Coordinate j of p times column j's sum of each matrix: matrices [N, K, 3, 3],
    p [..., N, 3] -> [K, ..., N, 3] (the einsum ``nkij,nj->knj``)."""
    if p.dim() == 2:
        return torch.einsum("nkij,nj->knj", matrices, p)
    if p.shape[0] == 1:  # one frame: the same contraction as unbatched, bit for bit
        return torch.einsum("nkij,nj->knj", matrices, p[0]).unsqueeze(1)
    return torch.einsum("nkij,bnj->kbnj", matrices, p)


class ReleaseTriPlane(TriPlaneDecoder):
    """The release's sampling: every derivation reads the last channel slice of each plane;
    no activation between the colour MLP's layers."""

    colour_activation = "none"

    def __init__(self, *args, fused: bool = False, **kwargs):
        super().__init__(*args, fused=False, **kwargs)  # exact arithmetic only

    def _sample(self, planes: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        _, k, n, _ = grids.shape
        c_k = self.channels // k
        feats = planes[:, (k - 1) * c_k:]
        samp = F.grid_sample(feats, grids.reshape(3, k * n, 1, 2), mode="bilinear",
                             padding_mode="border", align_corners=True)
        return samp.reshape(3, c_k, k, n).transpose(1, 2)  # [3, K, C/K, N]


class ReleaseGaussianHead(GaussianHead):
    """A checkpoint of the original release, rendered with its math (module docstring)."""

    near_plane = 0.2
    alpha_max = 0.99
    radius_mode = "inria"
    centred_principal_point = True
    triplane_class = ReleaseTriPlane

    def __init__(self, cfg: ModelConfig, num_points: int = 0, **_execution):
        # fp32, unfused: the arithmetic the release's checkpoints were trained with
        super().__init__(cfg, num_points)

    def derivation_coords(self, means: torch.Tensor, derivations: torch.Tensor) -> torch.Tensor:
        return _column_sum_coords(quat_to_matrix_release(derivations), means)

    def frames(self, exps, campos, gaussians=None) -> FrameGaussians:
        if gaussians is not None:
            raise ValueError("the original release's models are rendered, not trained")
        out = [self._release_frame(None if exps is None else exps[b], campos[b])
               for b in range(campos.shape[0])]
        return FrameGaussians(**{k: torch.stack([getattr(f, k) for f in out])
                                 for k in ("means", "opacities", "sh", "covars")})

    def _release_frame(self, exp: torch.Tensor | None, campos: torch.Tensor) -> FrameGaussians:
        xyz = self.xyz
        rot = F.normalize(self.rotation, dim=-1)
        scales = torch.exp(self.scaling)
        means = xyz
        if exp is not None:
            d_xyz, d_rot, d_scale = (o[0] for o in self._offsets(xyz, exp[None]))
            means = xyz + d_xyz
            rot = rot + d_rot
            scales = scales + d_scale
        covars = covariance(quat_to_matrix_unnormalized(rot), scales)
        dirs = F.normalize(xyz - campos, dim=-1)
        opacity, sh = self._decode(self.derivation_coords(means, self.derivations), dirs)
        return FrameGaussians(means=means, opacities=opacity, sh=sh, covars=covars)


class V1GaussianHead(GaussianHead):
    """A run of this project written before ``model_meta.json`` version 2 (module docstring)."""

    def derivation_coords(self, means: torch.Tensor, derivations: torch.Tensor) -> torch.Tensor:
        return _column_sum_coords(quat_to_rotmat(derivations), (means - self.center) / self.radius)


def release_config(trip: dict, tilted: dict, deform: dict, where: str) -> ModelConfig:
    """A release checkpoint's configuration, inferred from its weights (``where`` names the
    run folder in errors)."""
    try:
        levels = len({k.split(".")[1] for k in trip if k.startswith("tri_plane.")})
        plane = trip["tri_plane.0.0"]
        k = tilted["tau"].shape[1]
        n_freq_in = 3 * (1 + 2 * 10)
        exp_dim = deform["linear.0.weight"].shape[1] - n_freq_in
        n_rest = trip["shs_rest_net.weight"].shape[0]
    except (KeyError, IndexError) as err:
        raise CheckpointError(f"{where} does not look like a GaussianHead checkpoint "
                              f"(missing {err}).") from None
    sh_degree = int(round(((n_rest + 3) / 3) ** 0.5)) - 1
    return ModelConfig(exp_dim=exp_dim, sh_degree=sh_degree, num_derivations=k,
                       triplane_res=plane.shape[-1], triplane_channels=plane.shape[1],
                       triplane_levels=levels)
