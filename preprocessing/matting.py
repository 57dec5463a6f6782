"""Edge decontamination: the colour of the person at the soft edges of the mask.

A pixel at the person's edge (hair, shoulders) mixes the person's colour F with the colour of
the background B behind it, ``I = a F + (1 - a) B`` for the mask's alpha a. The trainer
composites the frame over its own background, ``a I + (1 - a) W``, which keeps a share
``a (1 - a)`` of B: on a coloured screen the avatar learns a coloured outline. Solving for F
and writing it in place of I removes it.

B is estimated per pixel from the nearby pixels that are clearly background, F's prior from
the nearby pixels that are clearly the person (normalised convolution over an image pyramid,
so the nearest ones count, however wide the soft band is). Where a is small the equation says
little about F, so F is solved in the least-squares sense with a weak pull towards the nearby
person colour: ``min |a F - (I - (1 - a) B)|^2 + LAMBDA^2 |F - F_near|^2``.
"""

from __future__ import annotations

import cv2
import numpy as np

CLEAR_BG = 0.02  # alpha at most this: the pixel shows the background only
CLEAR_FG = 0.98  # alpha at least this: the pixel shows the person only
LAMBDA = 0.1  # weight of the pull towards the nearby person colour
MIN_WEIGHT = 1e-3  # smallest share of known pixels near a pixel to trust their mean


def local_mean(img: np.ndarray, known: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Mean colour [H, W, C] of the ``known`` pixels (boolean [H, W]) near every pixel of
    ``img`` [H, W, C]: a Gaussian-weighted mean at the finest level of an image pyramid where
    enough known pixels lie near, so it reaches as far as needed. Pixels with no known pixel
    at any level get the mean of all known ones (zeros if none is known)."""
    img = img.astype(np.float32)
    w = known.astype(np.float32)
    h, wd = w.shape
    out = np.zeros_like(img)
    todo = np.ones((h, wd), bool)
    num, den = img * w[..., None], w
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    den = cv2.GaussianBlur(den, (0, 0), sigma)
    while True:
        up_num = cv2.resize(num, (wd, h), interpolation=cv2.INTER_LINEAR).reshape(img.shape)
        up_den = cv2.resize(den, (wd, h), interpolation=cv2.INTER_LINEAR)
        ok = todo & (up_den > MIN_WEIGHT)
        out[ok] = up_num[ok] / up_den[ok, None]
        todo &= ~ok
        if not todo.any() or min(den.shape) < 2:
            break
        num, den = cv2.pyrDown(num), cv2.pyrDown(den)
    if todo.any():
        out[todo] = img[known].mean(0) if known.any() else 0.0
    return out


def decontaminate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The person's own colour at the soft edges of the mask.

    rgb (H, W, 3) uint8, alpha (H, W) in [0, 1] (as the trainer will read it). Returns a copy
    of rgb whose partly transparent pixels (0 < alpha < 1) hold the foreground colour F solved
    from ``I = a F + (1 - a) B`` (clamped to 0..255); other pixels are unchanged. Without any
    clearly-background pixel there is nothing to remove and rgb is returned as it is.
    """
    a = alpha.astype(np.float32)
    soft = (a > 0.5 / 255) & (a < 1 - 0.5 / 255)
    bg = a <= CLEAR_BG
    if not soft.any() or not bg.any():
        return rgb.copy()
    img = rgb.astype(np.float32)
    fg = a >= CLEAR_FG
    back = local_mean(img, bg)
    near = local_mean(img, fg) if fg.any() else img
    a3 = a[..., None]
    f = (a3 * (img - (1 - a3) * back) + LAMBDA**2 * near) / (a3**2 + LAMBDA**2)
    out = rgb.copy()
    out[soft] = np.clip(np.rint(f[soft]), 0, 255).astype(np.uint8)
    return out
