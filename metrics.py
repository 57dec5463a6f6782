"""Image metrics of rendered sets against their ground truth, as 3DGS's metrics.py.

    python metrics.py -m output/<id> [output/<id2> ...] [--sets test novel]

For every ``<model>/<set>/ours_<N>/`` with ``renders/`` and ``gt/`` (written by render.py; by
default every set found), computes PSNR, SSIM, L1 and LPIPS (when its backbone weights are in
the torch cache or can be downloaded there; otherwise it says why it is skipped) per frame and
their means, and writes ``<model>/results.json`` (means; ``"_lpips": {"available", "note"}``
says whether LPIPS ran) and ``<model>/per_view.json`` (per frame).

With ``ours_<N>/regions/`` (one bit-flag label map per render, utils/regions.py) the metrics
are also computed within each region (head, neck, torso, mouth, eyes); with
``ours_<N>/frames.json`` (``[{"file", "img_id", "yaw_deg"}, ...]``) also per novel-view yaw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from utils.cli import make_parser
from utils.errors import OptionError, run_cli
from utils.execution import resolve_device
from utils.io_utils import atomic_write_json
from utils.metrics_utils import METRICS, make_lpips
from utils.set_metrics import REGION_NOTE, evaluate_dir, find_sets, is_rendered


def _fmt(m: dict) -> str:
    return ", ".join(f"{k.upper()} {m[k]:.4f}" for k in METRICS if k in m)


def _report(model: Path, key: str, means: dict) -> None:
    print(f"{model} {key} ({means['frames']} frames): {_fmt(means)}")
    for name, m in means.get("regions", {}).items():
        print(f"    {name:<6} ({m['frames']} frames): {_fmt(m)}")
    for yaw, m in means.get("yaw", {}).items():
        print(f"  yaw {yaw} ({m['frames']} frames): {_fmt(m)}")


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, allow_abbrev=False)
    p.add_argument("-m", "--model_paths", nargs="+", required=True,
                   help="run folders (or render.py output folders) to evaluate")
    p.add_argument("--sets", nargs="+", default=None,
                   help="which rendered sets to evaluate (default: every set folder with "
                        "ours_*/renders and gt, e.g. test, train, novel)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    p.add_argument("--lpips_net", default="auto", choices=("auto", "vgg", "alex"),
                   help="LPIPS backbone (auto: VGG, else AlexNet where VGG's weights can't be had)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    lpips_fn, note = make_lpips(device, args.lpips_net)
    print(note)
    for model in map(Path, args.model_paths):
        if not model.is_dir():
            raise OptionError(f"{model} is not a folder. Fix: pass a run folder written by "
                              "train.py / render.py.")
        results, per_view = {}, {}
        sets = args.sets if args.sets is not None else find_sets(model)
        for s in sets:
            for method_dir in sorted((model / s).glob("ours_*")):
                if not is_rendered(method_dir):
                    continue
                key = f"{s}/{method_dir.name}"
                means, views = evaluate_dir(method_dir, lpips_fn, device, args.quiet)
                if not views:
                    continue
                results[key] = means
                per_view[key] = views
                _report(model, key, means)
        if not results:
            where = f"{', '.join(sets)}/ours_*" if args.sets else "<set>/ours_*"
            raise OptionError(f"{model} holds no rendered set with renders/ and gt/ under "
                              f"{where}. Fix: run render.py -m {model} first.")
        results["_lpips"] = {"available": lpips_fn is not None, "note": note}
        if any("regions" in v or "yaw" in v for v in results.values() if isinstance(v, dict)):
            results["_regions_note"] = REGION_NOTE
        atomic_write_json(model / "results.json", results)
        atomic_write_json(model / "per_view.json", per_view)
    return 0


if __name__ == "__main__":
    run_cli(main)
