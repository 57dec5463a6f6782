"""Evaluation metrics: PSNR, SSIM, L1 and (when its backbone weights can be had) LPIPS, for
the whole frame and within image regions (boolean masks, see utils/regions.py)."""

from __future__ import annotations

import contextlib
import io
import warnings

import torch

from utils.image_utils import psnr
from utils.loss_utils import gaussian_blur, ssim
from utils.weights import backbone_file, cache_dir, fetch_backbone

# lpips's backbone names and torchvision's (utils/weights.py)
LPIPS_BACKBONES = {"vgg": "vgg16", "alex": "alexnet"}
METRICS = ("psnr", "ssim", "l1", "lpips")
# A region with fewer pixels in a frame is left out of that frame's region metrics.
MIN_REGION_PIXELS = 16


def make_lpips(device: torch.device, net: str = "auto"):
    """An LPIPS function or None, and a note.

    The function takes pred, gt [3, H, W] in [0, 1] and returns the scalar distance, or with
    ``spatial=True`` lpips's spatial map [H, W] (each layer's distance upsampled bilinearly to
    the image and summed; its mean is close to, not equal to, the scalar).

    LPIPS needs its backbone's ImageNet weights in the torch hub cache; where missing they are
    downloaded there first (unless ``GH_NO_DOWNLOAD=1`` or no network answers, see
    utils/weights.py). ``net`` is ``vgg``, ``alex`` or ``auto`` (VGG, as 3DGS reports, else
    AlexNet).
    """
    try:
        import lpips
    except ImportError:
        return None, "LPIPS unavailable: the lpips package is not installed"
    nets = ("vgg", "alex") if net == "auto" else (net,)
    found, why = None, []
    for n in nets:
        path, how = fetch_backbone(LPIPS_BACKBONES[n])
        if path is not None:
            found = n
            break
        why.append(how)
    if found is None:
        files = " or ".join(backbone_file(LPIPS_BACKBONES[n]) for n in nets)
        return None, (f"LPIPS unavailable: no {'/'.join(nets)} backbone weights ({files}) in the "
                      f"torch cache {cache_dir()} ({'; '.join(dict.fromkeys(why))}); put them "
                      "there, or run once where a network answers, to enable it")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=found, verbose=False).to(device).eval()

    def fn(pred: torch.Tensor, gt: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        # lpips reads its ``spatial`` attribute on every call, so one model serves both.
        model.spatial = spatial
        with torch.no_grad():
            d = model(pred[None] * 2 - 1, gt[None] * 2 - 1)
        return d[0, 0] if spatial else d.reshape(())

    return fn, f"LPIPS ({found})"


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


def ssim_map(pred: torch.Tensor, gt: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Per-pixel SSIM [H, W] of two images [C, H, W] in [0, 1], averaged over channels; its
    mean is :func:`utils.loss_utils.ssim` (Gaussian window, sigma 1.5, zero padding)."""
    c = pred.shape[0]
    stats = gaussian_blur(torch.cat([pred, gt, pred * pred, gt * gt, pred * gt])[None],
                          window_size)[0]
    mu1, mu2, e11, e22, e12 = stats.split(c)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu12 + c1) * (2 * s12 + c2)
    den = (mu1_sq + mu2_sq + c1) * (s1 + s2 + c2)
    return (num / den).mean(0)


def region_metrics(pred: torch.Tensor, gt: torch.Tensor, masks: dict[str, torch.Tensor],
                   lpips_fn=None, min_pixels: int = MIN_REGION_PIXELS
                   ) -> dict[str, dict[str, float]]:
    """PSNR, SSIM, L1 (and LPIPS) within each region of one image pair [3, H, W] in [0, 1].

    masks: boolean [H, W] by region name. PSNR comes from the MSE over the region's pixels
    (capped, as the whole frame's, at 120 dB for identical pixels), L1 is their mean absolute
    error, SSIM and LPIPS the means of the SSIM map and of lpips's spatial map over them (both
    maps see the whole frame, so a region's edge is scored with its surroundings). Regions
    with fewer than ``min_pixels`` pixels are left out.
    """
    present = {name: m for name, m in masks.items() if int(m.sum()) >= min_pixels}
    if not present:
        return {}
    pred = pred.clamp(0, 1)
    gt = gt.clamp(0, 1)
    maps = {
        "se": ((pred - gt) ** 2).mean(0),
        "ssim": ssim_map(pred, gt),
        "l1": (pred - gt).abs().mean(0),
    }
    if lpips_fn is not None:
        maps["lpips"] = lpips_fn(pred, gt, spatial=True)
    out = {}
    for name, m in present.items():
        mse = maps["se"][m].mean()
        out[name] = {"psnr": float(-10.0 * torch.log10(mse.clamp_min(1e-12)))}
        out[name].update({k: float(v[m].mean()) for k, v in maps.items() if k != "se"})
    return out


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means of the metrics of :data:`METRICS` over rows (other keys are ignored)."""
    keys = [k for k in METRICS if rows and k in rows[0]]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}
