"""Unit tests of the preprocessing's images: person masks, parsing, region maps and edge
decontamination."""

from __future__ import annotations

import cv2
import numpy as np

from preprocessing import geometry as geo
from preprocessing import masks
from preprocessing.frame_writer import jpeg_params
from preprocessing.matting import decontaminate, local_mean
from tests.preprocess_helpers import CLOTHING_RGB, SKIN_RGB, collar_crop, figure
from utils.regions import decode_regions, encode_regions

# ----------------------------------------------------------------------------- masks


def test_parsing_splits_head_neck_and_torso():
    lab, points, oval, forehead, chin = figure()
    mask = (lab > 0).astype(np.float32)
    out = masks.parse(mask, points, oval, chin, forehead)
    for k in (masks.LABEL_HEAD, masks.LABEL_NECK, masks.LABEL_TORSO):
        a, b = out == k, lab == k
        assert (a & b).sum() / (a | b).sum() > 0.8, k
    assert (out[mask == 0] == masks.LABEL_BG).all()


def test_parsing_on_a_tight_crop_takes_the_clothing_for_torso_and_the_skin_for_neck():
    """The frame ends a little below the collar and the sweater fills it from side to side
    right under the jaw: the silhouette shows no neck, the colours do."""
    lab, img, points, oval, forehead, chin = collar_crop()
    mask = (lab > 0).astype(np.float32)
    out = masks.parse(mask, points, oval, chin, forehead, image=img)
    clothing = lab == masks.LABEL_TORSO
    rows = np.arange(lab.shape[0])[:, None]
    neck_skin = (lab == masks.LABEL_NECK) & (rows > points[chin, 1])  # between jaw and collar
    assert (out[clothing] == masks.LABEL_TORSO).mean() > 0.97
    assert (out[neck_skin] == masks.LABEL_NECK).mean() > 0.9
    head = lab == masks.LABEL_HEAD
    assert ((out == masks.LABEL_HEAD) & head).sum() / ((out == masks.LABEL_HEAD) | head).sum() > 0.9
    assert (out[mask == 0] == masks.LABEL_BG).all()


def test_parsing_keeps_a_beard_under_the_chin_in_the_head():
    lab, img, points, oval, forehead, chin = collar_crop(beard=True)
    out = masks.parse((lab > 0).astype(np.float32), points, oval, chin, forehead, image=img)
    rows = np.arange(lab.shape[0])[:, None]
    beard = (lab == masks.LABEL_HEAD) & (rows >= 80)
    assert (out[beard] == masks.LABEL_HEAD).mean() > 0.8
    assert (out[lab == masks.LABEL_TORSO] == masks.LABEL_TORSO).mean() > 0.95
    below_beard = (lab == masks.LABEL_NECK) & (rows >= 90)
    assert (out[below_beard] == masks.LABEL_NECK).mean() > 0.8


def test_skin_is_the_face_colour_in_light_or_shade():
    lab, img, points, oval, _, _ = collar_crop()
    face = masks.fill_polygon(points[oval], lab.shape)
    patches = np.zeros((4, 8, 3), np.float64)
    patches[0] = SKIN_RGB
    patches[1] = np.array(SKIN_RGB) * 0.6  # in the jaw's shadow
    patches[2] = np.array(SKIN_RGB) * 0.2  # as dark as dark hair
    patches[3] = CLOTHING_RGB
    test = img.copy()
    test[:4, :8] = patches.astype(np.uint8)
    skin = masks.skin_like(test, face, float(np.ptp(points[oval, 0])))
    assert skin[0, 2:6].all() and skin[1, 2:6].all()
    assert not skin[2, 2:6].any() and not skin[3, 2:6].any()
    assert skin[face].mean() > 0.99 and not skin[lab == masks.LABEL_TORSO].any()
    tiny = np.zeros(lab.shape, bool)
    tiny[60:63, 60:63] = True
    assert masks.skin_like(img, tiny, 3.0) is None


def test_clean_mask_keeps_the_person_and_drops_other_blobs():
    lab, points, oval, _, _ = figure()
    prob = (lab > 0).astype(np.float32) * 0.9
    prob[5:20, 5:20] = 0.95  # something else the segmentation found
    face = masks.fill_polygon(points[oval], lab.shape)
    out = masks.clean_mask(prob, face)
    assert out[5:20, 5:20].max() == 0
    np.testing.assert_allclose(out[lab == masks.LABEL_TORSO], 0.9)
    assert (out[face] == 1.0).all()


# ----------------------------------------------------------------------------- matting


def _screen_frame(size: int = 128, width: float = 8.0, noise: float = 2.0):
    """A skin-coloured disc with a soft edge (``width`` px ramp) in front of a saturated blue
    screen: the frame I = a F + (1 - a) B as uint8, alpha quantised as the mask PNG stores it,
    and F."""
    v, u = np.mgrid[:size, :size] + 0.5
    alpha = np.clip((0.3 * size - np.hypot(u - size / 2, v - size / 2)) / width + 0.5, 0, 1)
    alpha = np.rint(alpha * 255) / 255
    fg, bg = np.array([200.0, 150.0, 120.0]), np.array([20.0, 40.0, 230.0])
    rng = np.random.default_rng(0)
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg + rng.normal(0, noise,
                                                                           (size, size, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), alpha, fg


def _blue_cast(img: np.ndarray, alpha: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Blue minus the mean of red and green of the frame composited onto white, minus the same
    of the ideal composite (the pure foreground colour over white), at the soft pixels."""
    soft = (alpha > 0) & (alpha < 1)
    a = alpha[soft][:, None]
    comp = a * img[soft].astype(np.float64) + (1 - a) * 255.0
    ideal = a * fg + (1 - a) * 255.0
    return (comp[:, 2] - comp[:, :2].mean(1)) - (ideal[:, 2] - ideal[:, :2].mean(1))


def test_decontamination_removes_the_screen_colour_from_the_edges():
    img, alpha, fg = _screen_frame()
    before = _blue_cast(img, alpha, fg)
    out = decontaminate(img, alpha)
    # what ori_imgs stores: a JPEG at the default quality
    jpeg = cv2.imdecode(cv2.imencode(".jpg", out[..., ::-1], jpeg_params(95))[1],
                        cv2.IMREAD_COLOR)[..., ::-1]
    after, after_jpeg = _blue_cast(out, alpha, fg), _blue_cast(jpeg, alpha, fg)
    print(f"blue cast at the soft edge, composited on white: mean {before.mean():.1f} (max "
          f"{before.max():.1f}) before, {after.mean():.2f} ({np.abs(after).max():.1f}) after, "
          f"{after_jpeg.mean():.2f} ({np.abs(after_jpeg).max():.1f}) after JPEG")
    assert before.mean() > 30
    assert abs(after.mean()) < 1.0 and np.abs(after).max() < 15
    assert abs(after_jpeg.mean()) < 1.0
    # only the soft pixels change
    hard = (alpha == 0) | (alpha == 1)
    np.testing.assert_array_equal(out[hard], img[hard])
    # no clear background anywhere: nothing to remove
    np.testing.assert_array_equal(decontaminate(img, np.maximum(alpha, 0.5)), img)


def test_local_mean_reaches_as_far_as_the_nearest_known_pixels():
    img = np.zeros((64, 96, 3), np.float32)
    img[:, :4] = (10.0, 20.0, 30.0)
    img[:, 4:] = 255.0
    known = np.zeros((64, 96), bool)
    known[:, :4] = True
    out = local_mean(img, known)
    np.testing.assert_allclose(out[:, 90], np.tile([10.0, 20.0, 30.0], (64, 1)), atol=1e-3)


# ----------------------------------------------------------------------------- regions


def _ring(centre, rx, ry, n=16):
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([centre[0] + rx * np.cos(ang), centre[1] + ry * np.sin(ang)])


def _feature_layout(eye_open: float = 1.0):
    """Landmarks [N, 2] and a FaceLayout with two lip loops and two eye loops."""
    outer = _ring((64.5, 90.5), 16, 8)
    inner = _ring((64.5, 90.5), 11, 3)
    eye_r, eye_l = _ring((44.5, 50.5), 8, 4 * eye_open), _ring((84.5, 50.5), 8, 4 * eye_open)
    points = np.vstack([outer, inner, eye_r, eye_l])
    idx = np.arange(64).reshape(4, 16)
    layout = geo.FaceLayout(num_points=64, rigid_prior=np.ones(64), oval=idx[0],
                            eye_outer_right=0, eye_outer_left=1, forehead=0, chin=0,
                            lips=(idx[0], idx[1]), eyes=(idx[2], idx[3]))
    return points, layout


def test_mouth_and_eye_regions_come_from_the_landmark_outlines():
    shape = (128, 128)
    points, layout = _feature_layout()
    reg = masks.feature_regions(points, layout, shape)
    lips = masks.fill_polygon(points[layout.lips[0]], shape)
    assert reg["mouth"][lips].all() and reg["mouth"][90, 64]  # the lips and the open mouth
    assert not reg["mouth"][90, 64 + 16 + 4] and not reg["mouth"][70, 64]
    eye = masks.fill_polygon(points[layout.eyes[0]], shape)
    assert reg["eyes"][eye].all() and not reg["eyes"][50, 64] and not reg["eyes"][90, 64]
    # a blink: the closed eye's region still holds the open eye (within a pixel's rounding)
    closed = masks.feature_regions(*_feature_layout(eye_open=0.05), shape)["eyes"]
    assert closed[eye].mean() > 0.95
    assert closed.sum() < 1.6 * reg["eyes"].sum()
    # with the body labels, into the bit flags of utils.regions and back
    labels = np.zeros(shape, np.uint8)
    labels[20:110, 20:110] = masks.LABEL_HEAD
    labels[110:, 40:90] = masks.LABEL_NECK
    both = {**masks.label_masks(labels), **reg}
    decoded = decode_regions(encode_regions(both))
    for name, m in both.items():
        np.testing.assert_array_equal(decoded[name], m, err_msg=name)


def test_closed_contours_are_split_into_loops():
    from preprocessing.landmarks import _loops

    square = [(0, 1), (1, 2), (2, 3), (3, 0)]
    triangle = [(10, 12), (11, 10), (12, 11)]
    loops = _loops(square + triangle)
    assert [sorted(lp.tolist()) for lp in loops] == [[0, 1, 2, 3], [10, 11, 12]]
    assert loops[0].tolist() in ([0, 1, 2, 3], [0, 3, 2, 1])
