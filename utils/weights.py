"""ImageNet backbone weights (torchvision's VGG16 and AlexNet) for the perceptual loss and LPIPS.

They are looked for in the torch hub cache (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``) and, where missing, fetched there once through torch.hub as
torchvision does (progress bar, hash check of the file name's prefix). Where no network
answers, the caller goes on without them and says why. ``GH_NO_DOWNLOAD=1`` turns fetching off
(the tests set it, so that they never touch the network).
"""

from __future__ import annotations

import os
import socket

import torch

NO_DOWNLOAD_ENV = "GH_NO_DOWNLOAD"
# How long a connection or a read may stall before the download is given up: an offline machine
# (or one behind a firewall that drops packets) goes on without the weights after this.
DOWNLOAD_TIMEOUT_S = 10.0
# torchvision's weights enum of each backbone (their IMAGENET1K_V1 entries are what lpips and
# the release's perceptual loss load).
_WEIGHTS = {"vgg16": "VGG16_Weights", "alexnet": "AlexNet_Weights"}


def backbone_url(net: str) -> str:
    """torchvision's download address of the ImageNet weights of ``net`` (vgg16, alexnet)."""
    import torchvision

    return getattr(torchvision.models, _WEIGHTS[net]).IMAGENET1K_V1.url


def backbone_file(net: str) -> str:
    """The file name torchvision caches them under, e.g. vgg16-397923af.pth."""
    return os.path.basename(backbone_url(net))


def cache_dir() -> str:
    """The torch hub checkpoint folder the weights are read from and downloaded to."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def downloads_allowed() -> bool:
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def fetch_backbone(net: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> tuple[str | None, str]:
    """The path of the cached ImageNet weights of ``net`` (vgg16, alexnet), downloading them
    into the torch hub cache first where they are missing, and how they were had; or None and
    why not (downloads off, no network, a failed download)."""
    url = backbone_url(net)
    path = os.path.join(cache_dir(), os.path.basename(url))
    if os.path.isfile(path):
        return path, f"cached at {path}"
    if not downloads_allowed():
        return None, f"not downloaded: {NO_DOWNLOAD_ENV}=1"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True,
                                           map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:  # URLError and timeouts are OSErrors; a bad hash
        reason = getattr(err, "reason", None) or err
        return None, f"the download of {url} failed ({reason})"
    finally:
        socket.setdefaulttimeout(previous)
    if not os.path.isfile(path):
        return None, f"the download of {url} left no {path}"
    return path, f"downloaded to {path}"
