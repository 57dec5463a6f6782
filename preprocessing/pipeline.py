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

The steps live in their own modules: :mod:`preprocessing.tracking` (pass 1),
:mod:`preprocessing.frame_selection`, :mod:`preprocessing.frame_writer` (pass 2),
:mod:`preprocessing.occlusion`, :mod:`preprocessing.head_fit` and :mod:`preprocessing.report`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from preprocessing.frame_selection import check_enough, face_heights, select_frames
from preprocessing.frame_writer import SUBFOLDERS, number_frames, write_frames
from preprocessing.frames import FrameSource
from preprocessing.head_fit import fit_head
from preprocessing.landmarks import HAND_POINTS
from preprocessing.occlusion import mark_occluded
from preprocessing.options import EXPRESSION_MODES, OCCLUSION_MODES, PreprocessOptions
from preprocessing.report import GENERATOR, REPORT_NAME, build_report, summary
from preprocessing.tracking import track
from utils.errors import OptionError

__all__ = ["EXPRESSION_MODES", "GENERATOR", "OCCLUSION_MODES", "REPORT_NAME",
           "PreprocessOptions", "check_output", "preprocess", "summary"]


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


def preprocess(input_path: str | os.PathLike, out_dir: str | os.PathLike,
               opts: PreprocessOptions | None = None) -> dict:
    """Turn a video file or a folder of frames into a dataset folder; return the report.
    ``opts`` defaults to ``PreprocessOptions()``."""
    from preprocessing.landmarks import (
        FaceTracker,
        HandTracker,
        PersonSegmenter,
        face_layout,
        import_mediapipe,
        native_notices_filtered,
    )

    t_start = time.time()
    opts = opts or PreprocessOptions()
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
                cues = write_frames(source, usable, lm, hands_out, crop, layout, segmenter,
                                    tmp, opts, console)
            finally:
                segmenter.close()
        occlusion = mark_occluded(tracked.status, usable, cues, opts)
        check_enough(tracked.status, source, opts)
        fit = fit_head(tracked, crop, lm, fh, layout, opts)
        number_frames(tmp, usable, fit.kept)
        transforms = {
            "h": opts.size, "w": opts.size, "fx": fit.focal, "fy": fit.focal,
            "cx": fit.cx, "cy": fit.cy, **fit.exp_space,
            "frames": [{"img_id": j, "aud_id": int(i), "transform_matrix": fit.c2w[j].tolist(),
                        "exp_ori": fit.exp[j].round(6).tolist()}
                       for j, i in enumerate(fit.kept)],
            # the clip's mean face in the head frame: a shape prior for the head (training)
            "face_mesh": fit.face.round(5).tolist(),
        }
        (tmp / "transforms.json").write_text(json.dumps(transforms, indent=1))
        rel = fit.fit_error / np.maximum(face_heights(lm[fit.kept], layout), 1.0)
        report = build_report(source, opts, tracked, filled, crop, fit, rel, occlusion,
                              time.time() - t_start)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=1))
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
