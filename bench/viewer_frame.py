"""Benchmark: the live viewer's frame time at browser page sizes, without the browser.

    python bench/viewer_frame.py -m output/<id> [--sizes 1280x720 1920x1080] [--frames 100]

Loads the run as ``viewer.py`` does and renders through the viewer's own path
(:class:`scene.live_view.LiveAvatar`: networks, rasterization, the copy of the uint8 image to
the host) from cameras orbiting the head, at each page size, in two cases:

- **orbit**: the expression stays, only the camera moves (the frame's Gaussians are reused);
- **expression**: every frame has a new expression (a slider moved, or the timeline plays), so
  the networks run too.

Reports the median and 90th percentile of the frame time (ms) and the frames per second, as
JSON under ``bench/results/`` and one markdown line per size. The viewer itself adds viser's
JPEG encoding and the transfer to the browser, which depend on the network.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import commit, device_name  # noqa: E402
from scene.export import check_expression_size, read_run_dataset, run_options  # noqa: E402
from scene.live_view import LiveAvatar, dataset_sets, view_intrinsics  # noqa: E402
from scene.run_folder import is_release_run, load_model  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.errors import OptionError, run_cli  # noqa: E402
from utils.execution import resolve_execution  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 16 or int(h) < 16:
        raise OptionError(f"--sizes: expected WIDTHxHEIGHT of at least 16x16, got {text!r}")
    return int(w), int(h)


def turned(c2w: np.ndarray, centre: np.ndarray, yaw: float) -> np.ndarray:
    """The camera ``c2w`` [4, 4] turned by ``yaw`` radians about the head's vertical axis
    through ``centre`` [3]."""
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.eye(4)
    rot[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
    rot[:3, 3] = centre - rot[:3, :3] @ centre
    return rot @ np.asarray(c2w, np.float64)


def time_frames(avatar: LiveAvatar, size: tuple[int, int], frames: int, change_expression: bool,
                rng: np.random.Generator, warmup: int = 5) -> dict:
    """Frame times (ms) of ``frames`` renders at ``size`` from cameras orbiting ±30° about the
    head, a new random expression each frame where ``change_expression``."""
    intr = view_intrinsics(avatar.fov_y, *size)
    base = avatar.mean_camera
    times = []
    for k in range(warmup + frames):
        yaw = 30.0 * math.sin(2.0 * math.pi * k / max(frames, 1))
        pose = turned(base, avatar.orbit_centre, math.radians(yaw))
        if change_expression:
            avatar.randomize(rng)
        img, seconds = avatar.render(pose, intr)
        if img.shape[:2] != (size[1], size[0]):
            raise RuntimeError(f"rendered {img.shape[:2]}, expected {size[::-1]}")
        if k >= warmup:
            times.append(1000.0 * seconds)
    times.sort()
    median = statistics.median(times)
    return {"median_ms": round(median, 3),
            "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3),
            "fps": round(1000.0 / median, 1), "frames": len(times)}


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, allow_abbrev=False)
    p.add_argument("-m", "--model_path", required=True, help="run folder (output/<id>)")
    p.add_argument("-s", "--source_path", default=None,
                   help="the run's dataset (default: the one named in the run's cfg_args)")
    p.add_argument("--iteration", type=int, default=-1, help="-1 = the latest saved")
    p.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"],
                   help="page sizes WIDTHxHEIGHT")
    p.add_argument("--frames", type=int, default=100, help="timed frames per size and case")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="random seed of the expressions timed")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder")
    p.add_argument("--tag", default="", help="label added to the results file name")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes]
    if args.frames < 1:
        raise OptionError(f"--frames {args.frames}: pass 1 or more.")
    split = {"source_path": args.source_path, "test_frames": None, "eval_frames": None}
    white = run_options(args.model_path, **split)["white_background"]
    ex = resolve_execution(args.device, "auto", "fp32", "off",
                           exact=is_release_run(args.model_path))
    model, it = load_model(args.model_path, args.iteration, device=ex.device)
    model.eval()
    info = read_run_dataset(args.model_path, **split)
    check_expression_size(model, info)
    avatar = LiveAvatar(model, it, info, ex.backend, dataset_sets(info),
                        background=(1.0, 1.0, 1.0) if white else (0.0, 0.0, 0.0))
    rng = np.random.default_rng(args.seed)
    result = {"device": device_name(ex.device), "backend": ex.backend,
              "date": datetime.date.today().isoformat(), "commit": commit(),
              "model_path": str(args.model_path), "iteration": it,
              "gaussians": avatar.num_gaussians(), "sizes": {}}
    for size in sizes:
        key = f"{size[0]}x{size[1]}"
        result["sizes"][key] = {
            "orbit": time_frames(avatar, size, args.frames, False, rng),
            "expression": time_frames(avatar, size, args.frames, True, rng)}
        o, e = result["sizes"][key]["orbit"], result["sizes"][key]["expression"]
        print(f"| {result['device']} | {ex.backend} | {result['gaussians']} | {key} | "
              f"orbit {o['median_ms']:.2f} ms ({o['fps']:.0f} fps) | expression "
              f"{e['median_ms']:.2f} ms ({e['fps']:.0f} fps) |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = "cpu" if ex.device.type == "cpu" else "gpu"
    name = f"{result['date']}_{dev}_{result['commit']}_viewer{'_' + args.tag if args.tag else ''}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
