"""Image losses: L1, SSIM and a VGG16 perceptual term."""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from utils.weights import backbone_file, cache_dir, fetch_backbone


def l1_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return (pred - gt).abs().mean()


@functools.lru_cache(maxsize=8)
def _gauss_taps(size: int, sigma: float, channels: int, device: str, dtype: torch.dtype):
    """The normalised 1-D Gaussian as depthwise kernels along H [C, 1, size, 1] and along W
    [C, 1, 1, size]; their composition is the 2-D window outer(g, g)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).to(dtype)
    return (g.view(1, 1, size, 1).expand(channels, 1, size, 1).contiguous().to(device),
            g.view(1, 1, 1, size).expand(channels, 1, 1, size).contiguous().to(device))


def gaussian_blur(x: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Depthwise Gaussian filter of x [B, C, H, W] with zero padding (same size out), as two
    1-D passes: the same result as the 2-D window, at 2k instead of k^2 taps per pixel."""
    c = x.shape[1]
    wh, ww = _gauss_taps(window_size, sigma, c, str(x.device), x.dtype)
    pad = window_size // 2
    x = F.conv2d(x, wh, padding=(pad, 0), groups=c)
    return F.conv2d(x, ww, padding=(0, pad), groups=c)


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean SSIM of two images [C, H, W] or [B, C, H, W] in [0, 1] (Gaussian window, sigma 1.5,
    zero padding, as 3DGS's training loss). The five local moments are filtered in one call."""
    if img1.dim() == 3:
        img1, img2 = img1[None], img2[None]
    c = img1.shape[1]
    stats = gaussian_blur(torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2], dim=1),
                          window_size)
    mu1, mu2, e11, e22, e12 = stats.split(c, dim=1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu12 + c1) * (2 * s12 + c2)
    den = (mu1_sq + mu2_sq + c1) * (s1 + s2 + c2)
    return (num / den).mean()


class VGGPerceptualLoss(torch.nn.Module):
    """Mean L1 distance of VGG16 features (4 blocks, up to relu4_3) of the two images, after
    ImageNet normalisation and a resize to 224x224 (the release's perceptual term)."""

    def __init__(self, weights_path: str):
        super().__init__()
        import torchvision

        vgg = torchvision.models.vgg16()
        vgg.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        feats = vgg.features.eval()
        self.blocks = torch.nn.ModuleList([feats[:4], feats[4:9], feats[9:16], feats[16:23]])
        for p in self.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        x = (pred[None] - self.mean) / self.std
        y = (gt[None] - self.mean) / self.std
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=(224, 224), mode="bilinear", align_corners=False)
        loss = x.new_zeros(())
        for block in self.blocks:
            x, y = block(x), block(y)
            loss = loss + F.l1_loss(x, y)
        return loss


def make_perceptual_loss(weight: float, device: torch.device
                         ) -> tuple[VGGPerceptualLoss | None, str]:
    """The VGG term, its ImageNet weights read from the torch hub cache (downloaded there first
    where missing and a network answers, see utils/weights.py); otherwise None and why."""
    if weight <= 0:
        return None, "off (lambda_vgg = 0)"
    path, how = fetch_backbone("vgg16")
    if path is None:
        want = os.path.join(cache_dir(), backbone_file("vgg16"))
        return None, (f"off: VGG16 weights not found at {want} ({how}; fetch them once with "
                      "torchvision.models.vgg16(weights='IMAGENET1K_V1') where a network answers)")
    return VGGPerceptualLoss(path).to(device), f"on ({how})"
