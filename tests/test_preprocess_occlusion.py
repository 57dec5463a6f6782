"""Unit tests of the occlusion handling: the cues, the side band, flagging and marking the
occluded frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from preprocessing import masks
from preprocessing import occlusion as occ
from preprocessing.occlusion import mark_occluded
from preprocessing.options import PreprocessOptions
from tests.preprocess_helpers import figure, looking_down

# ----------------------------------------------------------------------------- occlusion


def _hand(wrist=(64.0, 100.0)) -> np.ndarray:
    """21 hand landmarks [21, 3] (MediaPipe order: wrist, then 4 joints per finger, thumb
    first) of an open hand pointing up, fingers 5 px apart, joints 6 px apart."""
    pts = np.zeros((21, 3))
    pts[0, :2] = wrist
    for f in range(5):
        for k in range(1, 5):
            pts[1 + 4 * f + k - 1, :2] = (wrist[0] + (f - 2) * 5.0, wrist[1] - 5.0 - 6.0 * k)
    return pts


def _cues(lab, points, oval, **kw):
    prob = kw.pop("prob", (lab > 0).astype(np.float32))
    face = masks.fill_polygon(points[oval], lab.shape)
    hand = occ.hand_region(kw.pop("hands", np.full((1, 21, 3), np.nan)), lab.shape)
    band, dist = occ.side_band(np.array([[50.0, 45.0], [79.0, 45.0]]),
                               np.array([[56.0, 65.0], [73.0, 65.0], [64.5, 62.0], [64.5, 68.0]]),
                               lab.shape)
    return occ.occlusion_cues(prob, face, hand, band, dist)


def test_a_hand_over_the_chin_is_an_occlusion_and_one_off_the_person_is_not():
    lab, points, oval, _, _ = figure()
    clean = _cues(lab, points, oval)
    assert clean == {"hand": 0.0, "foreign": 0.0, "silhouette": 0.0}
    on_chin = _cues(lab, points, oval, hands=_hand()[None])
    assert on_chin["hand"] > 0.2 and on_chin["foreign"] == 0.0
    # the same hand over the background (top right corner) or outside the image: no occlusion
    assert _cues(lab, points, oval, hands=_hand((118.0, 40.0))[None])["hand"] == 0.0
    assert _cues(lab, points, oval, hands=_hand((400.0, 100.0))[None])["hand"] == 0.0
    # the region covers the fingers' width beyond the landmarks: the middle of the hull and a
    # pixel 2 px beside the outermost finger are inside, 8 px beside it is not
    region = occ.hand_region(_hand()[None], lab.shape)
    assert region[80, 64] and region[80, 55] and not region[80, 46]


def test_the_face_left_out_of_the_person_and_an_outgrowth_beside_it_are_occlusions():
    lab, points, oval, _, _ = figure()
    prob = (lab > 0).astype(np.float32)
    prob[40:60, 55:75] = 0.0  # the segmentation says "not the person" on the face
    cues = _cues(lab, points, oval, prob=prob)
    assert 0.15 < cues["foreign"] < 0.35 and cues["hand"] == 0.0
    # a bar held beside the mouth (a microphone): person pixels far beside the face
    bar = lab.copy()
    bar[58:64, 64:] = masks.LABEL_HEAD
    assert _cues(bar, points, oval)["silhouette"] > 0.05
    # ears and hair close to the face outline are not: the head drawn wider by 5 px
    wide = lab.copy()
    cv2.ellipse(wide, (64, 48), (31, 32), 0, 0, 360, masks.LABEL_HEAD, -1)
    assert _cues(wide, points, oval)["silhouette"] == 0.0
    # nor is the torso below the mouth, however wide
    assert _cues(lab, points, oval)["silhouette"] == 0.0


def _clip_cues(pitch: float, hands=None, lab_edit=None) -> dict[str, float]:
    lab, oval, eyes, mouth = looking_down(pitch)
    if lab_edit is not None:
        lab_edit(lab, mouth)
    face = masks.fill_polygon(oval, lab.shape)
    band, dist = occ.side_band(eyes, mouth, lab.shape)
    hand = occ.hand_region(np.full((1, 21, 3), np.nan) if hands is None else hands, lab.shape)
    return occ.occlusion_cues((lab > 0).astype(np.float32), face, hand, band, dist)


def test_looking_down_is_not_an_occlusion():
    """A near-frontal clip on a tight crop in which the head pitches down to 35 degrees for a
    few frames (chin towards the collar, lids may close: nothing covers the face): the band
    between the eyes and the mouth comes down to the shoulders, which are not an outgrowth."""
    pitch = np.concatenate([np.zeros(10), np.linspace(0, 35, 8), np.full(6, 35.0),
                            np.linspace(35, 0, 8), np.zeros(10)])
    frames = np.arange(len(pitch))
    cues = {int(i): _clip_cues(p) for i, p in zip(frames, pitch)}
    status = np.array(["ok"] * len(frames), dtype=object)
    rep = mark_occluded(status, frames, cues, PreprocessOptions())
    assert rep["flagged"] == [] and (status == "ok").all()
    assert max(max(c.values()) for c in cues.values()) < 0.01
    # the shoulders are in the band at 35 degrees: that is what the silhouette cue must not count
    lab, _, eyes, mouth = looking_down(35.0)
    band, _ = occ.side_band(eyes, mouth, lab.shape)
    assert (band & (lab == masks.LABEL_TORSO)).sum() > 100


def test_looking_down_keeps_hands_and_objects_occlusions():
    # a hand over the lowered chin
    _, oval, _, _ = looking_down(35.0)
    chin = oval[:, 1].max()
    assert _clip_cues(35.0, hands=_hand((64.0, chin + 20))[None])["hand"] > 0.2

    # a microphone beside the mouth of a head looking down a little, with background under it
    def mic(lab, mouth):
        v = int(round(mouth[:, 1].mean()))
        lab[v - 3:v + 3, 64:] = masks.LABEL_HEAD

    assert _clip_cues(15.0)["silhouette"] == 0.0
    assert _clip_cues(15.0, lab_edit=mic)["silhouette"] > 0.05


def test_what_stands_on_the_body():
    lab = figure()[0]
    person = lab > 0
    body = occ.on_the_body(person)
    assert body[120, 64] and body[100, 64]  # the torso, and the neck standing on it
    assert not body[48, 40]  # the side of the head: background under the cheek
    assert not body[5, 5]  # the background
    bar = person.copy()
    bar[58:64, 64:] = True
    assert not occ.on_the_body(bar)[60, 120]  # an object held out: background under it


def test_the_side_band_turns_with_the_head():
    shape = (128, 128)
    eyes = np.array([[50.0, 45.0], [79.0, 45.0]])
    mouth = np.array([[56.0, 65.0], [73.0, 65.0]])
    band, dist = occ.side_band(eyes, mouth, shape)
    assert dist == pytest.approx(29.0)
    assert band[50, 10] and band[64, 120] and not band[40, 64] and not band[70, 64]
    # a head rolled by 90 degrees (eyes one above the other): the band runs vertically
    rolled, _ = occ.side_band(np.array([[45.0, 79.0], [45.0, 50.0]]),
                              np.array([[65.0, 73.0], [65.0, 56.0]]), shape)
    assert rolled[10, 50] and rolled[120, 64] and not rolled[64, 40] and not rolled[64, 70]


def test_flagging_closes_short_gaps_and_pads_the_runs():
    frames = np.array([i for i in range(30) if i != 12])  # frame 12 was dropped already
    scores = np.zeros(len(frames))
    for i in (5, 6, 9, 20):
        scores[frames == i] = 0.5
    scores[frames == 25] = 0.029  # under the threshold
    flagged = occ.flag_frames(frames, scores, 0.03, close_gap=5, pad=2)
    assert frames[flagged].tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22]
    assert not occ.flag_frames(frames, np.zeros(len(frames)), 0.03).any()
    assert occ.runs([3, 4, 5, 9, 11, 12]) == [[3, 5], [9, 9], [11, 12]]
    assert occ.describe_runs([3, 4, 5, 9]) == "3-5, 9"


def test_the_silhouette_cue_is_measured_against_the_clip():
    cues = {i: {"hand": 0.0, "foreign": 0.0, "silhouette": v}
            for i, v in enumerate([0.1, 0.1, 0.12, 0.3, 0.0])}
    cues[4]["hand"] = 0.2
    out = occ.subtract_baselines(cues)
    assert [round(c["silhouette"], 6) for c in out.values()] == [0.0, 0.0, 0.02, 0.2, 0.0]
    assert out[4]["hand"] == 0.2


def test_occluded_frames_are_dropped_or_kept_and_reported():
    frames = np.arange(20)
    cues = {i: {"hand": 0.5 if 8 <= i <= 10 else 0.0, "foreign": 0.0, "silhouette": 0.0}
            for i in frames}
    for mode, expect in (("drop", "occluded"), ("keep", "ok")):
        status = np.array(["ok"] * 20, dtype=object)
        rep = mark_occluded(status, frames, cues, PreprocessOptions(occlusion=mode))
        a, b = 8 - occ.PAD, 10 + occ.PAD
        assert rep["flagged_runs"] == [[a, b]] and rep["mode"] == mode
        assert (status[a:b + 1] == expect).all() and (status[:a] == "ok").all()
        assert (status[b + 1:] == "ok").all()
        assert [f["cue"] for f in rep["frames"]] == ["neighbour"] * occ.PAD + ["hand"] * 3 + [
            "neighbour"] * occ.PAD
        assert len(rep["measured"]["hand"]) == 20
