"""Occlusion: frames where something other than the person's head and body is in the mask or
in front of the face (a hand on the chin, a cup, a microphone). The avatar has no such thing,
so those frames would teach it one; they are dropped (or reported and kept).

Three cues, each measured as a fraction of the face's area (the face outline of the landmarks),
each of which sees what the others cannot:

- ``hand``: a hand found by the hand-landmark model whose region (the hull of its landmarks,
  widened by part of its palm length, since the landmarks lie on the bones) covers pixels of
  the person mask or of the face. The person segmentation counts a hand as the person, so
  the mask alone cannot tell it from a shoulder; and the face landmarks are no help: the face
  model puts a plausible chin under the fingers (its reprojection error does not move).
- ``foreign``: the share of the face, a little inside its outline, that the person
  segmentation calls background. A face is always segmented as the person (under 1 % of
  it is not, on webcam footage), so a larger share is an object in front of it that the
  segmentation leaves out of the person, or face landmarks that are off the face (a frame
  filled in across a gap that shows no face).
- ``silhouette``: person pixels beside the face, between the eyes and the mouth, further from
  the face outline than ears and hair reach (a microphone, a phone at the ear, an arm). The
  segmentation counts an object held against the person as the person, so it shows as an
  outgrowth of the head's silhouette. Pixels that stand on the body (nearly all the pixels
  under them, down to the frame's bottom edge, are the person) are the shoulders or hair lying
  on them, not an outgrowth: a head that looks down brings the band between the eyes and the
  mouth down to the shoulders, most of all on a crop that ends a little below the collar. Its
  median over the clip is subtracted, so that big hair or a turned head seen in the whole clip
  is not taken for an object.

Not seen: an object in front of the face that the segmentation counts as the person and that
does not stick out beside the face (a mug held in front of the mouth, on a constructed clip),
nor one held beside the face with the body right under it (in front of the shoulders).

Frames whose largest cue reaches the threshold are flagged. A hand that moves fast is blurred
and missed by the detector in single frames at the ends and in the middle of the occlusion, so
short gaps between flagged frames are closed and every flagged run is widened by a few frames.
"""

from __future__ import annotations

import cv2
import numpy as np

from preprocessing.masks import disc
from preprocessing.options import PreprocessOptions

HAND_MARGIN = 0.3  # the hand region reaches this far (in palm lengths) beyond its landmarks
HAND_WRIST, HAND_MIDDLE_BASE = 0, 9  # landmarks spanning the palm
FACE_INSET = 0.03  # the foreign cue looks this far (in face sizes) inside the face outline
SIDE_REACH = 0.4  # ears and hair reach this far beside the face outline (in eye distances)
# a person pixel with at least this share of person pixels under it (down to the frame's bottom
# edge) stands on the body
SUPPORTED = 0.9
CLOSE_GAP = 5  # runs of at most this many unflagged frames between flagged ones are flagged
PAD = 3  # frames flagged on each side of a flagged run (a kept hand costs more than a lost frame)
CUES = {
    "hand": "a hand (hand-landmark model) covers this fraction of the face's area inside the "
            "person mask or the face",
    "foreign": "the person segmentation leaves out this fraction of the face (an object in "
               "front of it, or landmarks off the face)",
    "silhouette": "person pixels beside the face between the eyes and the mouth, beyond the "
                  "reach of ears and hair and not standing on the body (shoulders), minus the "
                  "clip's median of the same",
}
BASELINED = ("silhouette",)  # cues whose clip median is subtracted before flagging


def hand_region(hands: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) image of the hands [K, 21, 2+] (pixels; NaN rows are no hand)."""
    out = np.zeros(shape, np.uint8)
    for hand in hands:
        pts = hand[:, :2]
        if not np.isfinite(pts).all():
            continue
        palm = float(np.linalg.norm(pts[HAND_WRIST] - pts[HAND_MIDDLE_BASE]))
        hull = cv2.convexHull(np.round((pts - 0.5) * 16).astype(np.int32))
        one = np.zeros(shape, np.uint8)
        cv2.fillPoly(one, [hull], 1, lineType=cv2.LINE_8, shift=4)
        out |= cv2.dilate(one, disc(HAND_MARGIN * palm))
    return out.astype(bool)


def side_band(eyes: np.ndarray, mouth: np.ndarray, shape: tuple[int, int]
              ) -> tuple[np.ndarray, float]:
    """Pixels (bool (H, W)) between the line through the outer eye corners and the parallel
    line through the mouth (in the face's own orientation, so a tilted head tilts the band),
    and the eye distance in pixels. eyes [2, 2]: outer eye corners; mouth [M, 2]: lip points.
    """
    across = eyes[1] - eyes[0]
    dist = float(np.linalg.norm(across))
    if dist == 0 or len(mouth) == 0:
        return np.zeros(shape, bool), dist
    down = np.array([-across[1], across[0]]) / dist
    down *= np.sign((mouth.mean(0) - eyes.mean(0)) @ down) or 1.0
    v, u = np.mgrid[:shape[0], :shape[1]] + 0.5
    depth = (u - eyes[:, 0].mean()) * down[0] + (v - eyes[:, 1].mean()) * down[1]
    return (depth >= 0) & (depth <= float(((mouth - eyes.mean(0)) @ down).mean())), dist


def on_the_body(person: np.ndarray, share: float = SUPPORTED) -> np.ndarray:
    """The pixels (bool (H, W)) of ``person`` (bool (H, W)) that stand on the body: at least
    ``share`` of the pixels from each down to the frame's bottom edge are person pixels
    (shoulders, hair lying on them), unlike something held out beside the face with the
    background under it."""
    h = person.shape[0]
    under = np.cumsum(person[::-1].astype(np.int32), axis=0)[::-1]  # person pixels from v down
    return person & (under >= share * (h - np.arange(h))[:, None])


def occlusion_cues(prob: np.ndarray, face: np.ndarray, hand: np.ndarray,
                   band: np.ndarray | None = None, eye_distance: float = 0.0
                   ) -> dict[str, float]:
    """The cues of one frame, as fractions of the face's area.

    prob (H, W): person probability of the segmentation; face (H, W) bool: the filled face
    outline; hand (H, W) bool: :func:`hand_region`; band (H, W) bool and eye_distance
    (pixels): :func:`side_band` (without them the silhouette cue is 0). An empty face gives
    zeros.
    """
    area = int(face.sum())
    if area == 0:
        return dict.fromkeys(CUES, 0.0)
    person = prob > 0.5
    inset = FACE_INSET * np.sqrt(area)
    core = cv2.erode(face.astype(np.uint8), disc(inset)).astype(bool)
    if not core.any():
        core = face
    beside = 0.0
    if band is not None and eye_distance > 0:
        far = cv2.distanceTransform((~face).astype(np.uint8), cv2.DIST_L2, 5)
        outgrowth = person & band & (far > SIDE_REACH * eye_distance) & ~on_the_body(person)
        beside = float(outgrowth.sum() / area)
    return {"hand": float((hand & (person | face)).sum() / area),
            "foreign": float((core & ~person).sum() / core.sum()),
            "silhouette": beside}


def flag_frames(frames: np.ndarray, scores: np.ndarray, threshold: float,
                close_gap: int = CLOSE_GAP, pad: int = PAD) -> np.ndarray:
    """Which of ``frames`` (sorted source indices [K]) are occluded, from their scores [K].

    A frame is flagged when its score reaches ``threshold``; then the runs of at most
    ``close_gap`` unflagged frames between two flagged ones are flagged, and ``pad`` frames on
    each side of every flagged run (neighbours by source index, among ``frames``). Returns
    bool [K].
    """
    frames = np.asarray(frames)
    hit = np.asarray(scores) >= threshold
    if not hit.any():
        return hit
    pos = frames[hit]
    out = hit.copy()
    # close the gaps: frames between two flagged ones at most close_gap + 1 apart
    for a, b in zip(pos[:-1], pos[1:]):
        if 1 < b - a <= close_gap + 1:
            out |= (frames > a) & (frames < b)
    pos = frames[out]
    near = np.abs(frames[:, None] - pos[None, :]).min(1) <= pad
    return out | near


def runs(frames: list[int] | np.ndarray) -> list[list[int]]:
    """Sorted frame indices -> [[first, last], ...] of consecutive runs."""
    out: list[list[int]] = []
    for i in map(int, frames):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def describe_runs(frames: list[int] | np.ndarray, n: int = 6) -> str:
    """'3-9, 12, 20-31' for at most n runs, then 'and K more runs'."""
    r = runs(frames)
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in r[:n])
    return text + (f" and {len(r) - n} more runs" if len(r) > n else "")


def subtract_baselines(cues: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    """The cues of every frame with the clip's median subtracted from the :data:`BASELINED`
    ones (floored at 0)."""
    if not cues:
        return cues
    base = {k: float(np.median([c[k] for c in cues.values()])) for k in BASELINED}
    return {i: {k: max(v - base.get(k, 0.0), 0.0) for k, v in c.items()}
            for i, c in cues.items()}


def mark_occluded(status: np.ndarray, frames: np.ndarray, cues: dict[int, dict[str, float]],
                  opts: PreprocessOptions) -> dict:
    """Flag the occluded ones of ``frames`` (source indices) from their cues; with
    --occlusion drop mark them occluded in ``status``. Returns the occlusion part of the
    report."""
    cues = subtract_baselines(cues)
    scores = np.array([max(cues[int(i)].values()) for i in frames])
    flagged = frames[flag_frames(frames, scores, opts.occlusion_threshold)]
    if opts.occlusion == "drop":
        status[flagged] = "occluded"
    detail = []
    for i in flagged:
        c = cues[int(i)]
        cue = max(c, key=c.get) if max(c.values()) >= opts.occlusion_threshold else "neighbour"
        detail.append({"source_frame": int(i), "cue": cue,
                       **{k: round(v, 4) for k, v in c.items()}})
    return {
        "mode": opts.occlusion,
        "threshold": opts.occlusion_threshold,
        "cues": CUES,
        "flagging": f"a frame is flagged when a cue reaches the threshold; gaps of up to "
                    f"{CLOSE_GAP} frames between flagged frames are closed and "
                    f"{PAD} frames on each side of every run flagged too (cue "
                    "'neighbour')",
        "flagged": [int(i) for i in flagged],
        "flagged_runs": runs(flagged),
        "frames": detail,
        "measured": {"source_frames": frames.tolist(),
                     **{k: [round(cues[int(i)][k], 4) for i in frames] for k in CUES}},
    }
