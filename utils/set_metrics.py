"""Metrics of rendered sets (``<run>/<set>/ours_N/{renders,gt}``, as render.py writes them):
whole frames, regions (``regions/``) and novel-view yaws (``frames.json``). metrics.py is its
command line; the benchmarks use it too."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from utils.errors import OptionError, first_few
from utils.metrics_utils import (
    MIN_REGION_PIXELS,
    image_metrics,
    mean_metrics,
    region_metrics,
)
from utils.regions import REGIONS, decode_regions

REGION_NOTE = (
    f"regions: metrics within each region of <set>/ours_N/regions/ (utils/regions.py); a "
    f"region with fewer than {MIN_REGION_PIXELS} pixels in a frame is left out of that frame; "
    "frames: how many frames a mean covers. PSNR from the MSE over the region's pixels, L1 "
    "their mean absolute error, SSIM and LPIPS the means of the SSIM map and of lpips's spatial "
    "map over them. yaw: the same per novel-view yaw of frames.json."
)
FIX_RENDER = "Fix: render the set again with render.py."


def _read(path: Path) -> torch.Tensor:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OptionError(f"{path} cannot be read. {FIX_RENDER}")
    return torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255


def _read_regions(path: Path, shape: tuple[int, int], device: torch.device
                  ) -> dict[str, torch.Tensor]:
    """Boolean masks [H, W] by region name of a region label map."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise OptionError(f"{path} is missing or cannot be read (every render needs its region "
                          f"map when regions/ exists). {FIX_RENDER}")
    if labels.shape[:2] != shape:
        raise OptionError(f"{path} is {labels.shape[1]}x{labels.shape[0]}, its render "
                          f"{shape[1]}x{shape[0]}. {FIX_RENDER}")
    return {k: torch.from_numpy(m).to(device) for k, m in decode_regions(labels).items()}


def _read_frames_json(path: Path, names: list[str]) -> dict[str, dict]:
    """The entries of frames.json by render file name, checked against the renders."""
    fix = f"{FIX_RENDER} Or delete {path} to score the set without yaw groups."
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise OptionError(f"{path} is not readable JSON ({err}). {fix}") from None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str) for e in entries):
        raise OptionError(f'{path} must be a list of {{"file": "00000.png", "img_id": ..., '
                          f'"yaw_deg": ...}} entries, one per render. {fix}')
    by_file = {e["file"]: e for e in entries}
    for e in entries:
        yaw = e.get("yaw_deg")
        if yaw is not None and not (isinstance(yaw, (int, float)) and math.isfinite(yaw)):
            raise OptionError(f"{path}: {e['file']} has yaw_deg {yaw!r}, not a number. {fix}")
    missing = sorted(set(names) - set(by_file))
    extra = sorted(set(by_file) - set(names))
    if missing or extra or len(entries) != len(by_file):
        what = (f"has no entry for {first_few(missing)} of renders/" if missing else
                f"lists {first_few(extra)}, which renders/ lacks" if extra else
                "lists a file twice")
        raise OptionError(f"{path} {what}; it must list every render once. {fix}")
    return by_file


def yaw_key(yaw: float) -> str:
    """Group name of a yaw in degrees: 15 -> '+15', -30 -> '-30', 7.5 -> '+7.5'."""
    return f"{float(yaw):+g}"


def summarize(views: list[dict]) -> dict:
    """Means over per-frame metrics: the whole frame, and each region over the frames that
    hold it (``frames``: how many frames a mean covers)."""
    out = {**mean_metrics(views), "frames": len(views)}
    if any("regions" in v for v in views):
        out["regions"] = {}
        for name in REGIONS:
            rows = [v["regions"][name] for v in views if name in v.get("regions", {})]
            if rows:
                out["regions"][name] = {**mean_metrics(rows), "frames": len(rows)}
    return out


def evaluate_dir(method_dir: Path, lpips_fn, device: torch.device, quiet: bool = False
                 ) -> tuple[dict, dict]:
    """Means and per-frame metrics of one ``<set>/ours_<N>`` folder (see :func:`summarize`;
    with frames.json also ``yaw``: the same by yaw group)."""
    renders = sorted((method_dir / "renders").glob("*.png"))
    gt_dir, regions_dir = method_dir / "gt", method_dir / "regions"
    frames_json = method_dir / "frames.json"
    info = (_read_frames_json(frames_json, [r.name for r in renders])
            if frames_json.is_file() else {})
    per_view = {}
    for r in tqdm(renders, desc=f"Metrics {method_dir}", disable=quiet):
        g = gt_dir / r.name
        if not g.is_file():
            raise OptionError(f"{g} is missing (the render {r} has no ground truth). "
                              f"{FIX_RENDER}")
        pred, gt = _read(r).to(device), _read(g).to(device)
        if pred.shape != gt.shape:
            raise OptionError(f"{r} and {g} differ in size.")
        m = image_metrics(pred, gt, lpips_fn)
        if regions_dir.is_dir():
            masks = _read_regions(regions_dir / r.name, tuple(pred.shape[1:]), device)
            m["regions"] = region_metrics(pred, gt, masks, lpips_fn)
        entry = info.get(r.name, {})
        m.update({k: entry[k] for k in ("img_id", "yaw_deg") if entry.get(k) is not None})
        per_view[r.name] = m
    views = list(per_view.values())
    means = summarize(views)
    groups = defaultdict(list)
    for v in views:
        if "yaw_deg" in v:
            groups[v["yaw_deg"]].append(v)
    if groups:
        means["yaw"] = {yaw_key(y): summarize(groups[y]) for y in sorted(groups)}
    return means, per_view


def find_sets(model: Path) -> list[str]:
    """Names of the set folders under a run with at least one ours_*/{renders,gt}."""
    return sorted(d.name for d in model.iterdir()
                  if d.is_dir() and any(is_rendered(m) for m in d.glob("ours_*")))


def is_rendered(method_dir: Path) -> bool:
    return (method_dir / "renders").is_dir() and (method_dir / "gt").is_dir()
