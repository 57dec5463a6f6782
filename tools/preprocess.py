"""Make a dataset from a talking-head video or a folder of frames, offline.

    python tools/preprocess.py INPUT OUT [--size 512] [--expression named|pca] [--focal PX] ...

Writes OUT/transforms.json, ori_imgs/, mask/, parsing/, regions/ and preprocess_report.json
in the released layout (see scene/dataset_readers.py), ready for ``train.py -s OUT``. Needs the
preprocessing packages (requirements-preprocess.txt, installed into .ppdeps by
tools/setup.sh); training and rendering do not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arguments import str2bool  # noqa: E402
from preprocessing.pipeline import (  # noqa: E402
    EXPRESSION_MODES,
    OCCLUSION_MODES,
    PreprocessOptions,
    preprocess,
    summary,
)
from utils.cli import make_parser  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    d = PreprocessOptions()
    p = make_parser(__doc__)
    p.add_argument("input", type=Path, help="video file (anything OpenCV decodes: mp4, avi, "
                   "mov, ...) or folder of frames (jpg/png, in natural name order)")
    p.add_argument("out", type=Path, help="output dataset folder: new, empty, or an earlier "
                   "output of this tool (replaced)")
    p.add_argument("--size", type=int, default=d.size, help="output image width and height")
    p.add_argument("--expression", choices=EXPRESSION_MODES, default=d.expression,
                   help="expression vectors (exp_ori): 'named', the person-independent code "
                        "of named coefficients (jawOpen, eyeBlinkLeft, ...; docs/reenactment.md) "
                        "that lets one person drive another's avatar; 'pca', the main axes of "
                        "this clip's own landmark motion (--exp_dim of them)")
    p.add_argument("--exp_dim", type=int, default=d.exp_dim,
                   help="length of the expression vectors with --expression pca")
    p.add_argument("--focal", type=float, default=None,
                   help="focal length in source-frame pixels, if known (default: estimated "
                        "from the landmarks, or a 40-degree field of view if the head turns "
                        "too little to tell)")
    p.add_argument("--crop_scale", type=float, default=d.crop_scale,
                   help="side of the square crop, in face heights (forehead to chin)")
    p.add_argument("--smooth", type=int, default=d.smooth,
                   help="window in frames (made odd) of the zero-lag head-pose smoothing (0: off)")
    p.add_argument("--max_gap", type=int, default=d.max_gap,
                   help="fill in runs of at most this many failed frames by interpolation "
                        "(longer runs are dropped)")
    p.add_argument("--min_kept", type=float, default=d.min_kept,
                   help="stop with an error when fewer than this fraction of frames is usable")
    p.add_argument("--max_frames", type=int, default=None,
                   help="read only the first N frames")
    p.add_argument("--jpeg_quality", type=int, default=d.jpeg_quality,
                   help="quality of ori_imgs/*.jpg")
    p.add_argument("--min_confidence", type=float, default=d.min_confidence,
                   help="face detection and tracking confidence of the landmark model")
    p.add_argument("--occlusion", choices=OCCLUSION_MODES, default=d.occlusion,
                   help="frames where a hand or an object covers the face or lies in the person "
                        "mask: drop them, or keep them (reported either way)")
    p.add_argument("--occlusion_threshold", type=float, default=d.occlusion_threshold,
                   help="occluded area, as a fraction of the face's area, that flags a frame")
    p.add_argument("--decontaminate", nargs="?", const=True, type=str2bool,
                   default=d.decontaminate, metavar="true|false",
                   help="replace the colour of the soft mask edges by the person's own colour "
                        "(the background's share removed)")
    p.add_argument("--quiet", nargs="?", const=True, type=str2bool, default=False,
                   metavar="true|false", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = PreprocessOptions(
        size=args.size, expression=args.expression, exp_dim=args.exp_dim, focal=args.focal,
        crop_scale=args.crop_scale,
        smooth=args.smooth, max_gap=args.max_gap, min_kept=args.min_kept,
        max_frames=args.max_frames, jpeg_quality=args.jpeg_quality,
        min_confidence=args.min_confidence, occlusion=args.occlusion,
        occlusion_threshold=args.occlusion_threshold, decontaminate=args.decontaminate,
        quiet=args.quiet)
    report = preprocess(args.input, args.out, opts)
    print(summary(report, args.out))
    return 0


if __name__ == "__main__":
    run_cli(main)
