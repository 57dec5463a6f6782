"""Initial Gaussian centres when a dataset has no ``points3d.ply``."""

from __future__ import annotations

import cv2
import numpy as np

from scene.dataset_images import read_silhouette
from scene.dataset_readers import DatasetInfo
from utils.graphics_utils import GL_TO_CV


def carve_random_points(info: DatasetInfo, center: np.ndarray, radius: float, n: int,
                        seed: int, max_views: int = 24, size: int = 128) -> np.ndarray:
    """Sample ``n`` points uniformly in the view sphere that project inside the foreground of
    (almost) every sampled training frame. Without masks, points fill the sphere."""
    rng = np.random.default_rng(seed)
    frames = info.train_frames
    pick = np.linspace(0, len(frames) - 1, min(max_views, len(frames))).round().astype(int)
    views = []
    src = info.source_intrinsics
    for i in pick:
        sil = read_silhouette(info, frames[i])
        if sil is None:
            continue
        h, w = sil.shape
        sil = cv2.resize(sil, (size, max(1, round(size * h / w))), interpolation=cv2.INTER_AREA)
        sx = sil.shape[1] / src.width
        sy = sil.shape[0] / src.height
        w2c = np.linalg.inv(frames[i].c2w @ GL_TO_CV)
        views.append((sil, w2c, src.fx * sx, src.fy * sy, src.cx * sx, src.cy * sy))
    out = []
    total = 0
    for _ in range(200):
        cand = rng.normal(size=(max(4 * n, 1024), 3))
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        cand *= rng.random((len(cand), 1)) ** (1 / 3)
        cand = center + radius * cand
        votes = np.zeros(len(cand))
        for sil, w2c, fx, fy, cx, cy in views:
            p = cand @ w2c[:3, :3].T + w2c[:3, 3]
            z = np.maximum(p[:, 2], 1e-6)
            u = np.floor(fx * p[:, 0] / z + cx).astype(int)
            v = np.floor(fy * p[:, 1] / z + cy).astype(int)
            inside = (u >= 0) & (u < sil.shape[1]) & (v >= 0) & (v < sil.shape[0]) & (p[:, 2] > 0)
            fg = np.zeros(len(cand), dtype=bool)
            fg[inside] = sil[v[inside], u[inside]] > 0.5
            votes += fg
        keep = cand[votes >= 0.9 * len(views)] if views else cand
        out.append(keep)
        total += len(keep)
        if total >= n:
            break
    pts = np.concatenate(out)[:n] if out else np.zeros((0, 3))
    if len(pts) < min(n, 100):
        # the masks do not overlap in any common volume (bad poses?); fall back to the sphere
        cand = rng.normal(size=(n, 3))
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        pts = center + radius * cand * rng.random((n, 1)) ** (1 / 3)
    return pts.astype(np.float32)
