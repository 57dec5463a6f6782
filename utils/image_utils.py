"""Image metrics."""

from __future__ import annotations

import torch


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] (any matching shape)."""
    mse = ((pred - gt) ** 2).mean()
    return -10.0 * torch.log10(mse.clamp_min(1e-12))
