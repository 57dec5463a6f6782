"""Head pose from face landmarks: rigid alignment to a canonical face, perspective pose,
focal length, and zero-lag temporal smoothing.

Conventions. Landmarks are given per frame in output-image pixels as ``(u, v, z)`` with u to
the right, v down and z away from the camera (the OpenCV camera axes, so the triple is
right-handed). The head frame has x to the image right when the face looks at the camera,
y up and z out of the face (the OpenGL camera axes of a frontal view), in metres, with its
origin near the centre of the head. A pose ``(R, t)`` maps head points to OpenCV camera
points, ``X_cam = R @ X_head + t``.

Nothing here needs the landmark model; :class:`FaceLayout` says which landmark is which.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import savgol_filter
from scipy.spatial.transform import Rotation

# Distance between the outer eye corners of an adult, in metres; it sets the scale of the
# head frame (the released data use roughly metric units: head radius about 0.1).
EYE_OUTER_DISTANCE_M = 0.09
# The head frame's origin relative to the midpoint of the outer eye corners, in the head
# frame: a little lower and about 9 cm behind the eyes, near the centre of the head.
ORIGIN_FROM_EYES_M = np.array([0.0, -0.018, -0.09])


@dataclass(frozen=True)
class FaceLayout:
    """Which landmark is which, for an N-point face landmark model.

    ``rigid_prior`` [N] is 1 for points that do not move with expressions (forehead, nose,
    temples, upper cheeks) and 0 for the rest; ``oval`` is the face outline as a closed loop;
    ``lips`` the outlines of the lips (whose filled union is the lips and the mouth between
    them) and ``eyes`` each eye's lid outline, closed loops too (empty when the landmark model
    has none).
    """

    num_points: int
    rigid_prior: np.ndarray  # [N] float in [0, 1]
    oval: np.ndarray  # [M] landmark indices around the face outline
    eye_outer_right: int  # the subject's right eye, on the image left in a frontal view
    eye_outer_left: int
    forehead: int
    chin: int
    lips: tuple[np.ndarray, ...] = ()  # loops of landmark indices
    eyes: tuple[np.ndarray, ...] = ()  # one loop of landmark indices per eye


# ----------------------------------------------------------------------------- alignment


def similarity_align(src: np.ndarray, dst: np.ndarray, w: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity ``dst ≈ s R src + t`` for a batch of point sets.

    src [F, N, 3] or [N, 3], dst [F, N, 3], w [N] >= 0. Returns s [F], R [F, 3, 3] (proper
    rotations), t [F, 3] (Umeyama's closed form with weights).
    """
    w = w / w.sum()
    src = np.broadcast_to(src, dst.shape)
    mu_s = np.einsum("n,fnk->fk", w, src)
    mu_d = np.einsum("n,fnk->fk", w, dst)
    sc, dc = src - mu_s[:, None], dst - mu_d[:, None]
    cov = np.einsum("n,fni,fnj->fij", w, dc, sc)  # [F, 3, 3]
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones_like(sig)
    d[:, 2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ (d[:, :, None] * vt)
    var_s = np.einsum("n,fnk,fnk->f", w, sc, sc)
    s = (sig * d).sum(1) / var_s
    t = mu_d - s[:, None] * np.einsum("fij,fj->fi", rot, mu_s)
    return s, rot, t


def generalized_procrustes(shapes: np.ndarray, prior: np.ndarray, iterations: int = 6
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Align F landmark sets to a common mean shape, down-weighting points that move.

    shapes [F, N, 3]; prior [N] initial weights (0 excludes a point). Each round aligns every
    frame to the current mean with a weighted similarity, recomputes the mean, then sets the
    weights to ``prior / (1 + residual variance / its median)`` so that points moving with
    expressions or tracking noise count less.

    Returns mean [N, 3] (unit RMS size, centred), s [F], R [F, 3, 3], t [F, 3] with
    ``shapes[f] ≈ s[f] R[f] mean + t[f]``, and the final weights [N].
    """
    w = prior.astype(np.float64).copy()
    mean = _normalise_shape(np.median(shapes, axis=0), w)
    for _ in range(iterations):
        s, rot, t = similarity_align(mean, shapes, w)
        aligned = to_canonical(shapes, s, rot, t)
        mean = _normalise_shape(aligned.mean(0), w)
        var = ((aligned - aligned.mean(0)) ** 2).sum(-1).mean(0)  # [N]
        ref = np.median(var[prior > 0]) + 1e-12
        w = prior / (1.0 + var / ref)
    s, rot, t = similarity_align(mean, shapes, w)
    return mean, s, rot, t, w


def to_canonical(shapes: np.ndarray, s: np.ndarray, rot: np.ndarray, t: np.ndarray
                 ) -> np.ndarray:
    """Undo per-frame similarities: ``R^T (x - t) / s`` for shapes [F, N, 3] -> [F, N, 3]."""
    return np.einsum("fji,fnj->fni", rot, shapes - t[:, None]) / s[:, None, None]


def _normalise_shape(shape: np.ndarray, w: np.ndarray) -> np.ndarray:
    c = shape - (w[:, None] * shape).sum(0) / w.sum()
    return c / np.sqrt((w * (c**2).sum(-1)).sum() / w.sum())


def head_frame(mean: np.ndarray, layout: FaceLayout) -> tuple[np.ndarray, float, np.ndarray]:
    """The head frame of a mean shape given in (u, v, z) axes.

    Returns basis B [3, 3] (columns: head x, y, z axes in the mean shape's axes), metres per
    mean-shape unit m, and the origin o [3] in mean-shape coordinates, so that a point p of
    the mean shape is ``m * B^T (p - o)`` in the head frame.
    """
    x = mean[layout.eye_outer_left] - mean[layout.eye_outer_right]
    x /= np.linalg.norm(x)
    up = mean[layout.forehead] - mean[layout.chin]
    y = up - (up @ x) * x
    y /= np.linalg.norm(y)
    basis = np.stack([x, y, np.cross(x, y)], axis=1)
    m = EYE_OUTER_DISTANCE_M / np.linalg.norm(
        mean[layout.eye_outer_left] - mean[layout.eye_outer_right])
    eyes = 0.5 * (mean[layout.eye_outer_left] + mean[layout.eye_outer_right])
    origin = eyes + basis @ ORIGIN_FROM_EYES_M / m
    return basis, float(m), origin


# ----------------------------------------------------------------------------- perspective


def intrinsics_matrix(focal: float, cx: float, cy: float) -> np.ndarray:
    """K [3, 3] with square pixels."""
    return np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]], np.float64)


def solve_poses(points2d: np.ndarray, model: np.ndarray, k: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Perspective pose per frame from 2D landmarks and a rigid 3D model.

    points2d [F, P, 2] pixels; model [P, 3] head-frame points (only rigid landmarks should be
    passed). Returns R [F, 3, 3], t [F, 3] (head -> OpenCV camera) and the RMS reprojection
    error [F] in pixels.
    """
    f = len(points2d)
    rot, trans, rms = np.zeros((f, 3, 3)), np.zeros((f, 3)), np.zeros(f)
    obj = np.ascontiguousarray(model, np.float64)
    for i in range(f):
        img = np.ascontiguousarray(points2d[i], np.float64)
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            rms[i] = np.inf
            continue
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, None, rvec, tvec)
        proj, _ = cv2.projectPoints(obj, rvec, tvec, k, None)
        rms[i] = np.sqrt(((proj[:, 0] - img) ** 2).sum(-1).mean())
        rot[i] = cv2.Rodrigues(rvec)[0]
        trans[i] = tvec[:, 0]
    return rot, trans, rms


def triangulate(points2d: np.ndarray, rot: np.ndarray, trans: np.ndarray, k: np.ndarray
                ) -> np.ndarray:
    """Least-squares 3D points [P, 3] (head frame) seen at points2d [F, P, 2] from poses
    R [F, 3, 3], t [F, 3] (linear: each view gives two equations per point)."""
    f, cx, cy = k[0, 0], k[0, 2], k[1, 2]
    rows, rhs = [], []
    for axis, centre in ((0, cx), (1, cy)):
        uv = points2d[..., axis] - centre  # [F, P]
        rows.append(uv[..., None] * rot[:, None, 2, :] - f * rot[:, None, axis, :])
        rhs.append(f * trans[:, None, axis] - uv * trans[:, None, 2])
    a, b = np.concatenate(rows), np.concatenate(rhs)  # [2F, P, 3], [2F, P]
    ata = np.einsum("fpi,fpj->pij", a, a)
    atb = np.einsum("fpi,fp->pi", a, b)
    return np.linalg.solve(ata, atb[..., None])[..., 0]


def refine_model(points2d: np.ndarray, model: np.ndarray, k: np.ndarray, rounds: int = 6
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Perspective structure from motion of a rigid head with known intrinsics.

    Alternates per-frame poses and triangulated points, starting from ``model`` [P, 3] (the
    weak-perspective shape of the landmark model). Returns the refined model [P, 3], rescaled
    to the starting model's size, and the mean RMS reprojection error (pixels) per round.
    """
    size = np.sqrt(((model - model.mean(0)) ** 2).sum(-1).mean())
    history = []
    for _ in range(rounds):
        rot, trans, rms = solve_poses(points2d, model, k)
        history.append(float(rms.mean()))
        new = triangulate(points2d, rot, trans, k)
        centre = model.mean(0)
        model = centre + (new - new.mean(0)) * size / np.sqrt(
            ((new - new.mean(0)) ** 2).sum(-1).mean())
    history.append(float(solve_poses(points2d, model, k)[2].mean()))
    return model, np.array(history)


def estimate_focal(points2d: np.ndarray, model: np.ndarray, size: int, cx: float, cy: float,
                   fov_range_deg: tuple[float, float] = (8.0, 60.0), steps: int = 11
                   ) -> tuple[float | None, np.ndarray, np.ndarray]:
    """Focal length (pixels) that best explains the landmarks of a rigid, turning head seen
    in ``size``-pixel images with the principal point (cx, cy).

    For each focal of a grid of fields of view, the rigid model is re-estimated by
    :func:`refine_model` and scored by its mean reprojection error; a parabola in log focal
    through the best grid point refines it. Perspective is a weak cue (the face is shallow
    compared with its distance), so None is returned when the error curve is flat (the ends
    of the grid within 0.3 % of its minimum) or has its minimum at an end. Also returns the
    grid (focals [G]) and its errors [G], for the report.
    """
    lo, hi = (np.radians(a) for a in fov_range_deg)
    focals = size / 2 / np.tan(np.geomspace(lo, hi, steps) / 2)[::-1]  # increasing
    errors = np.array([
        refine_model(points2d, model, intrinsics_matrix(fc, cx, cy))[1][-1] for fc in focals])
    j = int(np.argmin(errors))
    if j in (0, len(focals) - 1) or min(errors[0], errors[-1]) < errors[j] * 1.003:
        return None, focals, errors
    x = np.log(focals[j - 1:j + 2])
    a, b, _ = np.polyfit(x, errors[j - 1:j + 2], 2)
    best = np.exp(np.clip(-b / (2 * a), x.min(), x.max())) if a > 0 else focals[j]
    return float(best), focals, errors


def image_residuals(points2d: np.ndarray, model: np.ndarray, rot: np.ndarray,
                    trans: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Where landmarks [F, N, 2] moved away from their projected rest positions model [N, 3],
    brought into the head frame: displacements [F, N, 3] in metres.

    Each image displacement is scaled to metres at the depth of its point and rotated from
    the camera into the head frame, so the same facial motion gives the same vector whatever
    the pose. The landmarks' own depth is not used: it is the least reliable coordinate.
    """
    cam = np.einsum("fij,nj->fni", rot, model) + trans[:, None]  # [F, N, 3]
    proj = cam @ k.T
    uv = proj[..., :2] / proj[..., 2:]
    metres = (points2d - uv) * (cam[..., 2:] / k[0, 0])
    d_cam = np.concatenate([metres, np.zeros_like(metres[..., :1])], axis=-1)
    return np.einsum("fji,fnj->fni", rot, d_cam)


# ----------------------------------------------------------------------------- smoothing


def smooth_poses(rot: np.ndarray, trans: np.ndarray, segments: list[slice], window: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Zero-lag smoothing of poses R [F, 3, 3], t [F, 3] within each segment of frames.

    A Savitzky-Golay filter (local quadratic fit, centred window of ``window`` frames) runs
    on the rotation vectors relative to each segment's mean rotation and on the translations.
    Being centred it adds no delay, and it keeps constant, linear and quadratic motion
    exactly. Segments shorter than the window are left as they are.
    """
    rot, trans = rot.copy(), smooth_series(trans, segments, window)
    if window < 3:
        return rot, trans
    for seg in segments:
        r = Rotation.from_matrix(rot[seg])
        if len(r) < window:
            continue
        mean = r.mean()
        vec = smooth_series((mean.inv() * r).as_rotvec(), [slice(0, len(r))], window)
        rot[seg] = (mean * Rotation.from_rotvec(vec)).as_matrix()
    return rot, trans


def smooth_series(x: np.ndarray, segments: list[slice], window: int) -> np.ndarray:
    """The same zero-lag Savitzky-Golay filter for any per-frame series x [F, ...]."""
    x = x.copy()
    if window < 3:
        return x
    for seg in segments:
        if seg.stop - seg.start >= window:
            x[seg] = savgol_filter(x[seg], window, 2, axis=0, mode="interp")
    return x


# ----------------------------------------------------------------------------- conversion


def camera_to_head_opengl(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Camera-to-world [F, 4, 4] in the head frame with OpenGL camera axes.

    rot [F, 3, 3], trans [F, 3]: head -> OpenCV camera poses.
    """
    f = len(rot)
    c2w = np.tile(np.eye(4), (f, 1, 1))
    c2w[:, :3, :3] = np.transpose(rot, (0, 2, 1))
    c2w[:, :3, 3] = -np.einsum("fji,fj->fi", rot, trans)
    c2w[:, :, 1:3] *= -1  # OpenCV (y down, z forward) -> OpenGL (y up, z backward) columns
    c2w[:, 3, 1:3] = 0.0
    return c2w
