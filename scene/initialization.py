"""Initial Gaussians: the head's centres when a dataset has no ``points3d.ply``, and the
body's in the capture camera's frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from scene.body_shape import BodySurface, fit_body_surface
from scene.dataset_images import read_parsing, read_silhouette
from scene.dataset_readers import DatasetInfo
from utils.graphics_utils import GL_TO_CV


def carve_random_points(info: DatasetInfo, center: np.ndarray, radius: float, n: int,
                        seed: int, max_views: int = 24, size: int = 128,
                        head_only: bool | None = None, shell: float = 0.0) -> np.ndarray:
    """Sample ``n`` points uniformly in the view sphere that project inside the foreground of
    (almost) every sampled training frame (the head of the parsing maps with ``head_only``).
    Without masks, points fill the sphere.

    ``shell`` > 0: the points lie instead in the outer layer of that volume (cut to a head-deep
    ellipsoid), this fraction of the way from its boundary to its centre: a head's surface,
    its sides and back included, rather than a filled volume whose outline, seen from the
    capture camera, is drawn by points at the depth of its centre (:func:`_shell_points`)."""
    rng = np.random.default_rng(seed)
    frames = info.train_frames
    pick = np.linspace(0, len(frames) - 1, min(max_views, len(frames))).round().astype(int)
    views = []
    src = info.source_intrinsics
    for i in pick:
        sil = read_silhouette(info, frames[i], head_only)
        if sil is None:
            continue
        h, w = sil.shape
        sil = cv2.resize(sil, (size, max(1, round(size * h / w))), interpolation=cv2.INTER_AREA)
        sx = sil.shape[1] / src.width
        sy = sil.shape[0] / src.height
        w2c = np.linalg.inv(frames[i].c2w @ GL_TO_CV)
        views.append((sil, w2c, src.fx * sx, src.fy * sy, src.cx * sx, src.cy * sy))
    pts = _carve(views, center, radius, n, rng)
    if len(pts) >= min(n, 100) and views:
        # Views of a monocular video span a few tens of degrees: the hull is a long prism
        # along the viewing direction, far deeper than any head. Keep its part inside the
        # ellipsoid as deep as the hull is wide (about the mean viewing direction).
        ellipsoid, middle = _head_ellipsoid(pts, [v[1] for v in views])
        layer = (_shell_points(views, middle, radius, n, rng, ellipsoid, shell) if shell > 0
                 else None)
        pts = (layer if layer is not None
               else _carve(views, center, radius, n, rng, ellipsoid))
    if len(pts) < min(n, 100):
        # the masks do not overlap in any common volume (bad poses?); fall back to the sphere
        cand = rng.normal(size=(n, 3))
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        pts = center + radius * cand * rng.random((n, 1)) ** (1 / 3)
    return pts.astype(np.float32)


def _in_hull(views: list, points: np.ndarray) -> np.ndarray:
    """Whether points [M, 3] project inside the foreground of at least 90% of ``views``."""
    votes = np.zeros(len(points))
    for sil, w2c, fx, fy, cx, cy in views:
        p = points @ w2c[:3, :3].T + w2c[:3, 3]
        z = np.maximum(p[:, 2], 1e-6)
        u = np.floor(fx * p[:, 0] / z + cx).astype(int)
        v = np.floor(fy * p[:, 1] / z + cy).astype(int)
        inside = (u >= 0) & (u < sil.shape[1]) & (v >= 0) & (v < sil.shape[0]) & (p[:, 2] > 0)
        fg = np.zeros(len(points), dtype=bool)
        fg[inside] = sil[v[inside], u[inside]] > 0.5
        votes += fg
    return votes >= 0.9 * len(views) if views else np.ones(len(points), dtype=bool)


def _shell_points(views: list, middle: np.ndarray, radius: float, n: int,
                  rng: np.random.Generator, accept, thickness: float) -> np.ndarray | None:
    """``n`` points in the outer layer of the volume inside ``accept`` and the hull of
    ``views``, seen as star-shaped from ``middle`` [3]: along random directions from it, the
    volume's boundary is found by bisection (the farthest inside point, up to 2 ``radius``),
    and a point placed between that boundary and ``thickness`` of the way back towards
    ``middle``. Directions are weighted by the boundary's squared distance, so that points are
    about uniform over the surface. None where ``middle`` itself lies outside the volume."""
    m = max(4 * n, 1024)
    d = rng.normal(size=(m, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    lo, hi = np.zeros(m), np.full(m, 2.0 * radius)

    def ok(t):
        pts = middle + d * t[:, None]
        return accept(pts) & _in_hull(views, pts)

    if not ok(lo[:1]).all():
        return None
    for _ in range(16):
        mid = (lo + hi) / 2
        inside = ok(mid)
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    w = lo ** 2 / (lo ** 2).sum()
    pick = rng.choice(m, size=n, p=w)
    depth = 1.0 - thickness * rng.random(n)
    return middle + d[pick] * (lo[pick] * depth)[:, None]


def _carve(views: list, center: np.ndarray, radius: float, n: int, rng: np.random.Generator,
           accept=None) -> np.ndarray:
    """Up to ``n`` points uniform in the sphere that project inside the foreground of at least
    90% of ``views`` (and pass ``accept``, a predicate on [M, 3] points)."""
    out = []
    total = 0
    for _ in range(200):
        cand = rng.normal(size=(max(4 * n, 1024), 3))
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        cand *= rng.random((len(cand), 1)) ** (1 / 3)
        cand = center + radius * cand
        if accept is not None:
            cand = cand[accept(cand)]
        keep = cand[_in_hull(views, cand)]
        out.append(keep)
        total += len(keep)
        if total >= n:
            break
    return np.concatenate(out)[:n] if out else np.zeros((0, 3))


def _head_ellipsoid(hull: np.ndarray, w2cs: list[np.ndarray]):
    """A predicate on points [M, 3] and the ellipsoid's centre [3] (head frame): inside the
    ellipsoid whose axes, in the mean camera's frame, are the hull's lateral half-extents (2nd
    to 98th percentile) and, along the viewing direction, the larger of them. Laterally it is
    centred on the hull; in depth on the head frame's origin (trackers put it near the centre
    of the head; the hull itself reaches further behind the head than in front of it, as
    perspective shrinks what is farther), or on the hull's middle where the origin lies
    outside the hull's depth range."""
    rot = np.mean([w[:3, :3] for w in w2cs], axis=0)
    u, _, vt = np.linalg.svd(rot)
    rot = u @ vt  # the mean camera's orientation (world to camera)
    local = hull @ rot.T
    lo, hi = np.percentile(local, [2, 98], axis=0)
    half = np.maximum((hi[:2] - lo[:2]) / 2, 1e-6)
    axes = np.array([half[0], half[1], half.max()]) * 1.1
    depth = 0.0 if lo[2] <= 0.0 <= hi[2] else (lo[2] + hi[2]) / 2  # the origin: 0 here
    centre = np.array([(hi[0] + lo[0]) / 2, (hi[1] + lo[1]) / 2, depth])

    def inside(points: np.ndarray) -> np.ndarray:
        return ((((points @ rot.T) - centre) / axes) ** 2).sum(1) <= 1.0

    return inside, centre @ rot


@dataclass
class BodyStart:
    """Initial body Gaussians: points [n, 3] in the capture camera's frame (OpenGL axes) and
    their colours [n, 3] in [0, 1]; the head centre's distance from the camera (median over the
    frames), the body's surface (None for the slab) and which points go to the back of its
    volume ([n] bool; None: none)."""

    xyz: np.ndarray
    rgb: np.ndarray
    head_depth: float
    surface: BodySurface | None = None
    back: np.ndarray | None = None


MARGIN_DENSITY = 0.25  # body points per pixel beyond the frame, relative to inside it


def body_initial_points(info: DatasetInfo, images: np.ndarray, masks: np.ndarray | None,
                        slots: dict[int, int], head_xyz: np.ndarray, n: int, seed: int,
                        max_views: int = 24, shape: str = "surface", depth_ratio: float = 0.5,
                        depth_offset: float = 0.4, margin: float = 0.0,
                        back_share: float = 0.0) -> BodyStart:
    """Initial body Gaussians.

    The body region of the image is where the person is in at least half of the sampled
    training frames but the head is not (the neck and torso of the parsing maps; without them,
    the mask outside the projected head points). ``n`` points spread over its pixels take the
    frames' median colour. ``shape="surface"``: the points lie on the body's surface fitted to
    that region (:func:`scene.body_shape.fit_body_surface`, with ``depth_ratio`` and
    ``depth_offset``); ``"slab"``: at the head's depth, spread over a head radius behind it.
    ``images`` / ``masks`` are the loaded frames (rows ``slots``). ``margin`` (surface only): the
    body continues beyond the frame's sides and bottom by this fraction of the image's width
    and height where its silhouette touches them (the frame cuts the shoulders off, and a
    turned camera sees past the cut); the silhouette and the colours there repeat the border's.
    ``back_share`` (surface only): that share of the points lies on the back of the body's
    volume, with the colour of the front where it is seen.
    """
    rng = np.random.default_rng(seed)
    intr = info.intrinsics
    frames = info.train_frames
    pick = np.linspace(0, len(frames) - 1, min(max_views, len(frames))).round().astype(int)
    body, necks, colours, depths, half_widths = [], [], [], [], []
    centre = head_xyz.mean(0)
    radius = float(np.linalg.norm(head_xyz - centre, axis=1).max()) if len(head_xyz) else 0.1
    empty = BodyStart(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), 1.0)
    for i in pick:
        f = frames[i]
        h2c = np.linalg.inv(f.c2w)  # head-to-camera, OpenGL axes
        depths.append(-(h2c[:3, :3] @ centre + h2c[:3, 3])[2])
        if len(head_xyz):
            x = (head_xyz @ h2c[:3, :3].T)[:, 0]
            lo, hi = np.percentile(x, [2, 98])
            half_widths.append((hi - lo) / 2)
        parsing = read_parsing(info, f)
        if parsing is not None:
            size = (intr.width, intr.height)
            neck = cv2.resize(parsing["neck"].astype(np.uint8), size,
                              interpolation=cv2.INTER_NEAREST).astype(bool)
            region = cv2.resize((parsing["neck"] | parsing["torso"]).astype(np.uint8), size,
                                interpolation=cv2.INTER_NEAREST).astype(bool)
            necks.append(neck)
        elif masks is not None:
            region = masks[slots[f.index]] > 127
            p = head_xyz @ h2c[:3, :3].T + h2c[:3, 3]
            z = np.maximum(-p[:, 2], 1e-6)
            u = np.round(intr.fx * p[:, 0] / z + intr.cx).astype(int)
            v = np.round(-intr.fy * p[:, 1] / z + intr.cy).astype(int)
            head = np.zeros_like(region, dtype=np.uint8)
            ok = (u >= 0) & (u < intr.width) & (v >= 0) & (v < intr.height)
            head[v[ok], u[ok]] = 1
            k = max(3, intr.width // 32) | 1
            head = cv2.dilate(head, np.ones((k, k), np.uint8))
            region &= ~head.astype(bool)
        else:
            return empty
        body.append(region)
        colours.append(images[slots[f.index]])
    votes = np.mean(body, axis=0)
    if not (votes >= 0.5).any():
        return empty
    head_depth = float(np.median(depths))
    rgb_median = np.median(np.stack(colours), axis=0) / 255.0  # [H, W, 3]
    pad_x = pad_y = 0
    if shape == "surface" and margin > 0:  # the silhouette continues past the frame's edges
        pad_x, pad_y = round(margin * intr.width), round(margin * intr.height)
        pads = ((0, pad_y), (pad_x, pad_x))
        votes = np.pad(votes, pads, mode="edge")
        rgb_median = np.pad(rgb_median, (*pads, (0, 0)), mode="edge")
        necks = [np.pad(m, pads, mode="edge") for m in necks]
    ys, xs = np.nonzero(votes >= 0.5)
    # beyond the frame no training view sees the body: a quarter of the density there
    outside = (xs < pad_x) | (xs >= pad_x + intr.width) | (ys >= intr.height)
    weight = np.where(outside, MARGIN_DENSITY, 1.0)
    k = rng.choice(len(ys), size=n, p=weight / weight.sum())
    rgb = rgb_median[ys[k], xs[k]]
    u = xs[k] + rng.random(n) - pad_x  # the capture image's pixel coordinates
    v = ys[k] + rng.random(n)
    surface = None
    if shape == "surface":
        half_width = float(np.median(half_widths)) if half_widths else radius
        neck = np.mean(necks, axis=0) >= 0.5 if necks else None
        surface = fit_body_surface(votes >= 0.5, intr.fx, intr.fy, intr.cx + pad_x, intr.cy,
                                   head_depth, half_width, depth_ratio, depth_offset, neck=neck)
        d = np.full(n, head_depth)  # along the rays; BodyGaussians places them on the surface
    else:
        d = head_depth + radius * rng.uniform(-0.2, 1.0, size=n)
    xyz = np.stack([(u - intr.cx) / intr.fx * d, -(v - intr.cy) / intr.fy * d, -d], axis=1)
    back = None
    if surface is not None and back_share > 0:
        back = rng.random(n) < back_share
    return BodyStart(xyz.astype(np.float32), rgb.astype(np.float32), head_depth, surface, back)
