"""Head Gaussians that no training view sees, pruned at the end of training (``--unseen_prune``).

A monocular clip films the head from one side. Gaussians that end up behind the face, inside
the head or behind its back are hidden in every training frame: nothing in the images holds
them, they keep whatever colour and shape the tri-planes give them, and a turned camera sees
them stick out past the head's outline (on the synthetic head, 60 % of what a 30-degree view
draws outside the true silhouette comes from Gaussians hidden in the frame's own capture view).
The frontal render does not change without them.

A Gaussian's visibility in a frame is its blending weight summed over the image's pixels,
sum_p alpha_i(p) T_i(p): the gradient of the rendered image's sum with respect to a colour of
1 given to every Gaussian, so one render and one backward pass per frame, on either backend.
"""

from __future__ import annotations

import numpy as np
import torch

from gaussian_renderer import rasterize
from scene.cameras import Camera
from scene.gaussian_model import FrameGaussians, GaussianHead
from scene.rendering import colour_viewpoint


def pick_views(cameras: list[Camera], max_views: int) -> list[int]:
    """Up to ``max_views`` training frames: half spread evenly over the clip, the rest the
    frames where each expression coefficient is largest and smallest (a wide-open mouth or a
    blink, which may show what no other frame does), the coefficients that vary most first;
    where coefficients share their extremes, more frames spread over the clip."""
    n = len(cameras)
    if n <= max_views:
        return list(range(n))
    picked = dict.fromkeys(np.linspace(0, n - 1, max_views // 2).round().astype(int).tolist())
    exps = torch.stack([c.exp.float() for c in cameras])
    if exps.shape[1]:
        for k in torch.argsort(exps.std(dim=0), descending=True).tolist():
            for i in (int(exps[:, k].argmax()), int(exps[:, k].argmin())):
                if len(picked) < max_views:
                    picked.setdefault(i)
    rest = [i for i in range(n) if i not in picked]  # coefficients that share extremes
    left = max_views - len(picked)
    if left > 0:
        picked.update(dict.fromkeys(rest[j] for j in np.linspace(0, len(rest) - 1, left)
                                    .round().astype(int)))
    return sorted(picked)


def frame_weights(model: GaussianHead, g: FrameGaussians, cam: Camera, backend: str,
                  device: torch.device, where: torch.Tensor | None = None) -> torch.Tensor:
    """Each of a frame's Gaussians ``g`` (head and body) [N]: its blending weight summed over
    the pixels of ``cam``'s image, or over those of the mask ``where`` [H, W] (float)."""
    viewmat, K, _, _ = cam.tensors(device, model.centred_principal_point)
    ones = torch.ones(g.means.shape[0], 3, device=device, requires_grad=True)
    with torch.enable_grad():
        out = rasterize(g.means, g.quats, g.scales, g.opacities.float(), ones, viewmat, K,
                        cam.width, cam.height, torch.zeros(3, device=device), covars=g.covars,
                        backend=backend, with_depth=False, **model.raster_options)
        image = out.image[0]
        (image.sum() if where is None else (image * where).sum()).backward()
    return ones.grad[:, 0]


def blending_weights(model: GaussianHead, cameras: list[Camera], iteration: int, backend: str,
                     device: torch.device) -> torch.Tensor:
    """The largest blending weight (in pixels) of each head Gaussian over ``cameras`` [N]."""
    best = torch.zeros(model.num_gaussians, device=device)
    for cam in cameras:
        exp = cam.tensors(device, model.centred_principal_point)[3]
        with torch.no_grad():
            view = colour_viewpoint(model, cam, device)
            g = model.derive(exp if model.deforms_at(iteration) else None, view)
            g = model.with_body(g, cam.capture(device))
        best = torch.maximum(best, frame_weights(model, g, cam, backend, device)[
            :model.num_gaussians])
    return best


def unseen_head_gaussians(model: GaussianHead, cameras: list[Camera], iteration: int,
                          backend: str, device: torch.device, threshold: float,
                          max_views: int) -> torch.Tensor:
    """[N] bool: head Gaussians whose blending weight stays below ``threshold`` millionths of
    the frame's area in every one of up to ``max_views`` training frames (:func:`pick_views`)."""
    views = [cameras[i] for i in pick_views(cameras, max_views)]
    if not views:
        return torch.zeros(model.num_gaussians, dtype=torch.bool, device=device)
    area = views[0].width * views[0].height
    weights = blending_weights(model, views, iteration, backend, device)
    return weights < threshold * 1e-6 * area


def prune_unseen(trainer, iteration: int) -> int:
    """Remove the head Gaussians no training frame sees (``--unseen_prune``, over
    ``--unseen_views`` frames) from a :class:`training.trainer.Trainer`'s model, its optimizers
    and its densification state. Returns how many were removed."""
    from training.densification import remap_gaussians

    opt, model = trainer.opt, trainer.model
    unseen = unseen_head_gaussians(model, trainer.scene.train_cameras, iteration,
                                   trainer.backend, trainer.device, opt.unseen_prune,
                                   opt.unseen_views)
    n = int(unseen.sum())
    if n == 0 or n == model.num_gaussians:  # nothing to do, or a model with nothing seen
        return 0
    remap_gaussians(model, trainer.optimizers, torch.nonzero(~unseen).squeeze(1))
    trainer.densifier.reset(model.num_gaussians, trainer.device)
    return n
