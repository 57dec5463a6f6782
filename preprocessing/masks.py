"""Person masks, head / neck / torso parsing and region maps (mouth, eyes) from a segmentation
and face landmarks. The colours and bits written to disk are :mod:`utils.regions`'."""

from __future__ import annotations

import cv2
import numpy as np

from preprocessing.geometry import FaceLayout

LABEL_BG, LABEL_HEAD, LABEL_NECK, LABEL_TORSO = 0, 1, 2, 3
LABEL_NAMES = {LABEL_HEAD: "head", LABEL_NECK: "neck", LABEL_TORSO: "torso"}
MOUTH_MARGIN = 0.05  # the mouth region reaches this far (in mouth widths) beyond the lips
EYE_HEIGHT = 0.5  # each eye region holds an ellipse this high (in eye widths) between its corners
EYE_MARGIN = 0.1  # ... and reaches this far (in eye widths) beyond it and the lids


def fill_polygon(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) image of a filled polygon [M, 2] given in pixel coordinates."""
    img = np.zeros(shape, np.uint8)
    # pixel (i, j) has its centre at (j + 0.5, i + 0.5); fillPoly samples integer points
    pts = np.round((poly - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(img, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return img.astype(bool)


def disc(radius: float) -> np.ndarray:
    """A filled disc of the given radius (pixels) as a uint8 structuring element."""
    r = max(int(round(radius)), 0)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def clean_mask(prob: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Soft person mask (H, W) float32 in [0, 1]: the segmentation ``prob`` limited to the
    regions connected to the face (other people and objects are removed), with the face
    (boolean (H, W)) always included."""
    hard = (prob > 0.5) | face
    _, labels = cv2.connectedComponents(hard.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[face & hard])
    keep = keep[keep > 0]
    region = np.isin(labels, keep).astype(np.uint8)
    # keep the soft rim just outside the thresholded region
    region = cv2.dilate(region, np.ones((5, 5), np.uint8)).astype(bool)
    out = np.where(region, prob, 0.0)
    return np.maximum(out, face.astype(np.float32)).astype(np.float32)


def parse(mask: np.ndarray, points2d: np.ndarray, oval: np.ndarray, chin: int, forehead: int
          ) -> np.ndarray:
    """Head / neck / torso labels (H, W) uint8 from a soft mask (H, W) and landmarks [N, 2].

    The head is the foreground above the lower face outline (extended sideways at the
    height of its ends), plus the jaw's flanks beside the chin and the silhouette under the
    chin while it is clearly wider than the neck; then the neck is the narrow run of
    foreground under the chin, down to where the silhouette widens into the shoulders (and a
    little further, as seen from the front); the rest is torso. Only pixels with mask > 0.5
    get a body label. ``oval`` indexes the face outline, ``chin`` and ``forehead`` single
    landmarks of ``points2d``.
    """
    h, w = mask.shape
    fg = mask > 0.5
    poly = points2d[oval]  # [M, 2] face outline
    face = fill_polygon(poly, (h, w))
    cols = np.arange(w)
    # Lowest face row per column; outside the face, the lowest row at the nearest face column.
    has = face.any(0)
    labels = np.full((h, w), LABEL_BG, np.uint8)
    if not has.any():
        labels[fg] = LABEL_HEAD
        return labels
    lowest = np.where(has, h - 1 - np.argmax(face[::-1], axis=0), -1)
    covered = np.flatnonzero(has)
    nearest = covered[np.clip(np.searchsorted(covered, cols), 0, len(covered) - 1)]
    left = covered[np.clip(np.searchsorted(covered, cols) - 1, 0, len(covered) - 1)]
    nearest = np.where(np.abs(left - cols) < np.abs(nearest - cols), left, nearest)
    boundary = lowest[nearest]  # [W]
    rows = np.arange(h)[:, None]
    above = rows <= boundary[None, :]
    labels[fg & (above | face)] = LABEL_HEAD
    below = fg & ~above & ~face

    chin_u, chin_v = points2d[chin]
    face_h = max(float(np.linalg.norm(points2d[chin] - points2d[forehead])), 1.0)
    face_w = max(float(np.ptp(poly[:, 0])), 1.0)
    top = max(int(chin_v), 0)
    runs: list[tuple[int, int] | None] = [None] * h
    widths = np.zeros(h)
    for v in range(top, h):
        runs[v] = _run_at(below[v], int(round(chin_u)), int(0.3 * face_w))
        if runs[v] is not None:
            widths[v] = runs[v][1] - runs[v][0]
    labels[below] = LABEL_TORSO
    # Beside the chin, under the outline's flanks, the silhouette is still the jaw.
    margin = 0.1 * face_w
    flank = below & (rows < chin_v) & (cols >= poly[:, 0].min() - margin) & (
        cols <= poly[:, 0].max() + margin)
    labels[flank] = LABEL_HEAD
    probe = widths[top:int(chin_v + 0.6 * face_h)]
    probe = probe[probe > 0]
    if len(probe) == 0:
        return labels
    neck_w = float(np.percentile(probe, 10))
    # Walking down from the chin: the silhouette is still the jaw while it is clearly wider
    # than the neck (at most a quarter face below the chin), then the neck until it widens
    # into the shoulders (at most 0.6 face heights below the chin).
    part = LABEL_HEAD
    for v in range(top, h):
        run = runs[v]
        if run is None:
            if part == LABEL_NECK:
                break
            continue
        if part == LABEL_HEAD and (widths[v] <= 1.25 * neck_w or v > chin_v + 0.25 * face_h):
            part = LABEL_NECK
        if part == LABEL_NECK and (widths[v] > 1.6 * neck_w or v > chin_v + 0.6 * face_h):
            # Seen from the front, the neck runs on below the shoulders' outline down to
            # the collar: keep its last columns for a few more rows.
            last = next(r for r in runs[v - 1::-1] if r is not None)
            end = min(h, v + int(0.15 * face_h))
            band = below[v:end, last[0]:last[1]]
            labels[v:end, last[0]:last[1]] = np.where(band, LABEL_NECK,
                                                      labels[v:end, last[0]:last[1]])
            break
        seg = slice(run[0], run[1])
        labels[v, seg] = np.where(below[v, seg], part, labels[v, seg])
    return labels


def _run_at(row: np.ndarray, u: int, reach: int) -> tuple[int, int] | None:
    """The run [start, end) of True values in a boolean row containing column u, or the
    nearest one within ``reach`` columns."""
    w = len(row)
    u = min(max(u, 0), w - 1)
    if not row[u]:
        idx = np.flatnonzero(row[max(0, u - reach):u + reach + 1])
        if len(idx) == 0:
            return None
        idx += max(0, u - reach)
        u = int(idx[np.argmin(np.abs(idx - u))])
    start = u
    while start > 0 and row[start - 1]:
        start -= 1
    end = u + 1
    while end < w and row[end]:
        end += 1
    return start, end


def label_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Head / neck / torso labels (H, W) -> boolean masks by region name."""
    return {name: labels == k for k, name in LABEL_NAMES.items()}


def feature_regions(points2d: np.ndarray, layout: FaceLayout, shape: tuple[int, int]
                    ) -> dict[str, np.ndarray]:
    """Mouth and eye regions (boolean (H, W)) from face landmarks [N, 2] (pixels).

    ``mouth``: the filled lip outlines (the lips and the mouth between them), a little wider.
    ``eyes``: per eye, its lid outline together with an ellipse between its corners half an
    eye width high, a little wider, so that the region covers the eye whether it is open or
    closed and a blink stays inside it.
    """
    mouth = np.zeros(shape, bool)
    for loop in layout.lips:
        mouth |= fill_polygon(points2d[loop], shape)
    if layout.lips:
        a, b = _farthest_pair(points2d[np.concatenate(layout.lips)])  # the mouth's corners
        margin = MOUTH_MARGIN * float(np.linalg.norm(a - b))
        mouth = cv2.dilate(mouth.astype(np.uint8), disc(margin)).astype(bool)
    eyes = np.zeros(shape, bool)
    for loop in layout.eyes:
        pts = points2d[loop]
        a, b = _farthest_pair(pts)  # the eye's corners
        width = float(np.linalg.norm(a - b))
        eye = fill_polygon(pts, shape).astype(np.uint8)
        centre = 0.5 * (a + b) - 0.5  # pixel centres at +0.5
        angle = float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))
        cv2.ellipse(eye, tuple(np.round(centre * 16).astype(int).tolist()),
                    (round(width * 8), round(EYE_HEIGHT * width * 8)), angle, 0, 360, 1, -1,
                    lineType=cv2.LINE_8, shift=4)
        eyes |= cv2.dilate(eye, disc(EYE_MARGIN * width)).astype(bool)
    return {"mouth": mouth, "eyes": eyes}


def _farthest_pair(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two points of pts [M, 2] farthest apart."""
    gaps = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    i, j = np.unravel_index(np.argmax(gaps), gaps.shape)
    return pts[i], pts[j]
