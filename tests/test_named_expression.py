"""The named expression code (preprocessing/named_expression.py) on landmark sets whose motion
is known: each coefficient answers its own motion, in its documented scale, the same on a face
of other proportions, and the neutral face is found from the clip."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing import named_expression as ne

N_POINTS = 478
SCALE = {c.name: c.scale for c in ne.COEFFICIENTS}


def _face(seed: int = 0, stretch: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """A neutral 478-point face [N, 3] in the head frame (x to the subject's left, y up):
    random points with the named landmarks where a face has them, scaled by ``stretch``."""
    rng = np.random.default_rng(seed)
    f = np.column_stack([rng.uniform(-0.06, 0.06, N_POINTS), rng.uniform(-0.08, 0.06, N_POINTS),
                         np.full(N_POINTS, 0.1)])
    put = {33: (-0.045, 0.02), 133: (-0.015, 0.02), 263: (0.045, 0.02), 362: (0.015, 0.02),
           159: (-0.03, 0.025), 145: (-0.03, 0.015), 386: (0.03, 0.025), 374: (0.03, 0.015),
           468: (-0.03, 0.02), 473: (0.03, 0.02), 2: (0.0, -0.025), 1: (0.0, -0.02),
           168: (0.0, 0.02), 13: (0.0, -0.045), 14: (0.0, -0.046), 0: (0.0, -0.04),
           17: (0.0, -0.058), 61: (-0.025, -0.048), 291: (0.025, -0.048), 152: (0.0, -0.09),
           107: (-0.015, 0.04), 336: (0.015, 0.04), 46: (-0.05, 0.033), 276: (0.05, 0.033),
           37: (-0.007, -0.04), 267: (0.007, -0.04), 84: (-0.008, -0.058), 314: (0.008, -0.058),
           205: (-0.04, -0.025), 425: (0.04, -0.025)}
    for k, xy in put.items():
        f[k, :2] = xy
    f[:, :2] *= stretch
    return f


def _clip(face: np.ndarray, n: int = 60) -> np.ndarray:
    """A clip [n, N, 3] of the neutral face with a little landmark noise."""
    rng = np.random.default_rng(1)
    return face + 1e-5 * rng.standard_normal((n, *face.shape))


def _code(clip: np.ndarray, frame: np.ndarray) -> dict[str, float]:
    model = ne.NamedExpression.fit(clip)
    return dict(zip(ne.EXP_NAMES, model.encode(frame[None])[0]))


@pytest.mark.parametrize("stretch", [(1.0, 1.0), (1.25, 0.85)])
def test_each_motion_moves_its_coefficient_by_its_scale(stretch):
    face = _face(stretch=stretch)
    units = ne.face_units(face)
    clip = _clip(face)
    sx, sy = units.x, units.y

    def moved(**shifts):
        f = face.copy()
        for key, (dx, dy) in shifts.items():
            f[int(key[1:]), :2] += (dx * sx, dy * sy)
        return f

    # the lower inner lip down by half of jawOpen's scale
    code = _code(clip, moved(p14=(0, -0.5 * SCALE["jawOpen"])))
    assert code["jawOpen"] == pytest.approx(0.5, abs=0.01)
    # the subject's left mouth corner up by 0.15: mouthSmileLeft 1, the right one untouched
    code = _code(clip, moved(p291=(0, 0.15)))
    assert code["mouthSmileLeft"] == pytest.approx(1.0, abs=0.01)
    assert code["mouthSmileRight"] < 0.01 and code["mouthFrownLeft"] < 0.01
    # the right corner down by half a frown's scale
    half = 0.5 * SCALE["mouthFrownRight"]
    assert _code(clip, moved(p61=(0, -half)))["mouthFrownRight"] == pytest.approx(0.5, abs=0.01)
    # the right upper lid half way down: eyeBlinkRight 0.5 / 0.8
    gap = face[159, 1] - face[145, 1]
    f = face.copy()
    f[159, 1] -= 0.5 * gap
    code = _code(clip, f)
    assert code["eyeBlinkRight"] == pytest.approx(0.5 / 0.8, abs=0.01)
    assert code["eyeBlinkLeft"] < 0.01
    # both inner brows up by 0.06 face heights: half of browInnerUp
    assert _code(clip, moved(p107=(0, 0.06), p336=(0, 0.06)))["browInnerUp"] == pytest.approx(
        0.5, abs=0.01)
    # the left iris towards the subject's left by half the scale in eye widths: the left eye
    # looks out
    width = abs(face[263, 0] - face[362, 0])
    f = face.copy()
    f[473, 0] += 0.5 * SCALE["eyeLookOutLeft"] * width
    code = _code(clip, f)
    assert code["eyeLookOutLeft"] == pytest.approx(0.5, abs=0.01)
    assert code["eyeLookInLeft"] < 0.01 and code["eyeLookInRight"] < 0.01
    # corners in by 0.125 inter-ocular distances in all (pucker 0.5)
    assert _code(clip, moved(p61=(0.0625, 0), p291=(-0.0625, 0)))["mouthPucker"] == (
        pytest.approx(0.5, abs=0.01))
    # the neutral face itself gives zeros
    assert max(_code(clip, face).values()) < 0.01


def test_the_same_motion_gives_the_same_code_on_a_face_of_other_proportions():
    """A motion scaled with the face (a longer, narrower face moves its jaw further in
    metres) gives the same code."""
    motion = np.zeros((N_POINTS, 3))
    motion[:, :2] = 0.004 * np.random.default_rng(3).standard_normal((N_POINTS, 2))
    codes = []
    for stretch in [(1.0, 1.0), (0.8, 1.2)]:
        face = _face(seed=2, stretch=stretch)
        frames = face + np.linspace(0, 1, 5)[:, None, None] * motion * (*stretch, 1.0)
        codes.append(ne.NamedExpression.fit(_clip(face)).encode(frames))
    np.testing.assert_allclose(codes[0], codes[1], atol=0.02)
    assert codes[0].max() > 0.2  # the motion moved some coefficients


def test_the_neutral_face_is_found_from_a_talking_clip():
    """A clip in which the mouth is open in most frames: the lips' neutral (a low
    percentile) is the closed mouth; blinks in a few frames do not move the eyes' neutral."""
    face = _face()
    units = ne.face_units(face)
    clip = np.repeat(face[None], 100, axis=0)
    opening = np.r_[np.zeros(10), np.linspace(0.05, 0.3, 90)]  # face heights
    clip[:, 14, 1] -= opening * units.y
    clip[5:8, 159, 1] = clip[5:8, 145, 1]  # a blink
    model = ne.NamedExpression.fit(clip)
    code = model.encode(clip)
    jaw = code[:, ne.EXP_NAMES.index("jawOpen")]
    np.testing.assert_allclose(jaw, np.clip(opening / SCALE["jawOpen"], 0, 1), atol=1e-6)
    blink = code[:, ne.EXP_NAMES.index("eyeBlinkRight")]
    assert blink[5:8].min() == 1.0 and blink[8:].max() == 0.0
    assert model.neutral_code().shape == (len(ne.EXP_NAMES),)


def test_names_are_unique_and_every_coefficient_has_a_measure():
    assert len(set(ne.EXP_NAMES)) == len(ne.EXP_NAMES) == len(ne.COEFFICIENTS)
    face = _face()
    model = ne.NamedExpression.fit(_clip(face))
    measures = model.measures(face[None])
    assert all(c.measure in measures and c.scale > 0 for c in ne.COEFFICIENTS)
    with pytest.raises(ValueError, match="faces"):
        ne.NamedExpression.fit(face[None, :100])


def test_the_lips_following_the_jaw_are_not_a_frown():
    """On real faces the mouth corners and the lips' sides come down with the jaw (about 0.4
    of the lips' gap): an open mouth is jawOpen, not a frown; a smile apart from the jaw
    still reads as a smile."""
    face = _face()
    units = ne.face_units(face)
    n = 80
    clip = np.repeat(face[None], n, axis=0)
    rng = np.random.default_rng(5)
    opening = np.clip(rng.uniform(-0.1, 0.4, n), 0, None)  # face heights
    smile = np.zeros(n)
    smile[::10] = 0.075  # half a smile in every tenth frame
    clip[:, 14, 1] -= opening * units.y
    for k in (61, 291):
        clip[:, k, 1] += (-0.4 * opening + smile) * units.y
    code = ne.NamedExpression.fit(clip).encode(clip)
    col = {name: code[:, k] for k, name in enumerate(ne.EXP_NAMES)}
    np.testing.assert_allclose(col["jawOpen"], opening / SCALE["jawOpen"], atol=1e-6)
    assert col["mouthFrownLeft"].max() < 0.05 and col["mouthFrownRight"].max() < 0.05
    np.testing.assert_allclose(col["mouthSmileLeft"][::10], 0.5, atol=0.06)
    assert np.delete(col["mouthSmileLeft"], np.s_[::10]).max() < 0.06
