"""Fidelity on a dataset for a training-time budget: whole-frame and per-region metrics of the
test frames, of training frames and of the dataset's novel views, and a contact sheet.

    python bench/fidelity.py --data DIR [--minutes 5] [--seed 0] [--tag NAME] \
        [--test_frames 100] [-- extra train.py options]

Trains with train.py's defaults (plus the extra options) until its --iterations or for
``--minutes`` of training steps, whichever comes first (the first gsplat compile and the
evaluation are not counted), then renders the test frames, every k-th training frame and the
novel views with ground truth (``DIR/novel/``) and scores them as metrics.py does. Writes to
``--out`` (default bench/results/): ``<date>_<device>_<commit>_fidelity_<tag>.json`` and a
contact sheet ``..._sheet.png`` (ground truth | render | error, error scaled x4, for a few
test frames and the novel views, every yaw, of two source frames) and an orbit strip
``..._orbit.png`` (the first and the last test expression seen from -45 to +45 degrees about
the head, with no ground truth: floaters and holes show there first).
"""

from __future__ import annotations

import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arguments import ModelParams, OptimizationParams, PipelineParams, defaults  # noqa: E402
from bench.common import commit, device_name, split_extra, sync  # noqa: E402
from scene.cameras import orbit_cameras  # noqa: E402
from scene.render_sets import render_cameras, render_novel_ground_truth  # noqa: E402
from scene.run_folder import model_file_sizes, save_model  # noqa: E402
from scene.yaw_split import YawSplit, describe, write_yaw_split  # noqa: E402
from training.launch import build_parser  # noqa: E402
from training.trainer import Trainer  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.io_utils import atomic_write_json, write_png  # noqa: E402
from utils.metrics_utils import make_lpips  # noqa: E402
from utils.set_metrics import evaluate_dir  # noqa: E402

GROUPS = (ModelParams, OptimizationParams, PipelineParams)
ORBIT_YAWS = [-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0]


def train_for(args, extra: list[str], run: Path, split: YawSplit | None = None) -> Trainer:
    """A Trainer of ``extra`` options on ``args.data`` (or its yaw ``split``, written beside
    ``run``), trained for the budget."""
    values = defaults(*GROUPS)
    data, held = ((args.data, args.test_frames) if split is None else
                  (str(run.parent / "data"), split.held_out))
    values.update(vars(build_parser().parse_args([
        "-s", data, "-m", str(run), "--eval", "--test_frames", str(held),
        "--eval_frames", str(held), "--seed", str(args.seed), *extra])))
    t = Trainer(ModelParams.from_dict(values), OptimizationParams.from_dict(values),
                PipelineParams.from_dict(values), test_iterations=[], save_iterations=[],
                seed=args.seed, quiet=True, tensorboard=False, log=lambda *a: None)
    with torch.no_grad():  # compile the rasterizer's kernels before the clock starts
        t.render_camera(t.scene.train_cameras[0], 0)
    sync(t.device)
    t.test_iterations, t.save_iterations = [], []
    t.run(time_limit=None if args.minutes is None else 60.0 * args.minutes)
    return t


def render_sets(t: Trainer, out: Path, train_every: int, split: YawSplit | None = None
                ) -> dict[str, Path]:
    """The test frames, every ``train_every``-th training frame and the novel views, with
    ground truth and regions, in ``out/<set>/ours_N``; with a yaw ``split``, its turned frames
    as the set ``turned`` apart from the test frames."""
    it, m, dev = t.last_iteration, t.model, t.device
    m.eval()
    gt = lambda cam: t.scene.gt(cam, "cpu")  # noqa: E731
    sets = {}
    groups = [("test", t.scene.test_cameras), ("train", t.scene.train_cameras[::train_every])]
    if split is not None:
        turned = set(split.turned)
        groups = [("test", [c for c in t.scene.test_cameras if c.img_id not in turned]),
                  ("turned", [c for c in t.scene.test_cameras if c.img_id in turned]),
                  groups[1]]
    for name, cams in groups:
        sets[name] = render_cameras(
            m, cams, out / name / f"ours_{it}", name, t.background, t.backend, dev, gt,
            video=False, quiet=True, deform=m.deforms_at(it), regions_fn=t.scene.regions,
            frames_info=[{"img_id": c.img_id} | ({} if split is None else
                                                  {"yaw_from_median": split.yaw[c.img_id]})
                         for c in cams])
    novel = render_novel_ground_truth(m, t.scene, out, it, t.backend, dev, video=False,
                                      quiet=True)
    if novel is not None:
        sets["novel"] = novel
    return sets


def contact_sheet(sets: dict[str, Path], rows: int, cell: int, sources: int = 2
                  ) -> np.ndarray:
    """Rows of ground truth | render | |error| x 4 for ``rows`` test frames (and as many turned
    frames of a yaw split), then the novel views (every yaw) of ``sources`` source frames;
    every image scaled to ``cell`` pixels high."""
    picks = []
    for name, n in (("test", rows), ("turned", rows)):
        if name not in sets:
            continue
        files = sorted((sets[name] / "renders").glob("*.png"))
        for k in np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int):
            picks.append((sets[name], files[k].name, f"{name} {k}"))
    if "novel" in sets:
        frames = json.loads((sets["novel"] / "frames.json").read_text())
        ids = list(dict.fromkeys(f["source_img_id"] for f in frames))
        chosen = [ids[k] for k in np.linspace(0, len(ids) - 1, min(sources, len(ids))
                                              ).round().astype(int)]
        picks += [(sets["novel"], f["file"], f"frame {f['source_img_id']} yaw {f['yaw_deg']:+g}")
                  for src in chosen for f in frames if f["source_img_id"] == src]
    out = []
    for folder, name, label in picks:
        g = cv2.imread(str(folder / "gt" / name))
        r = cv2.imread(str(folder / "renders" / name))
        err = np.clip(np.abs(g.astype(np.int16) - r.astype(np.int16)).max(-1) * 4, 0, 255)
        e = cv2.applyColorMap(err.astype(np.uint8), cv2.COLORMAP_INFERNO)
        out.append(_labelled(np.concatenate([g, r, e], axis=1), cell, label))
    return cv2.cvtColor(np.concatenate(out, axis=0), cv2.COLOR_BGR2RGB)


def orbit_strip(t: Trainer, out: Path, yaws: list[float], cell: int) -> np.ndarray:
    """Two test expressions (the first and the last test frame, each with its capture pose for
    the body) seen from cameras at ``yaws`` degrees about the head's vertical axis: one row
    each, RGB."""
    m, it = t.model, t.last_iteration
    src = t.scene.test_cameras or t.scene.train_cameras
    rows = []
    for k, cam in enumerate((src[0], src[-1])):
        cams = [orbit_cameras([cam.exp], t.scene.info.intrinsics, t.scene.camera_distance,
                              n_frames=1, start_deg=y, end_deg=y, captures=[cam.c2w_gl])[0]
                for y in yaws]
        d = render_cameras(m, cams, out / f"orbit{k}", "orbit", t.background, t.backend,
                           t.device, video=False, quiet=True, deform=m.deforms_at(it))
        imgs = [_labelled(cv2.imread(str(d / "renders" / f"{i:05d}.png")), cell, f"{y:+g}")
                for i, y in enumerate(yaws)]
        rows.append(np.concatenate(imgs, axis=1))
    return cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_BGR2RGB)


def _labelled(img: np.ndarray, cell: int, label: str) -> np.ndarray:
    img = cv2.resize(img, (round(img.shape[1] * cell / img.shape[0]), cell),
                     interpolation=cv2.INTER_AREA)
    cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
    return img


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_extra(argv)
    p = make_parser(__doc__)
    p.add_argument("--data", required=True, help="dataset folder (transforms.json layout)")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="training-time budget (default 5; 0: train.py's --iterations only)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the run")
    p.add_argument("--test_frames", type=int, default=100,
                   help="the last N frames are held out and scored")
    p.add_argument("--train_every", type=int, default=10,
                   help="score every N-th training frame (the fit to the training data)")
    p.add_argument("--sheet_rows", type=int, default=4, help="test frames on the sheet")
    p.add_argument("--sheet_cell", type=int, default=256, help="row height of the sheet")
    p.add_argument("--yaw_split", default=None, metavar="DEG|auto",
                   help="train only on frames whose head yaw is within DEG degrees of the "
                   "clip's median, and score the frames turned further as the set 'turned' "
                   "beside the test frames (the last --test_frames within the range); auto: "
                   "the 15%% of frames turned most are held out")
    p.add_argument("--tag", default="", help="label in the results' file names")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder")
    p.add_argument("--keep_runs", default=None, metavar="DIR",
                   help="keep the trained run (a run folder render.py and viewer.py open) as "
                   "DIR/<tag> instead of deleting it; an existing folder there is replaced")
    args = p.parse_args(argv)
    args.minutes = args.minutes or None
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        split = None
        if args.yaw_split is not None:
            limit = None if args.yaw_split == "auto" else float(args.yaw_split)
            split = write_yaw_split(args.data, Path(tmp) / "data", limit, args.test_frames)
            print(describe(split))
        t = train_for(args, extra, run, split)
        lpips_fn, lpips_note = make_lpips(t.device)
        sets = render_sets(t, run, args.train_every, split)
        metrics = {name: evaluate_dir(d, lpips_fn, t.device, quiet=True)[0]
                   for name, d in sets.items()}
        save_model(run, t.model, t.last_iteration, t.scene.mean_campos())
        sizes = model_file_sizes(run, t.last_iteration)
        sheet = contact_sheet(sets, args.sheet_rows, args.sheet_cell)
        orbit = orbit_strip(t, run, ORBIT_YAWS, args.sheet_cell // 2)
        if args.keep_runs:
            kept = Path(args.keep_runs) / (args.tag or "run")
            shutil.rmtree(kept, ignore_errors=True)
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(run, kept)
            print(f"kept the run in {kept}")
    m = t.model
    result = {
        "date": datetime.date.today().isoformat(), "device": device_name(t.device),
        "commit": commit(), "data": str(args.data), "seed": args.seed,
        "extra_flags": extra, "minutes": args.minutes, "iterations": t.last_iteration,
        "iterations_planned": t.opt.iterations, "train_seconds": t.train_seconds,
        "its_per_s": t.last_iteration / max(t.train_seconds, 1e-9),
        "gaussians": m.num_gaussians,
        "body_gaussians": None if m.body is None else m.body.num_gaussians,
        "resolution": f"{t.scene.info.intrinsics.width}x{t.scene.info.intrinsics.height}",
        "train_frames": len(t.scene.train_cameras), "test_frames": len(t.scene.test_cameras),
        "lpips": lpips_note, "perceptual_loss": t.vgg_note,
        # the objective: results trained without the VGG term are not comparable with those
        # trained with it
        "vgg_term": t.vgg is not None, "model_bytes": sizes,
        "model_mb": sum(sizes.values()) / 1e6, "metrics": metrics,
        "wall_seconds": time.time() - t0,
    }
    if split is not None:
        result["yaw_split"] = {"max_yaw": split.max_yaw, "train": len(split.train),
                               "test": len(split.test), "turned": len(split.turned),
                               "summary": describe(split)}
    out = Path(args.out)
    name = (f"{result['date']}_{t.device.type}_{result['commit']}_fidelity"
            + (f"_{args.tag}" if args.tag else ""))
    atomic_write_json(out / f"{name}.json", result)
    write_png(out / f"{name}_sheet.png", sheet)
    write_png(out / f"{name}_orbit.png", orbit)
    print(f"{name}: {t.last_iteration} iterations in {t.train_seconds:.0f} s "
          f"({result['its_per_s']:.1f} it/s), {m.num_gaussians} Gaussians"
          + (f" + {m.body.num_gaussians} body" if m.body is not None else "")
          + f", {result['model_mb']:.1f} MB on disk")
    for set_name, means in metrics.items():
        regions = ", ".join(f"{k} {v['psnr']:.2f}" for k, v in means.get("regions", {}).items())
        yaws = ", ".join(f"{k} {v['psnr']:.2f}" for k, v in means.get("yaw", {}).items())
        print(f"  {set_name:6s} PSNR {means['psnr']:.2f} SSIM {means['ssim']:.4f} "
              f"L1 {means['l1']:.4f}" + (f" | {regions}" if regions else "")
              + (f" | yaw {yaws}" if yaws else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
