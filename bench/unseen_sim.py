"""What removing the head Gaussians no training frame sees would do to a trained run, without
training again: the test frames and the dataset's novel views (``DIR/novel/``, every yaw)
scored with those Gaussians made transparent, for several thresholds of ``--unseen_prune``.
It also says where the turned views' spill comes from: the share of the blending weight that
lands outside the ground truth's silhouette (its white background) drawn by head Gaussians
that the frame's own capture view does not see.

    python bench/unseen_sim.py RUN_DIR DATA_DIR [--thresholds 0.06 0.6 6] [--views 64]
        [--test_every 4] [--resolution 128]

Writes one JSON line per threshold to stdout (threshold in millionths of the frame, Gaussians
kept, PSNR of the test frames and of each novel yaw).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene import Scene  # noqa: E402
from scene.cameras import Camera  # noqa: E402
from scene.gaussian_model import FrameGaussians  # noqa: E402
from scene.novel_views import read_novel_views  # noqa: E402
from scene.rendering import colour_viewpoint, render_view  # noqa: E402
from scene.run_folder import available_iterations, load_model  # noqa: E402
from training.visibility import blending_weights, frame_weights, pick_views  # noqa: E402
from utils.cli import make_parser  # noqa: E402


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def main(argv: list[str] | None = None) -> int:
    ap = make_parser(__doc__)
    ap.add_argument("run", help="a kept run folder (bench/fidelity.py --keep_runs, train.py -m)")
    ap.add_argument("data", help="its dataset folder, with novel/ for the turned views")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.06, 0.6, 6.0],
                    help="the --unseen_prune values to try, in millionths of the frame")
    ap.add_argument("--views", type=int, default=64,
                    help="training frames looked through (--unseen_views)")
    ap.add_argument("--test_frames", type=int, default=40,
                    help="the dataset's last N frames are the test frames (as trained)")
    ap.add_argument("--test_every", type=int, default=4, help="score every N-th test frame")
    ap.add_argument("--resolution", type=int, default=128,
                    help="the training resolution (train.py's --resolution)")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "gsplat" if dev.type == "cuda" else "torch"
    it = available_iterations(Path(args.run))[-1]
    model, _ = load_model(args.run, it, device=dev)
    scene = Scene(args.data, test_frames=args.test_frames, eval_frames=args.test_frames,
                  resolution=args.resolution, workers=2)
    nv = read_novel_views(args.data, args.resolution, (1.0, 1.0, 1.0), model.cfg.exp_dim)
    nh = model.num_gaussians
    white = torch.ones(3, device=dev)
    train = scene.train_cameras
    views = [train[i] for i in pick_views(train, args.views)]
    weight = blending_weights(model, views, it, backend, dev)
    area = views[0].width * views[0].height

    def frame(cam: Camera, hide: torch.Tensor | None = None) -> FrameGaussians:
        with torch.no_grad():
            g = model.with_body(model.derive(cam.exp.to(dev), colour_viewpoint(model, cam, dev)),
                                cam.capture(dev))
        if hide is not None:
            op = g.opacities.clone()
            op[:nh][hide] = 0.0
            g = FrameGaussians(means=g.means, opacities=op, sh=g.sh, quats=g.quats,
                               scales=g.scales, covars=g.covars)
        return g

    if nv is not None:  # where the 30-degree views' spill comes from
        spill = hidden = 0.0
        for cam, info in zip(nv.cameras, nv.frames_info):
            if abs(info["yaw_deg"] or 0) < 30:
                continue
            outside = (nv.gt(cam).to(dev).amin(0) > 0.98).float()
            g = frame(cam)
            w_out = frame_weights(model, g, cam, backend, dev, outside)[:nh]
            capture = Camera(intr=cam.intr, c2w_gl=np.asarray(cam.capture_c2w), exp=cam.exp,
                             capture_c2w=cam.capture_c2w)
            w_cap = frame_weights(model, g, capture, backend, dev)[:nh]
            spill += float(w_out.sum())
            hidden += float(w_out[w_cap < 0.6e-6 * area].sum())
        print(json.dumps({"iteration": it, "head_gaussians": nh,
                          "spill_share_hidden_in_capture_view": round(hidden / max(spill, 1e-9),
                                                                      3)}))
    for thr in [0.0] + list(args.thresholds):
        hide = weight < thr * 1e-6 * area if thr > 0 else None
        with torch.no_grad():
            res = {"threshold": thr, "kept": nh - (0 if hide is None else int(hide.sum()))}
            test = [_psnr(render_view(model, frame(c, hide), c, white, backend).image.clamp(0, 1),
                          scene.images.get(c.image_slot, dev))
                    for c in scene.test_cameras[::args.test_every]]
            res["test"] = round(float(np.mean(test)), 2)
            if nv is not None:
                by: dict[float, list[float]] = {}
                for c, info in zip(nv.cameras, nv.frames_info):
                    img = render_view(model, frame(c, hide), c, white, backend).image.clamp(0, 1)
                    by.setdefault(info["yaw_deg"], []).append(_psnr(img, nv.gt(c).to(dev)))
                res.update({f"{k:+g}": round(float(np.mean(v)), 2) for k, v in sorted(by.items())})
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
