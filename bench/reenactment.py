"""Cross-identity reenactment against ground truth: person A's avatar driven by person B.

    python bench/reenactment.py --out bench/results/reenact [--res 512] [--minutes 10]
        [--identity_a 1 --identity_b 2 --seed_a 0 --seed_b 5] [-- train.py options]

1. tools/make_synthetic.py makes A's training video (identity A, motion seed A), B's driving
   video (identity B, motion seed B) and the ground truth: A performing B's expressions and
   head motion (``--driver_seed``: B's motion about its mean pose put on A's mean pose).
2. tools/preprocess.py turns both videos into datasets in the named expression space.
3. train.py trains A's avatar (``--minutes`` of training steps, the schedule fitted to it),
   holding out A's last tenth, whose renders give A's own test PSNR (``self_test``): the
   reference of the driven frames' scores.
4. render.py drives it with B's dataset (``--driving --driving_pose``).
5. Each driving frame is scored against the ground truth frame (cropped and resized as A's
   dataset, composited on the renders' background with its mask): PSNR over the whole frame
   and over the mouth and eye regions (the ground truth's region maps). How far the avatar
   follows B is measured on the images: the mouth opening (the share of dark pixels in a box
   about the mouth) against B's true jaw control, and the eye closure (one minus the share of
   white, unsaturated pixels in boxes about the eyes, the sclera) against B's true blink, for
   the renders and, as the ceiling of these measures, for the ground truth.

Writes ``reenactment.json`` and ``strip.png`` (rows: B's frame, A's ground truth, the
render) to ``--out``; the datasets and the run go to ``--work`` (default ``<out>/work``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import commit, split_extra  # noqa: E402
from bench.face_measures import (  # noqa: E402
    box,
    corr,
    eye_boxes,
    eye_closure,
    mouth_opening,
    read_image,
)
from utils.cli import make_parser  # noqa: E402
from utils.regions import decode_regions  # noqa: E402
from utils.set_metrics import evaluate_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], log: Path) -> None:
    """Run a step in its own process; its output goes to ``log``; stop on failure."""
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, *cmd], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    print(f"{Path(cmd[0]).name}: {time.time() - t0:.0f} s (log {log})", flush=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")


def make_data(a: argparse.Namespace, work: Path) -> dict[str, Path]:
    """Videos, ground truth and the two preprocessed datasets."""
    p = {k: work / k for k in ("syn_a", "syn_b", "truth", "data_a", "data_b")}
    common = ["--res", str(a.res), "--novel_yaws", "", "--overwrite"]
    if not (p["syn_a"] / "video.mp4").is_file():
        _run(["tools/make_synthetic.py", str(p["syn_a"]), "--frames", str(a.frames_a), "--seed",
              str(a.seed_a), "--identity", str(a.identity_a), "--video", *common],
             work / "make_a.log")
    if not (p["syn_b"] / "video.mp4").is_file():
        _run(["tools/make_synthetic.py", str(p["syn_b"]), "--frames", str(a.frames_b), "--seed",
              str(a.seed_b), "--identity", str(a.identity_b), "--video", *common],
             work / "make_b.log")
    if not (p["truth"] / "transforms.json").is_file():
        _run(["tools/make_synthetic.py", str(p["truth"]), "--frames", str(a.frames_b), "--seed",
              str(a.seed_a), "--identity", str(a.identity_a), "--driver_seed", str(a.seed_b),
              "--pose_mean_frames", str(a.frames_a), *common], work / "make_truth.log")
    for k in ("a", "b"):
        if not (p[f"data_{k}"] / "transforms.json").is_file():
            _run(["tools/preprocess.py", str(p[f"syn_{k}"] / "video.mp4"), str(p[f"data_{k}"]),
                  "--size", str(a.size), "--quiet"], work / f"preprocess_{k}.log")
    return p


def train_and_drive(a: argparse.Namespace, extra: list[str], p: dict[str, Path], work: Path
                    ) -> Path:
    """Train A's avatar and render it driven by B; the folder of the driving renders."""
    run = work / "run_a"
    held = max(1, a.frames_a // 10)
    if not (run / "cfg_args").is_file():
        _run(["train.py", "-s", str(p["data_a"]), "-m", str(run), "--iterations",
              str(a.iterations), "--eval", "--test_frames", str(held), "--eval_frames",
              str(held), "--quiet", *(["--time_limit", str(a.minutes)] if a.minutes else []),
              *extra], work / "train.log")
    out = work / "render"
    # A's own held-out test frames: the reference of the driven mouth and eyes
    _run(["render.py", "-m", str(run), "-o", str(out), "--skip_train", "--no_video", "--quiet"],
         work / "render_test.log")
    _run(["render.py", "-m", str(run), "-o", str(out), "--skip_train", "--skip_test",
          "--driving", str(p["data_b"]), "--driving_pose", "--no_video", "--quiet",
          *(["--max_frames", str(a.max_frames)] if a.max_frames else [])], work / "render.log")
    (folder,) = sorted(out.glob("driving_*_pose/ours_*"))
    return folder / "renders"


def self_test(work: Path) -> dict:
    """PSNR of A's own held-out test frames, whole and in the mouth and eye regions."""
    (folder,) = sorted((work / "render" / "test").glob("ours_*"))
    means, _ = evaluate_dir(folder, None, torch.device("cpu"), quiet=True)
    regions = means.get("regions", {})
    return {"frames": len(list((folder / "renders").glob("*.png"))), "psnr": means["psnr"],
            "psnr_mouth": regions.get("mouth", {}).get("psnr"),
            "psnr_eyes": regions.get("eyes", {}).get("psnr")}


def _crop(img: np.ndarray, crop: dict, interp: int) -> np.ndarray:
    x0, y0, side, size = (int(crop[k]) for k in ("x0", "y0", "side", "size"))
    return cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size), interpolation=interp)


def _psnr(x: np.ndarray, y: np.ndarray, where: np.ndarray | None = None) -> float | None:
    d = (x.astype(np.float64) - y.astype(np.float64)) / 255.0
    if where is not None:
        if where.sum() < 16:
            return None
        d = d[where]
    mse = float(np.mean(d ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def score(p: dict[str, Path], renders: Path, out: Path, strip_frames: int = 6) -> dict:
    """Scores of the driving renders against the ground truth; writes the strip."""
    crop = json.loads((p["data_a"] / "preprocess_report.json").read_text())["crop"]
    crop_b = json.loads((p["data_b"] / "preprocess_report.json").read_text())["crop"]
    driven = json.loads((p["data_b"] / "transforms.json").read_text())["frames"]
    truth = json.loads((p["truth"] / "synthetic_gt.json").read_text())
    names = truth["control_names"]
    controls = np.array(truth["controls"])
    offset = truth["mask_offset"]
    files = sorted(renders.glob("*.png"))
    rows = []
    for k, f in enumerate(files):
        src = int(driven[k]["aud_id"])  # the source frame of B's video = the truth's frame
        render = read_image(f)
        gt = _crop(read_image(p["truth"] / "ori_imgs" / f"{src}.jpg"), crop, cv2.INTER_AREA)
        mask = _crop(read_image(p["truth"] / "mask" / f"{src + offset}.png", cv2.IMREAD_UNCHANGED),
                     crop, cv2.INTER_AREA).astype(np.float64)[..., None] / 255.0
        bg = render[0, 0].astype(np.float64)  # the renders' background colour
        gt = np.round(gt * mask + bg * (1 - mask)).astype(np.uint8)
        regions = decode_regions(_crop(read_image(p["truth"] / "regions" / f"{src}.png",
                                             cv2.IMREAD_UNCHANGED), crop, cv2.INTER_NEAREST))
        driver = _crop(read_image(p["syn_b"] / "ori_imgs" / f"{src}.jpg"), crop_b, cv2.INTER_AREA)
        rows.append({"src": src, "render": render, "gt": gt, "regions": regions,
                     "driver": driver})
    mouth_box = box(np.any([r["regions"]["mouth"] for r in rows], axis=0))
    eye_box = eye_boxes(np.any([r["regions"]["eyes"] for r in rows], axis=0))
    jaw = [controls[r["src"], names.index("jaw_open")] for r in rows]
    blink = [controls[r["src"], names.index("blink")] for r in rows]
    measures = {}
    for kind in ("render", "gt"):
        white = []
        for r in rows:
            white.append(1.0 - eye_closure(r[kind], eye_box, 1.0))
        open_share = float(np.percentile(white, 90))
        measures[kind] = {
            "mouth_opening": [mouth_opening(r[kind], mouth_box) for r in rows],
            "eye_closure": [eye_closure(r[kind], eye_box, open_share) for r in rows]}

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    result = {
        "frames": len(rows),
        "psnr": mean([_psnr(r["render"], r["gt"]) for r in rows]),
        "psnr_mouth": mean([_psnr(r["render"], r["gt"], r["regions"]["mouth"]) for r in rows]),
        "psnr_eyes": mean([_psnr(r["render"], r["gt"], r["regions"]["eyes"]) for r in rows]),
        "mouth_opening_vs_jaw": {k: corr(m["mouth_opening"], jaw) for k, m in measures.items()},
        "eye_closure_vs_blink": {k: corr(m["eye_closure"], blink) for k, m in measures.items()},
        "mouth_opening_render_vs_gt": corr(measures["render"]["mouth_opening"],
                                            measures["gt"]["mouth_opening"]),
        "per_frame": [{"source_frame": r["src"], "jaw_open": j, "blink": b,
                       "mouth_opening": {k: m["mouth_opening"][i] for k, m in measures.items()},
                       "eye_closure": {k: m["eye_closure"][i] for k, m in measures.items()}}
                      for i, (r, j, b) in enumerate(zip(rows, jaw, blink))],
    }
    picks = sorted({int(np.argmax(jaw)), int(np.argmax(blink)),
                    *np.linspace(0, len(rows) - 1, max(strip_frames - 2, 1)).astype(int)})
    strip = np.concatenate([np.concatenate([rows[i][k] for i in picks], axis=1)
                            for k in ("driver", "gt", "render")], axis=0)
    cv2.imwrite(str(out / "strip.png"), strip[..., ::-1])
    return result


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, allow_abbrev=False)
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON and the strip")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the videos, datasets and run (default <out>/work); steps "
                        "whose output is there already are not redone")
    p.add_argument("--res", type=int, default=512, help="synthetic video size in pixels")
    p.add_argument("--size", type=int, default=None,
                   help="dataset image size of tools/preprocess.py (default --res)")
    p.add_argument("--frames_a", type=int, default=600, help="frames of A's training video")
    p.add_argument("--frames_b", type=int, default=200, help="frames of B's driving video")
    p.add_argument("--identity_a", type=int, default=1, help="A's identity seed")
    p.add_argument("--identity_b", type=int, default=2, help="B's identity seed")
    p.add_argument("--seed_a", type=int, default=0, help="A's motion seed")
    p.add_argument("--seed_b", type=int, default=5, help="B's motion seed")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="training budget in minutes (0: no limit, --iterations only)")
    p.add_argument("--iterations", type=int, default=20000, help="train.py --iterations")
    p.add_argument("--max_frames", type=int, default=None, help="drive at most N frames")
    p.add_argument("--tag", default="", help="name of the run in the JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    own, extra = split_extra(argv)
    a = build_parser().parse_args(own)
    a.size = a.size or a.res
    out = a.out
    work = a.work or out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    p = make_data(a, work)
    renders = train_and_drive(a, extra, p, work)
    result = score(p, renders, out)
    result["self_test"] = self_test(work)
    reached = max(int(d.name.split("_")[-1]) for d in
                  (work / "run_a" / "point_cloud").glob("iteration_*"))
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    result = {"tag": a.tag, "commit": commit(), "options": options, "train_options": extra,
              "iterations_reached": reached, "seconds": round(time.time() - t0, 1), **result}
    (out / "reenactment.json").write_text(json.dumps(result, indent=1))
    keys = ("psnr", "psnr_mouth", "psnr_eyes", "mouth_opening_vs_jaw", "eye_closure_vs_blink",
            "self_test")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    print(f"wrote {out / 'reenactment.json'} and {out / 'strip.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
