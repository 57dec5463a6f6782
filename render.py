"""Render a trained avatar (ours or the original release's): test and train frames, a
novel-view orbit, or another subject's expressions (cross-reenactment), as PNGs and videos.

    python render.py -m output/<id> [--novel_view] [--driving data/<other>]

Options saved in ``<model>/cfg_args`` are used unless given again on the command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from arguments import (
    ModelParams,
    PipelineParams,
    add_compat_options,
    defaults,
    pop_compat_options,
    str2bool,
)
from scene import Scene
from scene.render_sets import (
    NOVEL_VIEW_RANGE,
    driving_cameras,
    plan_driving,
    render_cameras,
    render_novel_ground_truth,
    render_novel_view,
)
from scene.rendering import RenderNetworks
from scene.run_folder import is_release_run, load_model, read_cfg_args
from utils.cli import make_parser
from utils.errors import DatasetError, OptionError, run_cli
from utils.execution import resolve_execution

RENDER_GROUPS = (ModelParams, PipelineParams)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, allow_abbrev=False)
    for g in RENDER_GROUPS:
        g.add_to(p)
    r = p.add_argument_group("Render")
    r.add_argument("--iteration", type=int, default=-1,
                   help="iteration to render (every component); -1 = the latest saved")
    r.add_argument("-o", "--output_dir", default=None,
                   help="where to write (default: the model folder, as the release)")
    flag = {"nargs": "?", "const": True, "type": str2bool, "default": False,
            "metavar": "true|false"}
    r.add_argument("--skip_train", help="do not render the training frames", **flag)
    r.add_argument("--skip_test", help="do not render the test frames", **flag)
    r.add_argument("--novel_view", help="render the test expressions from a camera orbiting "
                   "the head (+R to -R degrees, R = --novel_view_range, at the dataset's "
                   "camera distance), and the dataset's novel views with ground truth where it "
                   "has them (novel/)", **flag)
    r.add_argument("--novel_view_frames", type=int, default=100,
                   help="frames of the novel-view orbit")
    r.add_argument("--novel_view_range", type=float, default=NOVEL_VIEW_RANGE,
                   help="half-width of the orbit in degrees about the head's vertical axis. The "
                   "default is what an avatar from a monocular video holds well (a few tens of "
                   "degrees of head turn in the video, the turned views measured in "
                   "docs/benchmarks.md); larger ranges show the sides of the head and body "
                   "that the video never filmed, e.g. 45")
    r.add_argument("--driving", default=None,
                   help="cross-reenactment: take expressions frame by frame from another "
                        "dataset's transforms.json (or its folder). In the named space of "
                        "tools/preprocess.py (exp_names) they are retargeted: the avatar's "
                        "neutral code + gain x the driver's change from its own neutral")
    r.add_argument("--driving_pose", help="with --driving, also take the head motion from the "
                   "driving data: its change from its mean pose, put on the avatar's mean pose "
                   "(default: the avatar's test frames' poses, cycled)", **flag)
    r.add_argument("--driving_gain", default=None, metavar="G|NAME=G,...",
                   help="with --driving in a named space: gain on the driver's expression "
                        "change, one for all coefficients (e.g. 1.2) or per coefficient "
                        "(e.g. jawOpen=1.2,eyeBlinkLeft=1.0; the others 1)")
    r.add_argument("--max_frames", type=int, default=None,
                   help="render at most the first N frames of each set, the driving frames "
                        "included (quick previews)")
    r.add_argument("--fps", type=float, default=25.0, help="frame rate of the videos")
    r.add_argument("--no_video", help="write PNGs only", **flag)
    r.add_argument("--quiet", help="no progress bars", **flag)
    # the release's render.py options: --mode had one value, --warm_up is stored with our models
    add_compat_options(p, {"mode": str, "warm_up": int})
    return p


def resolve_options(args: dict) -> dict:
    """defaults <- the run's cfg_args <- options given on the command line."""
    values = defaults(*RENDER_GROUPS)
    if not args.get("model_path"):
        raise OptionError("pass -m with the run folder to render (output/<id>).")
    saved = read_cfg_args(args["model_path"])
    values.update({k: v for k, v in saved.items() if k in values})
    values.update(args)
    return values


def _output_root(values: dict) -> Path:
    out = Path(values["output_dir"] or values["model_path"])
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise OptionError(f"{out} is not writable. Fix: pass -o with a folder to write the "
                          "renders to.")
    return out


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    for note in pop_compat_options(args):
        print(note)
    v = resolve_options(args)
    if not v["source_path"] or not Path(v["source_path"]).is_dir():
        raise OptionError(f"the dataset {v['source_path']!r} named in cfg_args does not exist "
                          "here. Fix: pass -s with the dataset folder.")
    need_train = not v["skip_train"]
    # the original release computed in fp32, unfused: its checkpoints render that way
    ex = resolve_execution(v["device"], v["backend"], v["precision"], v["fast_path"],
                           exact=is_release_run(v["model_path"]))
    scene = Scene(v["source_path"], test_frames=v["test_frames"], eval_frames=v["eval_frames"],
                  is_debug=v["is_debug"], only_head=v["only_head"], resolution=v["resolution"],
                  white_background=v["white_background"], load_train=need_train,
                  load_test=True)
    model, it = load_model(v["model_path"], v["iteration"], device=ex.device,
                           autocast_dtype=ex.autocast_dtype, fused=ex.fused)
    model.eval()
    device, backend = ex.device, ex.backend
    networks = RenderNetworks(model, graphs=True) if ex.graphs else None
    if model.cfg.exp_dim != scene.exp_dim:
        raise DatasetError(f"{v['source_path']} has expressions of {scene.exp_dim} values but "
                           f"the model expects {model.cfg.exp_dim}. Fix: pass -s with the "
                           "dataset the model was trained on.")
    if (v["driving_pose"] or v["driving_gain"]) and not v["driving"]:
        raise OptionError("--driving_pose and --driving_gain need --driving.")
    if v["max_frames"] is not None and v["max_frames"] < 1:
        raise OptionError(f"--max_frames must be at least 1, got {v['max_frames']}.")
    # checked before anything is written
    driving = (plan_driving(v["driving"], scene.info, model.cfg.exp_dim, v["driving_pose"],
                            v["driving_gain"], v["max_frames"]) if v["driving"] else None)
    out_root = _output_root(v)
    note = " (original release: its own math)" if is_release_run(v["model_path"]) else ""
    print(f"Rendering {v['model_path']} iteration {it}{note}, {model.num_gaussians} Gaussians, "
          f"backend {backend} on {device}; writing to {out_root}")
    bg = torch.tensor(scene.background, device=device)
    common = {"fps": v["fps"], "video": not v["no_video"], "quiet": v["quiet"],
              "networks": networks}
    if not model.deforms_at(it):
        print(f"note: iteration {it} precedes the deformation network's training (from "
              f"iteration {model.cfg.deform_from}): rendering the canonical head")

    def gt_fn(cam):
        return scene.gt(cam, "cpu")

    sets = []
    if need_train:
        sets.append(("train", scene.train_cameras))
    if not v["skip_test"]:
        sets.append(("test", scene.test_cameras))
    for name, cams in sets:
        cams = cams[: v["max_frames"]] if v["max_frames"] else cams
        if cams:
            d = render_cameras(model, cams, out_root / name / f"ours_{it}", name, bg, backend,
                               device, gt_fn, deform=model.deforms_at(it), **common,
                               regions_fn=scene.regions,
                               frames_info=[{"img_id": c.img_id} for c in cams])
            print(f"{name}: {len(cams)} frames in {d}")
    if v["novel_view"]:
        d = render_novel_view(model, scene, out_root, it, backend, device,
                              v["novel_view_frames"], **common,
                              yaw_range=v["novel_view_range"])
        print(f"novel view: {v['novel_view_frames']} frames from {v['novel_view_range']:+g} to "
              f"{-v['novel_view_range']:+g} degrees in {d}")
        d = render_novel_ground_truth(model, scene, out_root, it, backend, device, **common)
        if d is not None:
            print(f"novel views with ground truth (the dataset's novel/): {d}")
    if driving is not None:
        cams = driving_cameras(driving, scene)
        name = "driving_" + driving.path.resolve().parent.name
        name += "_pose" if v["driving_pose"] else ""
        if driving.retargeted:
            print(f"driving: named expressions retargeted from {driving.path}")
        d = render_cameras(model, cams, out_root / name / f"ours_{it}", name, bg, backend,
                           device, None, deform=model.deforms_at(it), **common)
        print(f"driving: {len(cams)} frames in {d}")
    return 0


if __name__ == "__main__":
    run_cli(main)
