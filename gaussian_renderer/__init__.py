"""The renderer boundary: Gaussians + camera + background -> image, alpha, depth and the
per-Gaussian screen data densification needs.

Two backends sit behind :func:`render`:

- ``"gsplat"``: ``gsplat.rasterization`` (CUDA; compiles its kernels on first use);
- ``"torch"``: our pure-PyTorch rasterizer (:mod:`gaussian_renderer.torch_rasterizer`), on any
  device, with the same conventions, so both give the same images.

``"auto"`` picks gsplat when CUDA works and torch otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from scene.cameras import Camera
from scene.gaussian_model import FrameGaussians, ModelConfig
from utils.errors import OptionError
from utils.sh_utils import eval_sh_colors

Backend = Literal["gsplat", "torch"]


@dataclass
class RenderOutput:
    image: torch.Tensor  # [3, H, W]
    alpha: torch.Tensor  # [1, H, W]
    depth: torch.Tensor  # [1, H, W] expected camera-space depth (0 where alpha is 0)
    means2d: torch.Tensor  # [N, 2] pixel coordinates, in the graph (retain_grad for densify)
    radii: torch.Tensor  # [N] screen radius in pixels (max over axes), 0 if culled
    opacities: torch.Tensor  # [N] the opacities that were rasterized (decoded)


def resolve_backend(name: str, device: torch.device) -> Backend:
    """Map ``auto`` to a concrete backend, checking that the choice can run on ``device``."""
    if name == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if name == "gsplat":
        if device.type != "cuda":
            raise OptionError("--backend gsplat needs a CUDA device; this run is on "
                              f"{device}. Fix: pass --backend torch (or auto).")
        if not gsplat_available():
            raise OptionError("--backend gsplat: the gsplat package is not installed. Fix: "
                              "pip install -r requirements.txt, or pass --backend torch.")
        return "gsplat"
    if name == "torch":
        return "torch"
    raise OptionError(f"--backend must be auto, gsplat or torch; got {name!r}.")


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render(gaussians: FrameGaussians, camera: Camera, background: torch.Tensor,
           cfg: ModelConfig, sh_degree: int, backend: Backend = "torch") -> RenderOutput:
    """Rasterize one frame's Gaussians from ``camera`` onto ``background`` [3].

    ``cfg`` carries the model's rasterization conventions (alpha clamp, near plane, whether
    the principal point is centred); ``sh_degree`` is the active SH degree.
    """
    viewmat, K, campos, _ = camera.tensors(gaussians.means.device,
                                           cfg.centred_principal_point)
    w, h = camera.width, camera.height
    if backend == "gsplat":
        return _render_gsplat(gaussians, viewmat, K, campos, w, h, background, cfg, sh_degree)
    return _render_torch(gaussians, viewmat, K, w, h, background, cfg, sh_degree)


def _sh_colors_cuda(sh_degree: int, means: torch.Tensor, sh: torch.Tensor,
                    campos: torch.Tensor) -> torch.Tensor:
    """RGB of SH coefficients sh [..., N, K, 3] seen from campos [..., 3] (gsplat's SH kernel,
    3DGS's +0.5 and clamp, as :func:`utils.sh_utils.eval_sh_colors`). -> [..., N, 3]

    Done here rather than by ``rasterization(sh_degree=...)``, which takes the camera position
    from ``torch.inverse`` of the view matrix: an inverse synchronises the host with the GPU.
    """
    from gsplat import spherical_harmonics

    rgb = spherical_harmonics(sh_degree, means - campos.unsqueeze(-2), sh)
    return torch.clamp_min(rgb + 0.5, 0.0)


def _render_gsplat(g: FrameGaussians, viewmat, K, campos, w, h, background, cfg, sh_degree
                   ) -> RenderOutput:
    from gsplat import rasterization

    use_covars = g.covars is not None
    colors, alphas, meta = rasterization(
        means=g.means, quats=None if use_covars else g.quats,
        scales=None if use_covars else g.scales, covars=g.covars if use_covars else None,
        opacities=g.opacities, colors=_sh_colors_cuda(sh_degree, g.means, g.sh, campos),
        viewmats=viewmat[None], Ks=K[None], width=w, height=h,
        near_plane=cfg.near_plane, backgrounds=background[None], render_mode="RGB+ED",
        packed=False, rasterize_mode="classic",
    )
    out = colors[0]  # [H, W, 4]
    means2d = meta["means2d"]  # [1, N, 2]
    if means2d.requires_grad:
        means2d.retain_grad()
    return RenderOutput(
        image=out[..., :3].permute(2, 0, 1), alpha=alphas[0].permute(2, 0, 1),
        depth=out[..., 3:].permute(2, 0, 1), means2d=means2d,
        radii=meta["radii"][0].amax(dim=-1), opacities=g.opacities,
    )


def _render_torch(g: FrameGaussians, viewmat, K, w, h, background, cfg, sh_degree
                  ) -> RenderOutput:
    from gaussian_renderer.torch_rasterizer import rasterize_gaussians

    campos = torch.linalg.inv(viewmat)[:3, 3]
    rgb = eval_sh_colors(sh_degree, g.sh, g.means - campos)  # [N, 3]
    depth = (g.means @ viewmat[:3, :3].T + viewmat[:3, 3])[:, 2:3]  # [N, 1]
    bg = torch.cat([background, background.new_zeros(1)])
    out = rasterize_gaussians(
        g.means, g.covariances(), g.opacities, torch.cat([rgb, depth], dim=-1), viewmat, K,
        w, h, bg, near_plane=cfg.near_plane, alpha_max=cfg.alpha_max,
        radius_mode=cfg.radius_mode,
    )
    if out.means2d.requires_grad:
        out.means2d.retain_grad()
    alpha = out.alphas.permute(2, 0, 1)
    acc = out.colors.permute(2, 0, 1)
    return RenderOutput(
        image=acc[:3], alpha=alpha, depth=acc[3:] / alpha.clamp_min(1e-10),
        means2d=out.means2d, radii=out.radii.amax(dim=-1), opacities=g.opacities,
    )


def means2d_grad(out: RenderOutput) -> torch.Tensor | None:
    """d loss / d means2d [N, 2] in pixels, after backward (None if it was not computed)."""
    g = out.means2d.grad
    if g is None:
        return None
    return g.reshape(-1, 2)


@torch.no_grad()
def render_batch(model, cameras: list[Camera], background: torch.Tensor,
                 backend: Backend = "torch", networks=None) -> torch.Tensor:
    """Render several frames (expression + camera each) of one model. -> [B, 3, H, W]

    With gsplat all frames go through the networks and the rasterizer in one call each (the
    networks through ``networks``, a :class:`scene.cuda_graphs.RenderNetworks`, when given);
    the torch backend renders them one by one.
    """
    device = model.xyz.device
    cfg = model.cfg
    tens = [c.tensors(device, cfg.centred_principal_point) for c in cameras]
    exps = torch.stack([t[3] for t in tens])
    campos = torch.stack([t[2] for t in tens])
    if backend != "gsplat":
        return torch.stack([
            render(model.derive(e, c), cam, background, cfg, model.active_sh_degree, backend
                   ).image for e, c, cam in zip(exps, campos, cameras)])
    from gsplat import rasterization

    g = networks(exps, campos) if networks is not None else model.derive_batch(exps, campos)
    use_covars = g.covars is not None
    w, h = cameras[0].width, cameras[0].height
    colors, _, _ = rasterization(
        means=g.means, quats=None if use_covars else g.quats,
        scales=None if use_covars else g.scales, covars=g.covars if use_covars else None,
        opacities=g.opacities,
        colors=_sh_colors_cuda(model.active_sh_degree, g.means, g.sh, campos),
        viewmats=torch.stack([t[0] for t in tens])[:, None],
        Ks=torch.stack([t[1] for t in tens])[:, None], width=w, height=h,
        near_plane=cfg.near_plane, backgrounds=background.expand(len(cameras), 1, 3),
        packed=False, rasterize_mode="classic",
    )
    return colors[:, 0].permute(0, 3, 1, 2)
