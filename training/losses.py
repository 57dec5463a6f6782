"""The training objective: its terms, their weights, and the loss as one callable.

loss = (1 - lambda_dssim) L1 + lambda_dssim (1 - SSIM) + lambda_vgg VGG + lambda_alpha |A - M|
       + lambda_regions L1(eyes and mouth)

(the VGG perceptual term only where its weights are available; the alpha term, the mean
distance between the rendered alpha A and the frame's mask M, only with masks; the region term,
the L1 over the frame's eye and mouth pixels only (0 in a frame without them), only with
region maps).
:class:`TrainingLoss` evaluates it for one rendered frame against its uint8 ground truth and
returns the weighted total and every term by name; on the fast path it is replayed from a CUDA
graph (one capture per image size). The benchmarks use the same class.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.cuda_graph_utils import prepare_capture
from utils.loss_utils import l1_loss, ssim


def loss_weights(lambda_dssim: float, lambda_vgg: float, with_vgg: bool,
                 lambda_alpha: float = 0.0, lambda_regions: float = 0.0) -> dict[str, float]:
    """The weight of every term of the objective, by name."""
    weights = {"l1": 1.0 - lambda_dssim, "ssim": lambda_dssim}
    if with_vgg:
        weights["vgg"] = lambda_vgg
    if lambda_alpha > 0:
        weights["alpha"] = lambda_alpha
    if lambda_regions > 0:
        weights["regions"] = lambda_regions
    return weights


class _LossModule(nn.Module):
    """(rendered image [3, H, W], ground truth uint8 [H, W, 3](, rendered alpha [1, H, W],
    mask uint8 [H, W])) -> (weighted total, the terms [l1, 1 - ssim(, vgg)(, alpha)]
    detached)."""

    def __init__(self, weights: dict[str, float], vgg: nn.Module | None):
        super().__init__()
        self.weights = weights
        object.__setattr__(self, "_vgg", vgg)  # frozen weights: not parameters of the graph

    def forward(self, image: torch.Tensor, gt_u8: torch.Tensor, *rest: torch.Tensor):
        # rest: (alpha, mask_u8) with an alpha term, then (regions_u8) with a region term
        rest = iter(rest)
        gt = gt_u8.permute(2, 0, 1).float() / 255.0
        terms = [l1_loss(image, gt), 1.0 - ssim(image, gt)]
        if self._vgg is not None:
            terms.append(self._vgg(image, gt))
        if "alpha" in self.weights:
            alpha, mask_u8 = next(rest), next(rest)
            terms.append(l1_loss(alpha[0], mask_u8.float() / 255.0))
        if "regions" in self.weights:
            inside = next(rest).float()  # [H, W], 1 in the eyes and the mouth
            err = ((image - gt).abs() * inside).sum()
            terms.append(err / (3.0 * inside.sum()).clamp_min(1.0))
        total = sum(w * t for w, t in zip(self.weights.values(), terms))
        return total, torch.stack(terms).detach()


class TrainingLoss:
    """The photometric training loss, optionally replayed from a CUDA graph (one per image
    size)."""

    def __init__(self, lambda_dssim: float, lambda_vgg: float, vgg: nn.Module | None,
                 graphs: bool, lambda_alpha: float = 0.0, warmup: int = 3,
                 lambda_regions: float = 0.0):
        weights = loss_weights(lambda_dssim, lambda_vgg, vgg is not None, lambda_alpha,
                               lambda_regions)
        self.names = list(weights)
        self.module = _LossModule(weights, vgg)
        self.graphs = graphs
        self.warmup = warmup
        self._fns: dict[tuple, object] = {}

    def __call__(self, image: torch.Tensor, gt_u8: torch.Tensor,
                 alpha: torch.Tensor | None = None, mask_u8: torch.Tensor | None = None,
                 regions_u8: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of a rendered frame; ``alpha`` and ``mask_u8`` are needed (only) when the
        objective has an alpha term, ``regions_u8`` (uint8 [H, W], 1 in the eyes and the
        mouth) when it has a region term."""
        w = self.module.weights
        args = ((image, gt_u8) + ((alpha, mask_u8) if "alpha" in w else ())
                + ((regions_u8,) if "regions" in w else ()))
        if self.graphs:
            key = tuple(image.shape)
            if key not in self._fns:
                prepare_capture(image.device)
                sample = tuple(a.detach().clone().requires_grad_(a.requires_grad)
                               for a in args)
                self._fns[key] = torch.cuda.make_graphed_callables(
                    _LossModule(self.module.weights, self.module._vgg), sample,
                    num_warmup_iters=self.warmup)
            total, terms = self._fns[key](*args)
        else:
            total, terms = self.module(*args)
        out = dict(zip(self.names, terms.unbind()))
        out["total"] = total
        return total, out
