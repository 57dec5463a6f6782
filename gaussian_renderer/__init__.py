"""The renderer boundary: tensors in, images out. It knows nothing of datasets or models.

:func:`rasterize` takes Gaussians (positions, shapes, opacities, colours or spherical-harmonics
coefficients), cameras (world-to-camera matrices with OpenCV axes, intrinsics, image size) and
backgrounds, and returns image, alpha, depth and the per-Gaussian screen data densification
needs. Two backends sit behind it:

- ``"gsplat"``: ``gsplat.rasterization`` (CUDA; compiles its kernels on first use);
- ``"torch"``: our pure-PyTorch rasterizer (:mod:`gaussian_renderer.torch_rasterizer`), on any
  device, with the same conventions, so both give the same images.

Batches: with a leading batch axis B on the Gaussians ([B, N, ...]) and the cameras
([B, 4, 4], [B, 3, 3]), set b of Gaussians is seen by camera b; the outputs gain the same axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from utils.sh_utils import eval_sh_colors

Backend = Literal["gsplat", "torch"]
RadiusMode = Literal["gsplat", "inria"]


@dataclass
class RenderOutput:
    image: torch.Tensor  # [(B,) 3, H, W]
    alpha: torch.Tensor  # [(B,) 1, H, W]
    depth: torch.Tensor  # [(B,) 1, H, W] expected camera-space depth (0 where alpha is 0)
    # pixel coordinates [..., N, 2] as the backend made them (the tensor whose gradient the
    # backward fills; read it with means2d_grad, for unbatched calls)
    means2d: torch.Tensor
    radii: torch.Tensor  # [(B,) N] screen radius in pixels (max over axes), 0 if culled


def rasterize(
    means: torch.Tensor,  # [(B,) N, 3]
    quats: torch.Tensor | None,  # [(B,) N, 4] unit (w, x, y, z); or None with covars
    scales: torch.Tensor | None,  # [(B,) N, 3] positive
    opacities: torch.Tensor,  # [(B,) N]
    colors: torch.Tensor,  # [(B,) N, 3] RGB, or [(B,) N, K, 3] SH coefficients (sh_degree)
    viewmats: torch.Tensor,  # [(B,) 4, 4] world-to-camera, OpenCV axes
    Ks: torch.Tensor,  # [(B,) 3, 3]
    width: int,
    height: int,
    backgrounds: torch.Tensor,  # [(B,) 3]
    *,
    covars: torch.Tensor | None = None,  # [(B,) N, 3, 3] instead of quats and scales
    sh_degree: int | None = None,  # colours are SH coefficients of this active degree
    campos: torch.Tensor | None = None,  # [(B,) 3] camera centres for the SH directions
    near_plane: float = 0.01,
    alpha_max: float = 0.999,  # torch backend only (gsplat's is 0.999)
    radius_mode: RadiusMode = "gsplat",  # torch backend only
    backend: Backend = "torch",
    with_depth: bool = True,
) -> RenderOutput:
    """Rasterize Gaussians; see the module docstring for shapes and batching.

    ``campos`` defaults to the camera centres of ``viewmats`` (an inverse, which synchronises
    the host with a CUDA device: pass it there).
    """
    if backend == "torch":  # one camera at a time
        if means.dim() == 2:
            return _torch(means, quats, scales, covars, opacities, colors, viewmats, Ks, width,
                          height, backgrounds, near_plane, alpha_max, radius_mode, sh_degree,
                          campos)
        outs = [_torch(means[b], _at(quats, b), _at(scales, b), _at(covars, b), opacities[b],
                       colors[b], viewmats[b], Ks[b], width, height, backgrounds[b], near_plane,
                       alpha_max, radius_mode, sh_degree, _at(campos, b))
                for b in range(means.shape[0])]
        return RenderOutput(*(torch.stack([getattr(o, f) for o in outs])
                              for f in ("image", "alpha", "depth", "means2d", "radii")))
    batched = means.dim() == 3
    if not batched:
        means, opacities, colors = means[None], opacities[None], colors[None]
        quats, scales, covars, campos = (_at(t, None) for t in (quats, scales, covars, campos))
        viewmats, Ks, backgrounds = viewmats[None], Ks[None], backgrounds[None]
    if sh_degree is not None:
        if campos is None:
            campos = torch.linalg.inv(viewmats)[:, :3, 3]
        colors = _gsplat_sh_colors(sh_degree, means, colors, campos)
    out = _gsplat(means, quats, scales, covars, opacities, colors, viewmats, Ks, width, height,
                  backgrounds, near_plane, with_depth)
    if not batched:
        out = RenderOutput(image=out.image[0], alpha=out.alpha[0], depth=out.depth[0],
                           means2d=out.means2d, radii=out.radii[0])
    return out


def _at(t: torch.Tensor | None, b: int | None) -> torch.Tensor | None:
    """Row ``b`` of an optional batched tensor (``None``: add a leading axis)."""
    if t is None:
        return None
    return t[None] if b is None else t[b]


def _gsplat_sh_colors(sh_degree: int, means: torch.Tensor, sh: torch.Tensor,
                      campos: torch.Tensor) -> torch.Tensor:
    """RGB [B, N, 3] of SH coefficients sh [B, N, K, 3] seen from campos [B, 3] with gsplat's SH
    kernel (3DGS's +0.5 and clamp at 0, as :func:`utils.sh_utils.eval_sh_colors`);
    ``rasterization(sh_degree=...)`` itself would take the camera centre from ``torch.inverse``
    of the view matrix, a host sync."""
    from gsplat import spherical_harmonics

    rgb = spherical_harmonics(sh_degree, means - campos.unsqueeze(-2), sh)
    return torch.clamp_min(rgb + 0.5, 0.0)


def _gsplat(means, quats, scales, covars, opacities, colors, viewmats, Ks, w, h, backgrounds,
            near_plane, with_depth) -> RenderOutput:
    from gsplat import rasterization

    use_covars = covars is not None
    rendered, alphas, meta = rasterization(
        means=means, quats=None if use_covars else quats, scales=None if use_covars else scales,
        covars=covars, opacities=opacities, colors=colors, viewmats=viewmats[:, None],
        Ks=Ks[:, None], width=w, height=h, near_plane=near_plane,
        backgrounds=backgrounds[:, None], render_mode="RGB+ED" if with_depth else "RGB",
        packed=False, rasterize_mode="classic",
    )
    out = rendered[:, 0]  # [B, H, W, 3 or 4]
    image = out[..., :3].permute(0, 3, 1, 2)
    depth = (out[..., 3:] if with_depth else torch.zeros_like(out[..., :1])).permute(0, 3, 1, 2)
    means2d = meta["means2d"]  # [B, 1, N, 2]: the tensor whose gradient the backward fills
    if means2d.requires_grad:
        means2d.retain_grad()
    return RenderOutput(image=image, alpha=alphas[:, 0].permute(0, 3, 1, 2), depth=depth,
                        means2d=means2d, radii=meta["radii"][:, 0].amax(dim=-1))


def _torch(means, quats, scales, covars, opacities, colors, viewmat, K, w, h, background,
           near_plane, alpha_max, radius_mode, sh_degree, campos) -> RenderOutput:
    from gaussian_renderer.torch_rasterizer import rasterize_gaussians
    from utils.graphics_utils import covariance, quat_to_rotmat

    rgb = colors
    if sh_degree is not None:
        if campos is None:
            campos = torch.linalg.inv(viewmat)[:3, 3]
        rgb = eval_sh_colors(sh_degree, colors, means - campos)
    if covars is None:
        covars = covariance(quat_to_rotmat(quats), scales)
    depth = (means @ viewmat[:3, :3].T + viewmat[:3, 3])[:, 2:3]  # [N, 1]
    bg = torch.cat([background, background.new_zeros(1)])
    out = rasterize_gaussians(
        means, covars, opacities, torch.cat([rgb, depth], dim=-1), viewmat, K, w, h, bg,
        near_plane=near_plane, alpha_max=alpha_max, radius_mode=radius_mode,
    )
    if out.means2d.requires_grad:
        out.means2d.retain_grad()
    alpha = out.alphas.permute(2, 0, 1)
    acc = out.colors.permute(2, 0, 1)
    return RenderOutput(image=acc[:3], alpha=alpha, depth=acc[3:] / alpha.clamp_min(1e-10),
                        means2d=out.means2d, radii=out.radii.amax(dim=-1))


def means2d_grad(out: RenderOutput) -> torch.Tensor | None:
    """d loss / d means2d [N, 2] in pixels after the backward of an unbatched call (None if it
    was not computed)."""
    g = out.means2d.grad
    if g is None:
        return None
    return g.reshape(-1, 2)
