"""Export a trained avatar's Gaussians to the standard 3DGS PLY or the web viewers' .splat.

    python tools/export.py -m output/<id> -o head.ply                  # canonical, with body
    python tools/export.py -m output/<id> -o frame.splat --frame 120   # one dataset frame
    python tools/export.py -m output/<id> -o frames/ --frames 0:100    # a folder of frames

The canonical Gaussians are those of the saved point_cloud.ply (undeformed, coloured for the
mean training camera) joined by the body at the mean training camera's pose; a frame's are
deformed by its expression and joined by the body at its capture pose (scene/export.py).
Colours are those the model renders: SH bands not yet trained at the iteration are zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene.export import (  # noqa: E402
    FORMATS,
    GaussianArrays,
    check_expression_size,
    frame_gaussians,
    mean_pose,
    read_run_dataset,
    write_file,
)
from scene.run_folder import is_release_run, load_model  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.errors import OptionError, run_cli  # noqa: E402
from utils.execution import resolve_execution  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, allow_abbrev=False)
    p.add_argument("-m", "--model_path", required=True, help="run folder (output/<id>)")
    p.add_argument("-o", "--output", required=True,
                   help="file to write (.ply or .splat); with --frames a folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--frame", type=int, default=None,
                       help="export dataset frame N (its position in transforms.json): its "
                            "expression and capture pose (default: the canonical Gaussians)")
    which.add_argument("--frames", default=None, metavar="A:B",
                       help="export frames A to B-1 (either may be left out), one file each "
                            "(<output>/NNNNN.<format>)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="file format (default: from the -o suffix; ply for a folder)")
    p.add_argument("--iteration", type=int, default=-1,
                   help="iteration to export; -1 = the latest saved")
    p.add_argument("-s", "--source_path", default=None,
                   help="the run's dataset (default: the one named in the run's cfg_args)")
    p.add_argument("--test_frames", type=int, default=None,
                   help="the last N frames are the held-out ones (default: the run's setting)")
    p.add_argument("--eval_frames", type=int, default=None,
                   help="the last N of the held-out frames form the test set (default: the "
                        "run's setting)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda or cuda:N")
    return p


def parse_range(text: str, n: int) -> range:
    """'A:B' (either side optional, Python slice semantics) -> frame indices in [0, n)."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a, b = (int(x) if x.strip() else None for x in parts)
    except ValueError:
        raise OptionError(f"--frames {text!r} is not A:B (e.g. 0:100, or 50: for frame 50 on)"
                          ) from None
    r = range(n)[slice(a, b)]
    if not r:
        raise OptionError(f"--frames {text} selects no frame of the {n} in the dataset.")
    return r


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    ex = resolve_execution(args.device, "auto", "fp32", "off",
                           exact=is_release_run(args.model_path))
    model, it = load_model(args.model_path, args.iteration, device=ex.device)
    model.eval()
    info = read_run_dataset(args.model_path, source_path=args.source_path,
                            test_frames=args.test_frames, eval_frames=args.eval_frames)
    check_expression_size(model, info)
    deform = model.deforms_at(it)
    n = len(info.frames)

    def frame_arrays(k: int) -> GaussianArrays:
        f = info.frames[k]
        c2w = torch.tensor(f.c2w, dtype=torch.float32)
        exp = torch.from_numpy(f.exp) if deform else None
        g = frame_gaussians(model, exp, c2w[:3, 3], c2w)
        return GaussianArrays.from_frame(g, model.active_sh_degree)

    if args.frames is not None:
        frames = parse_range(args.frames, n)
        if out.suffix.lower() in (".ply", ".splat"):
            raise OptionError(f"--frames writes one file per frame into a folder; -o {out} "
                              "names a file. Fix: pass -o with a folder name.")
        fmt = args.format or "ply"
        for k in frames:
            write_file(out / f"{k:05d}.{fmt}", frame_arrays(k), fmt)
        print(f"wrote {len(frames)} frames ({frames.start} to {frames.stop - 1}) of "
              f"{args.model_path} iteration {it} as .{fmt} into {out}")
        return 0
    if args.frame is not None:
        if not 0 <= args.frame < n:
            raise OptionError(f"--frame {args.frame}: the dataset {info.root} has frames 0 to "
                              f"{n - 1}.")
        g = frame_arrays(args.frame)
        what = f"frame {args.frame} (img_id {info.frames[args.frame].img_id})"
    else:
        pose = mean_pose([f.c2w for f in info.train_frames])
        c2w = torch.tensor(pose, dtype=torch.float32)
        g = GaussianArrays.from_frame(frame_gaussians(model, None, c2w[:3, 3], c2w),
                                      model.active_sh_degree)
        what = "the canonical Gaussians"
    if not deform and args.frame is not None:
        print(f"note: iteration {it} precedes the deformation network's training: the frame's "
              "Gaussians are the canonical ones")
    path = write_file(out, g, args.format)
    body = f" ({model.num_gaussians} head + {len(g) - model.num_gaussians} body)" if (
        model.body is not None) else ""
    print(f"wrote {what} of {args.model_path} iteration {it}: {len(g)} Gaussians{body} to "
          f"{path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
