"""From the kept frames' landmarks: a rigid face model and the focal length, the head pose of
every frame (zero-lag smoothed) and its expression vector."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from preprocessing import geometry as geo
from preprocessing.expression import fit_basis
from preprocessing.frame_selection import Crop, segments
from preprocessing.geometry import FaceLayout
from preprocessing.named_expression import EXP_NAMES, EXP_SPACE, NamedExpression
from preprocessing.options import PreprocessOptions
from preprocessing.tracking import Tracked

DEFAULT_FOV_DEG = 40.0  # across the longer side of the source frame, when focal is unknown
FOCAL_SAMPLES = 120  # most frames used to estimate the focal length and the rigid model
NAMED_SMOOTH = 5  # window (frames) of the landmark smoothing before the named code


@dataclass
class HeadFit:
    """Intrinsics (output pixels) and, per kept frame, pose and expression."""

    focal: float
    focal_info: dict
    cx: float
    cy: float
    kept: np.ndarray  # [K] source frame indices
    c2w: np.ndarray  # [K, 4, 4] camera-to-head, OpenGL axes (smoothed)
    exp: np.ndarray  # [K, E]
    exp_space: dict  # transforms.json keys naming the space (empty for the per-clip PCA)
    exp_info: dict  # for the report: how the code was made
    fit_error: np.ndarray  # [K] RMS reprojection error of the rigid model, pixels
    segments: list[slice]
    face: np.ndarray  # [N, 3] the mean face triangulated from the landmarks, head frame


def fit_head(tracked: Tracked, crop: Crop, lm: np.ndarray, fh: float, layout: FaceLayout,
             opts: PreprocessOptions) -> HeadFit:
    """Rigid face model, focal length, smoothed poses and expressions of the kept frames.

    The model is fitted on the tracked frames only; the interpolated ones just get a pose.
    """
    status = tracked.status
    fit = np.flatnonzero(status == "ok")
    mean, _, _, _, weights = geo.generalized_procrustes(lm[fit], layout.rigid_prior)
    basis, metres, origin = geo.head_frame(mean, layout)
    model = metres * (mean - origin) @ basis  # [N, 3] head frame
    rigid = weights >= 0.3 * weights.max()
    cx = (tracked.width / 2 - crop.x0) * crop.scale
    cy = (tracked.height / 2 - crop.y0) * crop.scale
    sample = fit[np.unique(np.linspace(0, len(fit) - 1, min(FOCAL_SAMPLES, len(fit))).astype(int))]
    pts = lm[:, rigid, :2]
    focal, info = _focal(pts[sample], model[rigid], tracked, crop, cx, cy, opts)
    k_mat = geo.intrinsics_matrix(focal, cx, cy)
    rigid_model, _ = geo.refine_model(pts[sample], model[rigid], k_mat)
    kept = np.flatnonzero(np.isin(status, ["ok", "interpolated"]))
    rot, trans, rms = geo.solve_poses(pts[kept], rigid_model, k_mat)
    if not np.isfinite(rms).all():  # no pose at all: drop those frames
        status[kept[~np.isfinite(rms)]] = "failed_track"
        keep = np.isfinite(rms)
        kept, rot, trans, rms = kept[keep], rot[keep], trans[keep], rms[keep]
    segs = segments(kept, lm, fh)
    c2w = geo.camera_to_head_opengl(*geo.smooth_poses(rot, trans, segs, _odd(opts.smooth)))

    # Expressions: landmark motion relative to the perspective projection of the mean face,
    # in the head frame (the landmarks' own depth, which shifts as the head turns, is unused),
    # against each frame's own (unsmoothed) pose so that pose jitter does not leak in.
    rest = geo.triangulate(lm[kept][:, :, :2], rot, trans, k_mat)  # [N, 3] mean face
    faces = rest + geo.image_residuals(lm[kept][:, :, :2], rest, rot, trans, k_mat)
    exp, space, exp_info = _expressions(faces, segs, opts)
    return HeadFit(focal=float(focal), focal_info=info, cx=float(cx), cy=float(cy), kept=kept,
                   c2w=c2w, exp=exp, exp_space=space, exp_info=exp_info, fit_error=rms,
                   segments=segs, face=rest)


def _expressions(faces: np.ndarray, segs: list[slice], opts: PreprocessOptions
                 ) -> tuple[np.ndarray, dict, dict]:
    """Expression vectors [K, E] of pose-free faces [K, N, 3] (runs of consecutive frames
    ``segs``), the transforms.json keys that identify their space, and a description for the
    report."""
    if opts.expression == "pca":
        basis = fit_basis(faces, opts.exp_dim)
        return basis.encode(faces), {}, {"mode": "pca", "dim": opts.exp_dim}
    # The landmarks' frame-to-frame jitter is smoothed first (zero-lag, within runs of
    # consecutive frames; on synthetic heads it raised every measured correlation with the
    # true controls by 0.01-0.03, blinks included, and cut the jitter by a third).
    faces = geo.smooth_series(faces, segs, NAMED_SMOOTH)
    named = NamedExpression.fit(faces)
    space = {"exp_space": EXP_SPACE, "exp_names": list(EXP_NAMES),
             "exp_neutral": named.neutral_code().tolist()}
    info = {"mode": "named", "space": EXP_SPACE,
            "face_units": {"x": named.units.x, "y": named.units.y},
            "neutral_measures": {k: round(v, 5) for k, v in named.neutral.items()}}
    return named.encode(faces), space, info


def _focal(pts: np.ndarray, model: np.ndarray, tracked: Tracked, crop: Crop, cx: float,
           cy: float, opts: PreprocessOptions) -> tuple[float, dict]:
    """The focal length in output pixels, and how it was found (for the report)."""
    if opts.focal is not None:
        return opts.focal * crop.scale, {"how": "given (--focal)"}
    focal, grid, errs = geo.estimate_focal(pts, model, opts.size, cx, cy)
    info = {"grid_pixels": grid.round(2).tolist(), "grid_errors": errs.round(5).tolist()}
    if focal is not None:
        return focal, {"how": "estimated from the landmarks", **info}
    focal = max(tracked.width, tracked.height) / 2 / math.tan(
        math.radians(DEFAULT_FOV_DEG) / 2) * crop.scale
    return focal, {"how": f"default ({DEFAULT_FOV_DEG:g} degrees across the frame): the head "
                          "turns too little to measure it; pass --focal if known", **info}


def _odd(window: int) -> int:
    return window if window % 2 else window + 1
