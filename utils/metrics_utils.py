"""Evaluation metrics: PSNR, SSIM, L1 and (when its weights are available offline) LPIPS."""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import torch

from utils.image_utils import psnr
from utils.loss_utils import ssim

LPIPS_BACKBONES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def make_lpips(device: torch.device, net: str = "auto"):
    """An LPIPS function (pred, gt [3, H, W] in [0, 1] -> scalar) or None, and a note.

    LPIPS needs its backbone's ImageNet weights in the local torch cache; nothing is downloaded.
    ``net`` is ``vgg``, ``alex`` or ``auto`` (VGG, as 3DGS reports, else AlexNet).
    """
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    nets = ("vgg", "alex") if net == "auto" else (net,)
    found = [n for n in nets if os.path.isfile(os.path.join(cache, LPIPS_BACKBONES[n]))]
    if not found:
        files = " or ".join(LPIPS_BACKBONES[n] for n in nets)
        return None, (f"LPIPS unavailable: no {'/'.join(nets)} backbone weights ({files}) in the "
                      f"torch cache {cache}; put them there to enable it")
    try:
        import lpips
    except ImportError:
        return None, "LPIPS unavailable: the lpips package is not installed"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=found[0], verbose=False).to(device).eval()

    def fn(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(pred[None] * 2 - 1, gt[None] * 2 - 1).reshape(())

    return fn, f"LPIPS ({found[0]})"


def image_metrics(pred: torch.Tensor, gt: torch.Tensor, lpips_fn=None) -> dict[str, float]:
    """PSNR, SSIM, L1 (and LPIPS) of one image pair [3, H, W] in [0, 1]."""
    pred = pred.clamp(0, 1)
    gt = gt.clamp(0, 1)
    out = {
        "psnr": float(psnr(pred, gt)),
        "ssim": float(ssim(pred, gt)),
        "l1": float((pred - gt).abs().mean()),
    }
    if lpips_fn is not None:
        out["lpips"] = float(lpips_fn(pred, gt))
    return out


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}
