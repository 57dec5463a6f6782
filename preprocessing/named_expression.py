"""A named, person-independent expression code from pose-free face-mesh landmarks.

Each frame's landmarks in the head frame (the head's pose removed, see
:func:`preprocessing.geometry.image_residuals`) give a few raw measures: the gap between the
inner lips, the height of each mouth corner, each eyelid gap, where each iris sits in its
eye, the height of the brows, the width of the cheeks, ... Every measure is taken relative
to the same person's neutral face and divided by that face's size, so the same motion gives
the same number on any face:

- lengths across the face are divided by the neutral face's inter-ocular distance (between
  the eye centres, each the midpoint of its corners); lengths up and down the face by the
  height from the eyes' midpoint down to the base of the nose (landmark 2). Two separate
  units, so a long face and a wide one agree too.
- the neutral value of each measure is estimated from the clip itself: the median of its
  frames for measures that move both ways about rest (mouth corners, brows, gaze, eyelids:
  blinks are brief), a low percentile (5 %) for those that only grow from rest (the gap
  between the lips: the mouth is closed at rest but open much of the time while talking).

The lips' heights (mouth corners, the lips' sides) are taken apart from the jaw: the share
of each that follows the gap between the lips over the clip is taken off it, so an open mouth
is not also read as a frown (see :meth:`NamedExpression.fit`).

A coefficient is the measure's change from neutral in one direction divided by its scale
(the change at weight 1, :data:`COEFFICIENTS`), clipped to [0, 1] like a blendshape weight.
Names follow ARKit's blendshapes (``Left`` is the subject's left); the space is identified
by :data:`EXP_SPACE`. Landmark numbers are those of MediaPipe's 478-point face mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EXP_SPACE = "gaussianhead-named-v1"
LOW_PERCENTILE = 5.0  # neutral of the measures that only grow from rest
MIN_POINTS = 468  # the face mesh without irises; gaze needs the 478-point mesh

# Landmarks (subject's right, subject's left) of MediaPipe's face mesh.
EYE_CORNERS = ((33, 133), (263, 362))  # (outer, inner) per eye
LIDS = ((159, 145), (386, 374))  # (upper, lower) per eye
IRIS = (468, 473)
MOUTH_CORNER = (61, 291)
UPPER_LIP = (37, 267)  # the top of the upper lip beside its centre
LOWER_LIP = (84, 314)  # the bottom of the lower lip beside its centre
BROW = ((70, 63, 105, 66, 107, 46, 53, 52, 65, 55), (300, 293, 334, 296, 336, 276, 283, 282,
                                                      295, 285))
BROW_INNER = (107, 336)
BROW_OUTER = (46, 276)
CHEEK = (205, 425)
LIP_INNER = (13, 14)  # (upper, lower) centre of the inner lip outline
LIP_OUTER = (0, 17)
NOSE_BRIDGE, NOSE_BASE, NOSE_TIP = 168, 2, 1
CHIN_FRONT = 199  # on the chin's front below the lower lip (not the outline, which slides)


@dataclass(frozen=True)
class Coefficient:
    """One coefficient: ``clip(sign * (measure - neutral) / scale, 0, 1)``."""

    name: str
    measure: str  # key of :func:`raw_measures`
    sign: float  # +1: the coefficient grows with the measure, -1: as it shrinks
    scale: float  # change of the measure at weight 1 (units of the measure, see below)


# Measures are in face units (x: inter-ocular distance, y: eye-to-nose-base height) unless
# named lid_ratio_* (eyelid gap as a fraction of its neutral gap, less one), iris_x_* (the
# iris's offset from the eye's centre in eye widths) or funnel (already in weights).
COEFFICIENTS = (
    Coefficient("jawOpen", "lip_gap", +1, 0.6),
    Coefficient("mouthLeft", "mouth_x", +1, 0.12),
    Coefficient("mouthRight", "mouth_x", -1, 0.12),
    Coefficient("mouthSmileLeft", "corner_y_left", +1, 0.15),
    Coefficient("mouthSmileRight", "corner_y_right", +1, 0.15),
    Coefficient("mouthFrownLeft", "corner_y_left", -1, 0.15),
    Coefficient("mouthFrownRight", "corner_y_right", -1, 0.15),
    Coefficient("mouthStretchLeft", "corner_x_left", +1, 0.12),
    Coefficient("mouthStretchRight", "corner_x_right", +1, 0.12),
    Coefficient("mouthPucker", "mouth_width", -1, 0.25),
    Coefficient("mouthFunnel", "funnel", +1, 1.0),
    Coefficient("mouthUpperUpLeft", "upper_lip_left", +1, 0.1),
    Coefficient("mouthUpperUpRight", "upper_lip_right", +1, 0.1),
    Coefficient("mouthLowerDownLeft", "lower_lip_left", -1, 0.2),
    Coefficient("mouthLowerDownRight", "lower_lip_right", -1, 0.2),
    Coefficient("eyeBlinkLeft", "lid_ratio_left", -1, 0.8),
    Coefficient("eyeBlinkRight", "lid_ratio_right", -1, 0.8),
    Coefficient("eyeWideLeft", "lid_ratio_left", +1, 0.5),
    Coefficient("eyeWideRight", "lid_ratio_right", +1, 0.5),
    # the left eye looks in (to the nose, -x) or out (+x); the right eye the other way
    Coefficient("eyeLookInLeft", "iris_x_left", -1, 0.2),
    Coefficient("eyeLookOutLeft", "iris_x_left", +1, 0.2),
    Coefficient("eyeLookUpLeft", "iris_y_left", +1, 0.1),
    Coefficient("eyeLookDownLeft", "iris_y_left", -1, 0.1),
    Coefficient("eyeLookInRight", "iris_x_right", +1, 0.2),
    Coefficient("eyeLookOutRight", "iris_x_right", -1, 0.2),
    Coefficient("eyeLookUpRight", "iris_y_right", +1, 0.1),
    Coefficient("eyeLookDownRight", "iris_y_right", -1, 0.1),
    Coefficient("browInnerUp", "brow_inner_y", +1, 0.12),
    Coefficient("browDownLeft", "brow_y_left", -1, 0.12),
    Coefficient("browDownRight", "brow_y_right", -1, 0.12),
    Coefficient("browOuterUpLeft", "brow_outer_y_left", +1, 0.15),
    Coefficient("browOuterUpRight", "brow_outer_y_right", +1, 0.15),
    Coefficient("cheekPuff", "cheek_width", +1, 0.12),
)
EXP_NAMES = tuple(c.name for c in COEFFICIENTS)
_SCALE = {c.name: c.scale for c in COEFFICIENTS}
# measures at rest at the bottom of their range: neutral = LOW_PERCENTILE, others the median
LOW_NEUTRAL = {"lip_gap"}
# the lips' heights, which follow the jaw (their share of the lip gap is taken off them)
JAW_COUPLED = tuple(f"{m}_{side}" for m in ("corner_y", "upper_lip", "lower_lip")
                    for side in ("left", "right"))


@dataclass(frozen=True)
class FaceUnits:
    """The neutral face's size: ``x`` the inter-ocular distance, ``y`` the height from the
    eyes' midpoint to the base of the nose (both in the landmarks' units)."""

    x: float
    y: float


def face_units(neutral: np.ndarray) -> FaceUnits:
    """Size of a neutral face [N, 3] (head frame: x to the subject's left, y up)."""
    centres = [neutral[list(c)].mean(0) for c in EYE_CORNERS]
    iod = float(np.linalg.norm(centres[1] - centres[0]))
    height = float(0.5 * (centres[0][1] + centres[1][1]) - neutral[NOSE_BASE, 1])
    return FaceUnits(iod, height)


def raw_measures(faces: np.ndarray, units: FaceUnits) -> dict[str, np.ndarray]:
    """The raw measures [F] of pose-free faces [F, N, 3] in face units (see
    :data:`COEFFICIENTS`); relative to the rigid upper face (the nose) where they are heights
    or lateral positions, so a small error of the head pose matters less."""
    x, y = faces[..., 0] / units.x, faces[..., 1] / units.y
    out = {}
    out["lip_gap"] = y[:, LIP_INNER[0]] - y[:, LIP_INNER[1]]
    mouth = list(MOUTH_CORNER) + list(LIP_OUTER)
    out["mouth_x"] = x[:, mouth].mean(1) - x[:, NOSE_TIP]
    out["mouth_width"] = x[:, MOUTH_CORNER[1]] - x[:, MOUTH_CORNER[0]]
    for k, side in enumerate(("right", "left")):
        outward = 1.0 if side == "left" else -1.0
        out[f"corner_y_{side}"] = y[:, MOUTH_CORNER[k]] - y[:, LIP_OUTER[0]]
        out[f"corner_x_{side}"] = outward * (x[:, MOUTH_CORNER[k]] - x[:, NOSE_TIP])
        out[f"upper_lip_{side}"] = y[:, UPPER_LIP[k]] - y[:, NOSE_BASE]
        out[f"lower_lip_{side}"] = y[:, LOWER_LIP[k]] - y[:, CHIN_FRONT]
        out[f"lid_gap_{side}"] = y[:, LIDS[k][0]] - y[:, LIDS[k][1]]
        outer, inner = EYE_CORNERS[k]
        width = np.abs(x[:, outer] - x[:, inner]) + 1e-9
        if faces.shape[1] > max(IRIS):
            centre_x = 0.5 * (x[:, outer] + x[:, inner])
            centre_y = 0.5 * (y[:, outer] + y[:, inner])
            out[f"iris_x_{side}"] = (x[:, IRIS[k]] - centre_x) / width
            out[f"iris_y_{side}"] = y[:, IRIS[k]] - centre_y
        else:
            out[f"iris_x_{side}"] = out[f"iris_y_{side}"] = np.zeros(len(faces))
        out[f"brow_y_{side}"] = y[:, list(BROW[k])].mean(1) - y[:, NOSE_BRIDGE]
        out[f"brow_outer_y_{side}"] = y[:, BROW_OUTER[k]] - y[:, NOSE_BRIDGE]
    out["brow_inner_y"] = y[:, list(BROW_INNER)].mean(1) - y[:, NOSE_BRIDGE]
    out["cheek_width"] = x[:, CHEEK[1]] - x[:, CHEEK[0]]
    return out


@dataclass(frozen=True)
class NamedExpression:
    """A clip's neutral face, how its lips follow its jaw, and the code of its frames."""

    units: FaceUnits
    neutral: dict[str, float]  # neutral value of every measure (face units)
    # measure -> its change per unit of lip gap in this clip (JAW_COUPLED), taken off it
    jaw_slope: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, faces: np.ndarray) -> NamedExpression:
        """Estimate the neutral face of a clip of pose-free faces [F, N, 3], and how much each
        of the lips' heights (:data:`JAW_COUPLED`) moves with the gap between the lips in it
        (least squares over the clip): the mouth corners and the lips' sides follow the jaw
        (on real faces a corner comes down about 0.4 of the gap's opening), which would read
        as a frown, or a lowered lip, at every open mouth. That share is taken off, so those
        coefficients measure the lips' motion apart from the jaw's (a smile held while the
        mouth opens keeps its part that does not follow the gap)."""
        if faces.ndim != 3 or faces.shape[1] < MIN_POINTS or len(faces) == 0:
            raise ValueError(f"expected faces [F, >={MIN_POINTS}, 3], got {faces.shape}")
        units = face_units(np.median(faces, axis=0))
        raw = raw_measures(faces, units)
        gap = raw["lip_gap"] - raw["lip_gap"].mean()
        var = float(gap @ gap)
        slope = {k: float((raw[k] - raw[k].mean()) @ gap / var) if var > 0 else 0.0
                 for k in JAW_COUPLED}
        gap_rest = float(np.percentile(raw["lip_gap"], LOW_PERCENTILE))
        raw = _decoupled(raw, slope, gap_rest)
        neutral = {k: float(np.percentile(v, LOW_PERCENTILE if k in LOW_NEUTRAL else 50.0))
                   for k, v in raw.items()}
        return cls(units, neutral, slope)

    def measures(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """Raw measures [F] of faces [F, N, 3] (the lips' heights apart from the jaw), with
        the derived ones (eyelid ratios, funnel)."""
        raw = _decoupled(raw_measures(faces, self.units), self.jaw_slope,
                         self.neutral["lip_gap"])
        return _with_derived(raw, self.neutral)

    def encode(self, faces: np.ndarray) -> np.ndarray:
        """The code [F, len(EXP_NAMES)] in [0, 1] of pose-free faces [F, N, 3]."""
        m = self.measures(faces)
        # derived measures (eyelid ratios, funnel) are 0 at rest by construction
        cols = [np.clip(c.sign * (m[c.measure] - self.neutral.get(c.measure, 0.0)) / c.scale,
                        0.0, 1.0) for c in COEFFICIENTS]
        return np.stack(cols, axis=1)

    def neutral_code(self) -> np.ndarray:
        """The code [len(EXP_NAMES)] of this clip's neutral face (zeros: the code is measured
        from it)."""
        return np.zeros(len(COEFFICIENTS))


def _decoupled(raw: dict[str, np.ndarray], slope: dict[str, float], gap_rest: float
               ) -> dict[str, np.ndarray]:
    """The measures with ``slope`` x the lip gap's opening from rest taken off."""
    out = dict(raw)
    opening = raw["lip_gap"] - gap_rest
    for k, s in slope.items():
        out[k] = raw[k] - s * opening
    return out


def _with_derived(raw: dict[str, np.ndarray], neutral: dict[str, float]
                  ) -> dict[str, np.ndarray]:
    """Add the measures built from others and the neutral face: each eyelid gap as a
    fraction of its neutral gap less one (``lid_ratio_*``: 0 at rest, -1 closed), and the
    funnel: lips apart while the mouth is narrower than at rest, the smaller of the two
    changes, each in its own coefficient's units (jawOpen's and mouthPucker's scales)."""
    out = dict(raw)
    for side in ("left", "right"):
        ref = max(abs(neutral[f"lid_gap_{side}"]), 1e-9)
        out[f"lid_ratio_{side}"] = raw[f"lid_gap_{side}"] / ref - 1.0
    opened = (raw["lip_gap"] - neutral["lip_gap"]) / _SCALE["jawOpen"]
    narrowed = (neutral["mouth_width"] - raw["mouth_width"]) / _SCALE["mouthPucker"]
    out["funnel"] = np.minimum(opened, narrowed)
    return out
