"""From a talking-head video (or a folder of frames) to a dataset in the released layout.

Two passes over the input. The first tracks the face landmarks and the hands of every frame
on the full frame. From the landmarks: one square crop for the whole clip (so the camera stays
fixed and nothing jitters) and the frames to drop or to fill in. The second pass crops and
resizes the usable frames and writes them with their person masks (edge colours
decontaminated), parsing maps and region maps, measuring how much of each is occluded (see
:mod:`preprocessing.occlusion`). Then the occluded frames are dropped, and from the kept ones
come a rigid face model and the focal length, the head pose of every frame (zero-lag
smoothed) and its expression vector; the written frames are numbered in order. Everything is
written into a hidden folder beside OUT that is renamed to OUT at the end, so an error or an
interrupt never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from preprocessing import geometry as geo
from preprocessing import occlusion as occ
from preprocessing.expression import fit_basis
from preprocessing.frames import CONVERT_HINT, FrameSource
from preprocessing.geometry import FaceLayout
from preprocessing.landmarks import HAND_POINTS
from preprocessing.masks import clean_mask, feature_regions, fill_polygon, label_masks, parse
from preprocessing.matting import decontaminate
from utils.errors import InputError, OptionError, first_few
from utils.regions import encode_regions, parsing_image

GENERATOR = "gaussianhead-open tools/preprocess.py"
VERSION = 2
REPORT_NAME = "preprocess_report.json"
# Why a frame was dropped (or filled in), as reported.
REASONS = {
    "no_face": "no face found",
    "several_faces": "several faces",
    "outside_crop": "face outside the crop",
    "failed_track": "failed track (landmarks jump away and back)",
    "occluded": "occluded (a hand or an object over the face or in the person mask)",
}
OCCLUSION_MODES = ("drop", "keep")
SUBFOLDERS = {"ori_imgs": "{}.jpg", "mask": "{}.png", "parsing": "{}.png", "regions": "{}.png"}
DEFAULT_FOV_DEG = 40.0  # across the longer side of the source frame, when focal is unknown
FOCAL_SAMPLES = 120  # most frames used to estimate the focal length and the rigid model
JUMP = 0.25  # landmark motion between neighbouring frames, in face heights, that is a jump


@dataclass(frozen=True)
class PreprocessOptions:
    """Options of :func:`preprocess` (the command-line flags of tools/preprocess.py)."""

    size: int = 512  # output width and height in pixels
    exp_dim: int = 46  # length of the expression vectors
    focal: float | None = None  # focal length in source-frame pixels; None: estimate it
    crop_scale: float = 2.2  # crop side in face heights (forehead to chin)
    smooth: int = 7  # window (frames) of the zero-lag pose smoothing; < 3 turns it off
    max_gap: int = 5  # longest run of failed frames that is filled in by interpolation
    min_kept: float = 0.5  # fewest frames, as a fraction of those read, to make a dataset
    max_frames: int | None = None  # read at most this many frames from the start
    jpeg_quality: int = 95
    min_confidence: float = 0.5  # face detection / tracking confidence of the face mesh
    occlusion: str = "drop"  # occluded frames: "drop" them or "keep" them (reported either way)
    occlusion_threshold: float = 0.03  # occluded area, in face areas, that flags a frame
    decontaminate: bool = True  # solve for the person's colour at the soft mask edges
    quiet: bool = False  # no progress bars

    def check(self) -> None:
        """Raise :class:`OptionError` for a value that cannot work."""
        rules = [
            (self.size >= 32, f"--size must be at least 32, got {self.size}"),
            (self.exp_dim >= 1, f"--exp_dim must be at least 1, got {self.exp_dim}"),
            (self.focal is None or self.focal > 0, f"--focal must be positive, got {self.focal}"),
            (self.crop_scale >= 1.2, f"--crop_scale must be at least 1.2, got {self.crop_scale}"),
            (self.smooth >= 0, f"--smooth must be >= 0, got {self.smooth}"),
            (self.max_gap >= 0, f"--max_gap must be >= 0, got {self.max_gap}"),
            (0 <= self.min_kept <= 1, f"--min_kept must be in [0, 1], got {self.min_kept}"),
            (self.max_frames is None or self.max_frames >= 2,
             f"--max_frames must be at least 2, got {self.max_frames}"),
            (0 <= self.jpeg_quality <= 100,
             f"--jpeg_quality must be in 0..100, got {self.jpeg_quality}"),
            (0 < self.min_confidence < 1,
             f"--min_confidence must be in (0, 1), got {self.min_confidence}"),
            (self.occlusion in OCCLUSION_MODES,
             f"--occlusion must be one of {', '.join(OCCLUSION_MODES)}, got {self.occlusion!r}"),
            (self.occlusion_threshold > 0,
             f"--occlusion_threshold must be positive, got {self.occlusion_threshold}"),
        ]
        for ok, msg in rules:
            if not ok:
                raise OptionError(msg + ".")


@dataclass
class Crop:
    """The square [x0, x0 + side) x [y0, y0 + side) of the source frames, resized to size."""

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / self.side

    def to_output(self, pts: np.ndarray) -> np.ndarray:
        """Source (u, v, z) pixels [..., 3] -> output pixels."""
        return (pts - np.array([self.x0, self.y0, 0.0])) * self.scale

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        img = rgb[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side]
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_CUBIC
        return cv2.resize(img, (self.size, self.size), interpolation=interp)


@dataclass
class Tracked:
    """Result of the first pass: per-frame status, face landmarks [F, N, 3] and hand
    landmarks [F, K, 21, 3] (source pixels, NaN where none)."""

    status: np.ndarray  # [F] str
    landmarks: np.ndarray
    width: int
    height: int
    hands: np.ndarray | None = None


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
    fit_error: np.ndarray  # [K] RMS reprojection error of the rigid model, pixels
    segments: list[slice]


# ----------------------------------------------------------------------------- output folder


def check_output(out: Path) -> None:
    """Refuse an OUT that is a file, or a non-empty folder not written by this tool."""
    if out.exists() and not out.is_dir():
        raise OptionError(f"{out} exists and is not a folder; nothing was written. Fix: pass a "
                          "new or empty folder as OUT.")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / REPORT_NAME).read_text()).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise OptionError(
                f"{out} is not empty and holds no dataset made by tools/preprocess.py (no "
                f"{REPORT_NAME}); nothing was written. Fix: pass a new or empty folder as OUT, "
                "or move that folder away first.")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished dataset into place, replacing an earlier one made by this tool."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


# ----------------------------------------------------------------------------- pass 1


def track(source: FrameSource, tracker: Callable, quiet: bool, console: TextIO | None = None,
          hand_tracker: Callable | None = None) -> Tracked:
    """Landmarks of the single face of every frame; status no_face / several_faces else; and
    the hands' landmarks when ``hand_tracker`` is given. The progress bar goes to ``console``
    (default stderr)."""
    from tqdm import tqdm

    status, lms, hands = [], [], []
    n_points = None
    for _, rgb in tqdm(source, total=len(source), desc="tracking", unit="frame",
                       disable=quiet, file=console):
        if hand_tracker is not None:
            hands.append(hand_tracker(rgb))
        faces = tracker(rgb).faces
        n_points = faces.shape[1]
        if len(faces) == 1:
            status.append("ok")
            lms.append(faces[0])
        else:
            status.append("no_face" if len(faces) == 0 else "several_faces")
            lms.append(None)
    if not status:
        raise InputError(f"{source.path} has no frames. {CONVERT_HINT}")
    n_points = n_points or 1
    arr = np.full((len(lms), n_points, 3), np.nan)
    for i, lm in enumerate(lms):
        if lm is not None:
            arr[i] = lm
    w, h = source.size
    hand_arr = None
    if hand_tracker is not None:
        hand_arr = np.full((len(hands), hand_tracker.max_hands, HAND_POINTS, 3), np.nan)
        for i, found in enumerate(hands):
            hand_arr[i, :len(found)] = found[:hand_tracker.max_hands]
    return Tracked(np.array(status, dtype=object), arr, w, h, hand_arr)


# ----------------------------------------------------------------------------- decisions


def face_heights(lm: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """Forehead-to-chin distance [F] in pixels (NaN where no landmarks)."""
    return np.linalg.norm(lm[:, layout.forehead, :2] - lm[:, layout.chin, :2], axis=-1)


def choose_crop(lm: np.ndarray, layout: FaceLayout, width: int, height: int, size: int,
                crop_scale: float) -> Crop:
    """One square crop for the clip from the tracked landmarks [F, N, 3] (source pixels).

    Its side is ``crop_scale`` median face heights (at most the frame's shorter side); its
    centre is the median face centre, a tenth of a face height lower so that the neck and
    shoulders are included, moved inside the frame where needed.
    """
    fh = float(np.median(face_heights(lm, layout)))
    lo, hi = lm[:, :, :2].min(1), lm[:, :, :2].max(1)
    centre = np.median(0.5 * (lo + hi), axis=0) + np.array([0.0, 0.1 * fh])
    side = int(min(round(crop_scale * fh), width, height))
    x0 = int(np.clip(round(centre[0] - side / 2), 0, width - side))
    y0 = int(np.clip(round(centre[1] - side / 2), 0, height - side))
    return Crop(x0, y0, side, size)


def _shape_distance(a: np.ndarray, b: np.ndarray, fh: float) -> float:
    """Mean landmark distance between two frames (2D), in face heights."""
    return float(np.linalg.norm(a[:, :2] - b[:, :2], axis=-1).mean() / fh)


def mark_failed_tracks(status: np.ndarray, lm: np.ndarray, fh: float) -> None:
    """Mark single tracked frames whose landmarks jump away from both neighbours while the
    neighbours agree (a tracking glitch, not a cut) as failed_track, in place."""
    ok = np.flatnonzero(status == "ok")
    for a, i, b in zip(ok[:-2], ok[1:-1], ok[2:]):
        if (_shape_distance(lm[i], lm[a], fh) > JUMP and _shape_distance(lm[i], lm[b], fh) > JUMP
                and _shape_distance(lm[a], lm[b], fh) < JUMP / 2):
            status[i] = "failed_track"


def fill_gaps(status: np.ndarray, lm: np.ndarray, fh: float, max_gap: int) -> list[int]:
    """Interpolate the landmarks across runs of at most ``max_gap`` failed frames between two
    tracked frames that agree (no cut in between). Marks them interpolated; returns them."""
    ok = np.flatnonzero(status == "ok")
    filled = []
    for a, b in zip(ok[:-1], ok[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap and _shape_distance(lm[a], lm[b], fh) < JUMP:
            for i in range(a + 1, b):
                u = (i - a) / (b - a)
                lm[i] = (1 - u) * lm[a] + u * lm[b]
                status[i] = "interpolated"
                filled.append(int(i))
    return filled


def segments(kept: np.ndarray, lm: np.ndarray, fh: float) -> list[slice]:
    """Runs of consecutive kept frames (slices into the kept list), split at cuts."""
    out, start = [], 0
    for j in range(1, len(kept) + 1):
        if j == len(kept) or kept[j] != kept[j - 1] + 1 or _shape_distance(
                lm[kept[j]], lm[kept[j - 1]], fh) > JUMP:
            out.append(slice(start, j))
            start = j
    return out


# ----------------------------------------------------------------------------- the pipeline


def preprocess(input_path: str | os.PathLike, out_dir: str | os.PathLike,
               opts: PreprocessOptions = PreprocessOptions()) -> dict:
    """Turn a video file or a folder of frames into a dataset folder; return the report."""
    from preprocessing.landmarks import (
        FaceTracker,
        HandTracker,
        PersonSegmenter,
        face_layout,
        import_mediapipe,
        native_notices_filtered,
    )

    t_start = time.time()
    opts.check()
    out = Path(out_dir)
    check_output(out)
    source = FrameSource(input_path, opts.max_frames)
    mp = import_mediapipe()
    layout = face_layout(mp)

    with native_notices_filtered() as console:
        tracker = FaceTracker(mp, opts.min_confidence)
        hands = HandTracker(mp)
        try:
            tracked = track(source, tracker, opts.quiet, console, hands)
        finally:
            tracker.close()
            hands.close()
    crop, lm, fh, filled = select_frames(tracked, layout, source, opts)

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for sub in SUBFOLDERS:
            (tmp / sub).mkdir(parents=True)
        usable = np.flatnonzero(np.isin(tracked.status, ["ok", "interpolated"]))
        hands_out = crop.to_output(tracked.hands if tracked.hands is not None else
                                   np.full((len(tracked.status), 0, HAND_POINTS, 3), np.nan))
        with native_notices_filtered() as console:
            segmenter = PersonSegmenter(mp)
            try:
                cues = _write_frames(source, usable, lm, hands_out, crop, layout, segmenter,
                                     tmp, opts, console)
            finally:
                segmenter.close()
        occlusion = mark_occluded(tracked.status, usable, cues, opts)
        _check_enough(tracked.status, source, opts)
        fit = fit_head(tracked, crop, lm, fh, layout, opts)
        _number_frames(tmp, usable, fit.kept)
        transforms = {
            "h": opts.size, "w": opts.size, "fx": fit.focal, "fy": fit.focal,
            "cx": fit.cx, "cy": fit.cy,
            "frames": [{"img_id": j, "aud_id": int(i), "transform_matrix": fit.c2w[j].tolist(),
                        "exp_ori": fit.exp[j].round(6).tolist()}
                       for j, i in enumerate(fit.kept)],
        }
        (tmp / "transforms.json").write_text(json.dumps(transforms, indent=1))
        rel = fit.fit_error / np.maximum(face_heights(lm[fit.kept], layout), 1.0)
        report = _report(source, opts, tracked, filled, crop, fit, rel, occlusion,
                         time.time() - t_start)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=1))
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def select_frames(tracked: Tracked, layout: FaceLayout, source: FrameSource,
                  opts: PreprocessOptions) -> tuple[Crop, np.ndarray, float, list[int]]:
    """Choose the crop and which frames to keep, fill or drop (updates tracked.status).

    Returns the crop, the landmarks [F, N, 3] in output pixels (interpolated where filled),
    the median face height (output pixels) and the filled frames. Raises InputError when too
    few frames are usable.
    """
    status, n = tracked.status, len(tracked.status)
    ok = status == "ok"
    if not ok.any():
        raise InputError(
            f"no single face was found in any of the {n} frames of {source.path} "
            f"({_count_reasons(status)}). Fix: use a clip where one face is clearly visible "
            "(frontal or turned less than about 60 degrees, at least ~100 pixels high).")
    crop = choose_crop(tracked.landmarks[ok], layout, tracked.width, tracked.height, opts.size,
                       opts.crop_scale)
    lm = crop.to_output(tracked.landmarks)
    inside = np.all((lm[:, :, :2] >= 0) & (lm[:, :, :2] <= opts.size), axis=(1, 2))
    status[ok & ~inside] = "outside_crop"
    fh = float(np.nanmedian(face_heights(lm, layout)))
    mark_failed_tracks(status, lm, fh)
    filled = fill_gaps(status, lm, fh, opts.max_gap)
    _check_enough(status, source, opts)
    return crop, lm, fh, filled


def _check_enough(status: np.ndarray, source: FrameSource, opts: PreprocessOptions) -> None:
    """Raise InputError when fewer than --min_kept of the frames can be used."""
    n = len(status)
    usable = np.isin(status, ["ok", "interpolated"])
    need = max(2, math.ceil(opts.min_kept * n))
    if usable.sum() < need:
        failed = [source.describe(i) for i in np.flatnonzero(~usable)]
        fixes = "trim the clip to the part where one face is visible"
        if (status == "occluded").any():
            fixes += " and nothing covers it, pass --occlusion keep (or a higher " \
                     "--occlusion_threshold)"
        raise InputError(
            f"only {usable.sum()} of the {n} frames of {source.path} can be used (need {need}): "
            f"{_count_reasons(status)}; first failed frames: {first_few(failed, 3)}. Fix: "
            f"{fixes}, raise --max_gap to fill longer gaps, or lower --min_kept.")


def mark_occluded(status: np.ndarray, frames: np.ndarray, cues: dict[int, dict[str, float]],
                  opts: PreprocessOptions) -> dict:
    """Flag the occluded ones of ``frames`` (source indices) from their cues (see
    :mod:`preprocessing.occlusion`); with --occlusion drop mark them occluded in ``status``.
    Returns the occlusion part of the report."""
    cues = occ.subtract_baselines(cues)
    scores = np.array([max(cues[int(i)].values()) for i in frames])
    flagged = frames[occ.flag_frames(frames, scores, opts.occlusion_threshold)]
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
        "cues": occ.CUES,
        "flagging": f"a frame is flagged when a cue reaches the threshold; gaps of up to "
                    f"{occ.CLOSE_GAP} frames between flagged frames are closed and "
                    f"{occ.PAD} frames on each side of every run flagged too (cue "
                    "'neighbour')",
        "flagged": [int(i) for i in flagged],
        "flagged_runs": occ.runs(flagged),
        "frames": detail,
        "measured": {"source_frames": frames.tolist(),
                     **{k: [round(cues[int(i)][k], 4) for i in frames] for k in occ.CUES}},
    }


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
    exp = fit_basis(faces, opts.exp_dim).encode(faces)
    return HeadFit(focal=float(focal), focal_info=info, cx=float(cx), cy=float(cy), kept=kept,
                   c2w=c2w, exp=exp, fit_error=rms, segments=segs)


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


def _write_frames(source: FrameSource, frames: np.ndarray, lm: np.ndarray, hands: np.ndarray,
                  crop: Crop, layout: FaceLayout, segmenter: Callable, folder: Path,
                  opts: PreprocessOptions, console: TextIO | None = None
                  ) -> dict[int, dict[str, float]]:
    """Pass 2: crop, resize and write the given frames (source indices, sorted) with their
    masks, parsing and region maps, named by source index (see :func:`_number_frames`).

    lm [F, N, 3] and hands [F, K, 21, 3] are in output pixels. Returns the occlusion cues of
    every frame written, by source index.
    """
    from tqdm import tqdm

    todo = set(map(int, frames))
    bar = tqdm(total=len(todo), desc="writing", unit="frame", disable=opts.quiet, file=console)
    shape = (opts.size, opts.size)
    eyes = [layout.eye_outer_right, layout.eye_outer_left]
    lips = np.concatenate(layout.lips) if layout.lips else np.zeros(0, int)
    cues = {}
    for i, rgb in source:
        if i not in todo:
            continue
        img = crop.apply(rgb)
        face = fill_polygon(lm[i, layout.oval, :2], shape)
        prob = segmenter(img)
        mask = clean_mask(prob, face)
        mask8 = np.rint(mask * 255).astype(np.uint8)
        band, eye_distance = occ.side_band(lm[i, eyes, :2], lm[i, lips, :2], shape)
        cues[i] = occ.occlusion_cues(prob, face, occ.hand_region(hands[i], shape), band,
                                     eye_distance)
        body = label_masks(parse(mask, lm[i, :, :2], layout.oval, layout.chin, layout.forehead))
        if opts.decontaminate:
            img = decontaminate(img, mask8 / 255.0)  # the alpha the trainer will read
        _imwrite(folder / "ori_imgs" / f"s{i}.jpg", img[..., ::-1], jpeg_params(opts.jpeg_quality))
        _imwrite(folder / "mask" / f"s{i}.png", mask8)
        _imwrite(folder / "parsing" / f"s{i}.png", parsing_image(body)[..., ::-1])
        _imwrite(folder / "regions" / f"s{i}.png",
                 encode_regions({**body, **feature_regions(lm[i, :, :2], layout, shape)}))
        bar.update()
        if len(cues) == len(todo):
            break
    bar.close()
    if len(cues) != len(todo):
        raise InputError(f"{source.path} gave fewer frames on the second read ({len(cues)} of "
                         f"{len(todo)} usable frames). Fix: copy the file locally and retry, or "
                         "extract its frames into a folder.")
    return cues


def _number_frames(folder: Path, written: np.ndarray, kept: np.ndarray) -> None:
    """Rename the files of the kept frames from their source index to their img_id (masks
    one-based, as released) and delete those of the frames not kept."""
    img_id = {int(i): j for j, i in enumerate(kept)}
    for i in map(int, written):
        for sub, name in SUBFOLDERS.items():
            path = folder / sub / name.format(f"s{i}")
            j = img_id.get(i)
            if j is None:
                path.unlink()
            else:
                path.rename(folder / sub / name.format(j + 1 if sub == "mask" else j))


def jpeg_params(quality: int) -> list[int]:
    """cv2.imwrite parameters of ori_imgs: the given quality, and colour at full resolution
    (4:4:4), since the usual half-resolution colour (4:2:0) would mix the background's colour
    back into the decontaminated edge pixels."""
    return [cv2.IMWRITE_JPEG_QUALITY, quality,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]


def _imwrite(path: Path, img: np.ndarray, params: list[int] | None = None) -> None:
    ok, buf = cv2.imencode(path.suffix, img, params or [])
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _count_reasons(status: np.ndarray) -> str:
    parts = [f"{REASONS[k]}: {int((status == k).sum())}" for k in REASONS if (status == k).any()]
    return "; ".join(parts) or "none failed"


def _stats(x: np.ndarray) -> dict:
    return {"median": float(np.median(x)), "p95": float(np.percentile(x, 95)),
            "max": float(np.max(x))}


def _report(source: FrameSource, opts: PreprocessOptions, tracked: Tracked, filled: list[int],
            crop: Crop, fit: HeadFit, rel: np.ndarray, occlusion: dict, seconds: float
            ) -> dict:
    status = tracked.status
    confidence = np.exp(-rel / 0.02)
    dropped = {k: np.flatnonzero(status == k).tolist() for k in REASONS}
    measured = occlusion["measured"]
    score = dict(zip(measured["source_frames"],
                     np.max([measured[k] for k in occ.CUES], axis=0).tolist()))
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "input": str(Path(source.path).resolve()),
        "frames_read": int(len(status)),
        "frames_kept": int(len(fit.kept)),
        "frames_interpolated": filled,
        "frames_dropped": {k: v for k, v in dropped.items() if v},
        "drop_reasons": REASONS,
        "source_size": [tracked.width, tracked.height],
        "crop": {"x0": crop.x0, "y0": crop.y0, "side": crop.side, "size": crop.size},
        "focal": {"pixels": fit.focal, "source_pixels": fit.focal / crop.scale,
                  **fit.focal_info},
        "segments": len(fit.segments),
        "tracking": {
            "fit_error_px": _stats(fit.fit_error),
            "fit_error_face_heights": _stats(rel),
            "confidence_mean": float(confidence.mean()),
            "confidence_min": float(confidence.min()),
            "confidence_definition": "exp(-fit error / (2% of the face height)), the fit error "
                                     "being the RMS reprojection error of the rigid face model",
        },
        "frames": [{"img_id": j, "source_frame": int(i), "status": str(status[i]),
                    "fit_error_px": round(float(fit.fit_error[j]), 4),
                    "confidence": round(float(confidence[j]), 4),
                    "occlusion": score[int(i)]}
                   for j, i in enumerate(fit.kept)],
        "occlusion": occlusion,
        "options": asdict(opts),
        "seconds": round(seconds, 1),
    }


def summary(report: dict, out: Path) -> str:
    """A few lines for the terminal."""
    dropped = report["frames_dropped"]
    lines = [
        f"kept {report['frames_kept']} of {report['frames_read']} frames "
        f"({len(report['frames_interpolated'])} interpolated across short gaps)",
    ]
    for k, v in dropped.items():
        frames = occ.describe_runs(v) if k == "occluded" else first_few(v)
        lines.append(f"  dropped, {REASONS[k]}: {len(v)} (frames {frames})")
    oc = report["occlusion"]
    flagged = oc["flagged"]
    if flagged:
        cues = {c: sum(f["cue"] == c for f in oc["frames"]) for c in (*occ.CUES, "neighbour")}
        why = ", ".join(f"{c} {k}" for c, k in cues.items() if k)
        if oc["mode"] == "keep":
            lines.append(f"  occluded but kept (--occlusion keep): {len(flagged)} (frames "
                         f"{occ.describe_runs(flagged)})")
        lines.append(f"  occlusion cues (threshold {oc['threshold']:g} of the face area): {why}")
    tr = report["tracking"]
    lines += [
        f"focal {report['focal']['pixels']:.1f} px at {report['crop']['size']} px "
        f"({report['focal']['how']})",
        f"tracking: fit error median {tr['fit_error_px']['median']:.2f} px, 95th percentile "
        f"{tr['fit_error_px']['p95']:.2f} px; confidence mean {tr['confidence_mean']:.2f}, "
        f"min {tr['confidence_min']:.2f}",
        f"wrote {out} (report: {out / REPORT_NAME}) in {report['seconds']:.0f} s",
    ]
    return "\n".join(lines)
