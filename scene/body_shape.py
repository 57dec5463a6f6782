"""A plausible 3D shape for the body (neck, shoulders, torso) seen from one static camera.

A monocular video films the body from one viewpoint only, so how deep each body pixel lies is
not observable: without a prior the body's Gaussians sit in a flat layer, and a camera turned
by 30 degrees sees the shoulders in the wrong place. The prior here: every image row of the
body silhouette is the cross-section of a rounded volume, an ellipse as wide as the silhouette
row and about half as deep (a neck, narrower than the head, is round), centred a little behind
the head's centre. The front surface of these ellipses is a depth map over the capture camera's
image (:func:`fit_body_surface`), on which the body Gaussians start and stay
(:class:`scene.body_model.BodyGaussians`): they move across the view, and their depth is the
surface's there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, median_filter

SURFACE_GRID = 64  # rows and columns of the depth map


@dataclass
class BodySurface:
    """The body's front surface as depths along the capture camera's axis.

    ``depth`` [G, G] at normalised image coordinates p = (u - cx) / fx (right) and
    q = -(v - cy) / fy (up), sampled on a regular grid whose corners' centres are
    ``box`` = (p at the left, p at the right, q at the top, q at the bottom)."""

    depth: np.ndarray
    box: tuple[float, float, float, float]
    back: np.ndarray | None = None  # [G, G] where the rays leave the volumes (the back)
    inside: np.ndarray | None = None  # [G, G] bool: the silhouette, grown by one cell


def fit_body_surface(region: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                     head_depth: float, head_half_width: float, depth_ratio: float = 0.5,
                     offset: float = 0.4, grid: int = SURFACE_GRID,
                     neck: np.ndarray | None = None) -> BodySurface:
    """The body's front surface from its silhouette in the capture camera.

    region [H, W] bool: body pixels (neck and torso) of the capture camera's image of size W x H
    with intrinsics fx, fy, cx, cy; ``neck`` [H, W] bool, where known (parsing maps), the neck's
    pixels among them. ``head_depth``: the head centre's distance along the camera axis;
    ``head_half_width`` (R): half the head's width.

    Each part (the neck and the rest, the torso; or the whole region without ``neck``) is a
    volume whose cross-section in every image row is an ellipse centred ``offset`` x R behind
    the head's centre, as wide as the part's silhouette in that row (2a, measured at that
    depth) and 2b deep, b = max(depth_ratio x a, min(a, R)): a torso about half as deep as
    wide, a neck round. The torso's top (the shoulders, seen from the front) curves back: below
    the top of its silhouette in each column, its depth grows as a quarter ellipse 1.5 b high.
    A pixel's depth is where its ray first meets one of the volumes; pixels that meet none lie
    at the centres' depth.
    """
    h, w = region.shape
    zc = head_depth + offset * head_half_width
    u_g = (np.arange(grid) + 0.5) * w / grid  # the grid's pixel coordinates
    v_g = np.clip(((np.arange(grid) + 0.5) * h / grid).astype(int), 0, h - 1)
    parts = [(region, False)] if neck is None else [(neck & region, False),
                                                      (region & ~neck, True)]
    depth = np.full((grid, grid), np.inf)
    back = np.full((grid, grid), -np.inf)
    for part, round_top in parts:
        ellipses = _row_ellipses(part, fx, cx, zc, head_half_width, depth_ratio)
        if ellipses is None:
            continue
        xc, a, b = (e[v_g][:, None] for e in ellipses)
        p = (u_g - cx) / fx
        if round_top:
            g = _top_rounding(part, fy, zc, b, u_g, v_g)
            hit, leave = _ray_ellipse_depth(p[None, :], xc, a, b * np.nan_to_num(g), zc,
                                            far=True)
            hit = np.where(np.isnan(g), np.inf, hit)
            leave = np.where(np.isnan(g), -np.inf, leave)
        else:
            hit, leave = _ray_ellipse_depth(p[None, :], xc, a, b, zc, far=True)
        depth = np.minimum(depth, hit)
        back = np.maximum(back, leave)
    depth = np.where(np.isfinite(depth), depth, zc)
    back = np.where(np.isfinite(back), np.maximum(back, depth), depth)
    u_i = np.clip(u_g.astype(int), 0, w - 1)
    inside = binary_dilation(region[v_g][:, u_i], iterations=1)
    return BodySurface(depth.astype(np.float32), _box(w, h, fx, fy, cx, cy, grid),
                       back.astype(np.float32), inside)


def _row_ellipses(part: np.ndarray, fx: float, cx: float, zc: float, half_width: float,
                  depth_ratio: float):
    """Per image row (all H of them) the centre xc, half-width a and half-depth b of the part's
    cross-section at depth zc; rows without the part take the nearest row's. None for an empty
    part."""
    h = part.shape[0]
    rows = np.flatnonzero(part.any(axis=1))
    if len(rows) == 0:
        return None
    cols = [np.flatnonzero(part[r]) for r in rows]
    # row extents in normalised coordinates, smoothed along the rows (ragged parsing edges)
    p0 = np.array([(c[0] - cx) / fx for c in cols])
    p1 = np.array([(c[-1] + 1 - cx) / fx for c in cols])
    k = max(3, h // 24) | 1
    p0, p1 = median_filter(p0, k, mode="nearest"), median_filter(p1, k, mode="nearest")
    v = np.arange(h)
    p0, p1 = np.interp(v, rows, p0), np.interp(v, rows, p1)
    a = np.maximum((p1 - p0) / 2 * zc, 1e-6)
    b = np.maximum(depth_ratio * a, np.minimum(a, half_width))
    return (p0 + p1) / 2 * zc, a, b


def _top_rounding(part: np.ndarray, fy: float, zc: float, b: np.ndarray, u_g: np.ndarray,
                  v_g: np.ndarray) -> np.ndarray:
    """[G, G] factors in [0, 1] of the half-depth b [G, 1]: 0 at the top of the part's
    silhouette in each column, rising as a quarter ellipse to 1 at 1.5 b below it; NaN above
    the top and in columns without the part (no volume there)."""
    h, w = part.shape
    has = part.any(axis=0)
    top = np.where(has, np.argmax(part, axis=0), 10 * h)  # first row of the part per column
    top_g = top[np.clip(u_g.astype(int), 0, w - 1)][None, :]  # [1, G]
    below = (v_g[:, None] - top_g) / fy * zc  # metres below the top
    t = np.clip(below / (1.5 * b), 0.0, 1.0)
    g = np.sqrt(1.0 - (1.0 - t) ** 2)
    return np.where(below < 0, np.nan, g)


def _ray_ellipse_depth(p: np.ndarray, xc: np.ndarray, a: np.ndarray, b: np.ndarray,
                       zc: float, far: bool = False):
    """Depth t of the nearer intersection of the ray x = p t with the ellipse
    ((x - xc) / a)^2 + ((t - zc) / b)^2 = 1; inf where the ray misses it. With ``far``, also
    the farther intersection (-inf where it misses)."""
    b = np.maximum(b, 1e-9)
    qa = (p / a) ** 2 + 1 / b ** 2
    qb = -2 * (p * xc / a ** 2 + zc / b ** 2)
    qc = (xc / a) ** 2 + (zc / b) ** 2 - 1
    disc = qb ** 2 - 4 * qa * qc
    root = np.sqrt(np.maximum(disc, 0))
    t = np.where(disc >= 0, (-qb - root) / (2 * qa), np.inf)
    if far:
        return t, np.where(disc >= 0, (-qb + root) / (2 * qa), -np.inf)
    return t


def _box(w: int, h: int, fx: float, fy: float, cx: float, cy: float, grid: int = SURFACE_GRID
         ) -> tuple[float, float, float, float]:
    """Normalised coordinates of the centres of the outermost grid cells over a W x H image."""
    half_u, half_v = 0.5 * w / grid, 0.5 * h / grid
    return ((half_u - cx) / fx, (w - half_u - cx) / fx,
            -(half_v - cy) / fy, -(h - half_v - cy) / fy)
