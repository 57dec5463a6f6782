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


def parse(mask: np.ndarray, points2d: np.ndarray, oval: np.ndarray, chin: int, forehead: int,
          image: np.ndarray | None = None) -> np.ndarray:
    """Head / neck / torso labels (H, W) uint8 from a soft mask (H, W) and landmarks [N, 2].

    The head is the foreground above the lower face outline (extended sideways at the
    height of its ends), plus the jaw's flanks beside the chin and the silhouette under the
    chin while it is clearly wider than the neck; then the neck is the narrow run of
    foreground under the chin, down to where the silhouette widens into the shoulders (and a
    little further, as seen from the front); the rest is torso. Only pixels with mask > 0.5
    get a body label. ``oval`` indexes the face outline, ``chin`` and ``forehead`` single
    landmarks of ``points2d``.

    With the frame ``image`` (RGB uint8 (H, W, 3)) the neck is the skin under the chin
    (pixels coloured like the face, see :func:`skin_like`) rather than the silhouette: on a
    crop that ends a little below the collar the clothing fills the silhouette from one side
    to the other right under the jaw, so the silhouette shows no neck, while the skin ends at
    the collar. Clothing is torso; what is not skin right under the chin, over the neck's
    skin, is the head (a beard, the shadow under the jaw).
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
    labels[below] = LABEL_TORSO
    # Beside the chin, under the outline's flanks, the silhouette is still the jaw.
    margin = 0.1 * face_w
    jaw_cols = (cols >= poly[:, 0].min() - margin) & (cols <= poly[:, 0].max() + margin)
    labels[below & (rows < chin_v) & jaw_cols] = LABEL_HEAD
    skin = None if image is None else skin_like(image, face, face_w)
    if skin is None:
        parts = _neck_walk(below, chin_u, chin_v, face_w, face_h, NECK_PERCENTILE, 0.3)
    else:
        skin &= below
        parts = _neck_walk(skin, chin_u, chin_v, face_w, face_h, SKIN_NECK_PERCENTILE, 0.1)
        # Under the chin (the columns where the outline runs within 0.1 face heights of its
        # lowest point, at most a quarter face below it), what is not skin but has the neck
        # under it is the head: a beard, the jaw's shadow. (Clothing beside the neck has none.)
        neck = parts == LABEL_NECK
        over_neck = (np.cumsum(neck[::-1], axis=0)[::-1] > 0) & (np.cumsum(neck, axis=0) == 0)
        chin_cols = boundary >= chin_v - 0.1 * face_h
        labels[below & ~skin & over_neck & chin_cols[None, :] & (rows >= int(chin_v))
               & (rows <= chin_v + 0.25 * face_h)] = LABEL_HEAD
    labels[parts > 0] = parts[parts > 0]
    return labels


# The neck's width is this percentile of the widths of the runs under the chin: of the
# silhouette's (in which the shoulders may take most rows), or of the skin's (the median: the
# skin ends at the collar, so its rows are the neck's, which narrow along the collar's curve at
# the bottom). The skin's run is looked for closer to the chin (0.1 face widths beside it, not
# 0.3): skin beside a beard is not the neck's middle.
NECK_PERCENTILE, SKIN_NECK_PERCENTILE = 10, 50
# Skin: within this many robust standard deviations of the face's chromaticity (at least
# SKIN_MIN_SPREAD each), and at least SKIN_MIN_LIGHT of the face's median brightness (the
# neck lies in the jaw's shadow; dark hair is darker still).
SKIN_SIGMAS, SKIN_MIN_SPREAD, SKIN_MIN_LIGHT = 3.5, 0.012, 0.35
SKIN_MIN_PIXELS = 20  # fewer face pixels than this to learn the skin's colour from: no model


def skin_like(image: np.ndarray, face: np.ndarray, face_w: float) -> np.ndarray | None:
    """Pixels (bool (H, W)) of ``image`` (RGB uint8 (H, W, 3)) coloured like the skin of the
    middle of the ``face`` (bool (H, W)): its chromaticity (r, g = R, G / (R + G + B)), which
    shading leaves alone, within a few of the face's robust standard deviations, and not much
    darker. Small holes are closed. None where the face is too small to tell."""
    core = cv2.erode(face.astype(np.uint8), disc(0.15 * face_w)).astype(bool)
    if core.sum() < SKIN_MIN_PIXELS:
        return None
    rgb = image.astype(np.float32)
    total = rgb.sum(-1) + 1e-3
    chroma = rgb[..., :2] / total[..., None]  # [H, W, 2]
    ref = chroma[core]
    mid = np.median(ref, axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(ref - mid), axis=0), SKIN_MIN_SPREAD)
    near = (np.abs(chroma - mid) / spread).max(-1) <= SKIN_SIGMAS
    skin = near & (total >= SKIN_MIN_LIGHT * float(np.median(total[core])))
    return cv2.morphologyEx(skin.astype(np.uint8), cv2.MORPH_CLOSE,
                            disc(0.03 * face_w)).astype(bool)


def _neck_walk(cand: np.ndarray, chin_u: float, chin_v: float, face_w: float, face_h: float,
               percentile: float, reach: float) -> np.ndarray:
    """Head and neck labels (H, W) uint8 (0 elsewhere) of the candidate pixels ``cand`` (bool
    (H, W)) under the chin.

    Walking down from the chin through the run of ``cand`` under it (or the nearest within
    ``reach`` face widths beside it): the head while the run is clearly wider than the neck
    (the jaw, at most a quarter face below the chin), then the neck until the run widens into
    the shoulders or ends (at most 0.6 face heights below the chin; seen from the front, the
    neck runs on below the shoulders' outline: its last columns are kept for a few more rows).
    The neck's width is the ``percentile`` of the runs' widths in that range.
    """
    h = cand.shape[0]
    out = np.zeros(cand.shape, np.uint8)
    top = max(int(chin_v), 0)
    runs: list[tuple[int, int] | None] = [None] * h
    widths = np.zeros(h)
    for v in range(top, h):
        runs[v] = _run_at(cand[v], int(round(chin_u)), int(reach * face_w))
        if runs[v] is not None:
            widths[v] = runs[v][1] - runs[v][0]
    probe = widths[top:int(chin_v + 0.6 * face_h)]
    probe = probe[probe > 0]
    if len(probe) == 0:
        return out
    neck_w = float(np.percentile(probe, percentile))
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
            band = cand[v:end, last[0]:last[1]]
            out[v:end, last[0]:last[1]][band] = LABEL_NECK
            break
        seg = slice(run[0], run[1])
        out[v, seg][cand[v, seg]] = part
    return out


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
