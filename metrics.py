"""Image metrics of rendered sets against their ground truth, as 3DGS's metrics.py.

    python metrics.py -m output/<id> [output/<id2> ...]

For every ``<model>/<set>/ours_<N>/`` with ``renders/`` and ``gt/`` (written by render.py),
computes PSNR, SSIM, L1 and LPIPS (when its backbone weights are in the local torch cache;
otherwise it says why it is skipped) per frame and their means, and writes
``<model>/results.json`` (means) and ``<model>/per_view.json`` (per frame).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from utils.errors import OptionError, run_cli
from utils.general_utils import resolve_device
from utils.io_utils import atomic_write_json
from utils.metrics_utils import image_metrics, make_lpips, mean_metrics


def _read(path: Path) -> torch.Tensor:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OptionError(f"{path} cannot be read. Fix: render the set again with render.py.")
    return torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255


def evaluate_dir(method_dir: Path, lpips_fn, device: torch.device, quiet: bool = False
                 ) -> tuple[dict, dict]:
    """Means and per-frame metrics of one ``<set>/ours_<N>`` folder."""
    renders = sorted((method_dir / "renders").glob("*.png"))
    gt_dir = method_dir / "gt"
    rows, per_view = [], {}
    for r in tqdm(renders, desc=f"Metrics {method_dir}", disable=quiet):
        g = gt_dir / r.name
        if not g.is_file():
            raise OptionError(f"{g} is missing (the render {r} has no ground truth). Fix: "
                              "render the set again with render.py.")
        pred, gt = _read(r).to(device), _read(g).to(device)
        if pred.shape != gt.shape:
            raise OptionError(f"{r} and {g} differ in size.")
        m = image_metrics(pred, gt, lpips_fn)
        rows.append(m)
        per_view[r.name] = m
    return mean_metrics(rows), per_view


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    p.add_argument("-m", "--model_paths", nargs="+", required=True,
                   help="run folders (or render.py output folders) to evaluate")
    p.add_argument("--sets", nargs="+", default=["test"],
                   help="which rendered sets to evaluate (test, train, ...)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    p.add_argument("--lpips_net", default="auto", choices=("auto", "vgg", "alex"),
                   help="LPIPS backbone (auto: VGG if its weights are cached, else AlexNet)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    lpips_fn, note = make_lpips(device, args.lpips_net)
    print(note)
    for model in map(Path, args.model_paths):
        results, per_view = {}, {}
        for s in args.sets:
            for method_dir in sorted((model / s).glob("ours_*")):
                if not (method_dir / "renders").is_dir() or not (method_dir / "gt").is_dir():
                    continue
                key = f"{s}/{method_dir.name}"
                means, views = evaluate_dir(method_dir, lpips_fn, device, args.quiet)
                if not views:
                    continue
                results[key] = {**means, "frames": len(views)}
                per_view[key] = views
                print(f"{model} {key} ({len(views)} frames): " + ", ".join(
                    f"{k.upper()} {v:.4f}" for k, v in means.items()))
        if not results:
            raise OptionError(f"{model} holds no rendered set with renders/ and gt/ under "
                              f"{', '.join(args.sets)}/ours_*. Fix: run render.py -m {model} "
                              "first.")
        if lpips_fn is None:
            results["_note"] = note
        atomic_write_json(model / "results.json", results)
        atomic_write_json(model / "per_view.json", per_view)
    return 0


if __name__ == "__main__":
    run_cli(main)
