"""The preprocessing report (preprocess_report.json beside the dataset) and its summary for
the terminal."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from preprocessing import occlusion as occ
from preprocessing.frame_selection import REASONS, Crop
from preprocessing.frames import FrameSource
from preprocessing.head_fit import HeadFit
from preprocessing.options import PreprocessOptions
from preprocessing.tracking import Tracked
from utils.errors import first_few

GENERATOR = "gaussianhead-open tools/preprocess.py"
VERSION = 2
REPORT_NAME = "preprocess_report.json"


def _stats(x: np.ndarray) -> dict:
    return {"median": float(np.median(x)), "p95": float(np.percentile(x, 95)),
            "max": float(np.max(x))}


def build_report(source: FrameSource, opts: PreprocessOptions, tracked: Tracked,
                 filled: list[int], crop: Crop, fit: HeadFit, rel: np.ndarray, occlusion: dict,
                 seconds: float) -> dict:
    """The report: frames kept, filled in and dropped (and why), crop, focal length, tracking
    quality (``rel``: fit error [K] in face heights), occlusion, options and run time."""
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
        "expression": fit.exp_info,
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
