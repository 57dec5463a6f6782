"""Render a trained avatar (ours or the original release's): test and train frames, a
novel-view orbit, or another subject's expressions (cross-reenactment), as PNGs and videos.

    python render.py -m output/<id> [--novel_view] [--driving data/<other>]

Options saved in ``<model>/cfg_args`` are used unless given again on the command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from arguments import (
    ModelParams,
    PipelineParams,
    add_release_compat,
    defaults,
    pop_release_compat,
    read_cfg_args,
    str2bool,
)
from gaussian_renderer import render, resolve_backend
from scene import Scene
from scene.cameras import Camera, orbit_cameras
from scene.cuda_graphs import RenderNetworks
from scene.gaussian_model import GaussianHead
from scene.model_io import load_model
from utils.errors import DatasetError, OptionError, run_cli
from utils.general_utils import configure_precision, resolve_device
from utils.io_utils import VideoWriter, to_uint8, write_png

RENDER_GROUPS = (ModelParams, PipelineParams)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
                   "the head (+15 to -15 degrees, at the dataset's camera distance)", **flag)
    r.add_argument("--novel_view_frames", type=int, default=100,
                   help="frames of the novel-view orbit")
    r.add_argument("--driving", default=None,
                   help="cross-reenactment: take expressions frame by frame from another "
                        "dataset's transforms.json (or its folder)")
    r.add_argument("--driving_pose", help="with --driving, also take the head poses from the "
                   "driving data (default: the test frames' poses, cycled)", **flag)
    r.add_argument("--max_frames", type=int, default=None,
                   help="render at most the first N frames of each set (quick previews)")
    r.add_argument("--fps", type=float, default=25.0, help="frame rate of the videos")
    r.add_argument("--no_video", help="write PNGs only", **flag)
    r.add_argument("--quiet", help="no progress bars", **flag)
    # the release's render.py options: --mode had one value, --warm_up is stored with our models
    add_release_compat(p, {"mode": str, "warm_up": int})
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


class _OrderedWriter:
    """Runs the file writing of rendered frames on one background thread, in submission
    order, so that PNG and video encoding overlap the rendering of the next frames. At most
    ``pending`` frames wait. After an error in the writer no further frame is written, and the
    error is raised in the caller at the next :meth:`submit` or at :meth:`close`."""

    def __init__(self, pending: int = 8):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-writer")
        self._futures: list = []
        self._pending = pending
        self._failed = False

    def _run(self, fn, args) -> None:
        if self._failed:
            return
        try:
            fn(*args)
        except BaseException:
            self._failed = True
            raise

    def submit(self, fn, *args) -> None:
        # collect finished frames (raising a writer error here) and wait while too many queue
        while self._futures and (self._futures[0].done()
                                 or len(self._futures) >= self._pending):
            self._futures.pop(0).result()
        self._futures.append(self._pool.submit(self._run, fn, args))

    def close(self) -> None:
        """Wait for every frame; raise the first writer error."""
        for f in self._futures:
            f.result()
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Drop frames not yet written and wait for the one being written."""
        self._failed = True
        self._pool.shutdown(wait=True, cancel_futures=True)


@torch.no_grad()
def render_cameras(model: GaussianHead, cams: list[Camera], out_dir: Path, name: str,
                   background: torch.Tensor, backend: str, device: torch.device,
                   gt_fn=None, fps: float = 25.0, video: bool = True, quiet: bool = False,
                   deform: bool = True, networks: RenderNetworks | None = None) -> Path:
    """Render cameras to ``out_dir/{renders,gt,depth}/%05d.png`` and ``<name>.mp4`` (plus a
    ground truth | render ``<name>_gt_render.mp4`` when ground truth exists). ``deform=False``
    renders the canonical Gaussians (a model saved before its deformation was trained).
    Files are written on a background thread while the next frames render. ``networks``
    (CUDA graphs of the per-frame networks) replaces ``model.derive`` where given."""
    renders, gts, depths = out_dir / "renders", out_dir / "gt", out_dir / "depth"
    for d in (renders, depths) + ((gts,) if gt_fn else ()):
        d.mkdir(parents=True, exist_ok=True)
    vid = VideoWriter(out_dir / f"{name}.mp4", fps) if video else None
    side = VideoWriter(out_dir / f"{name}_gt_render.mp4", fps) if video and gt_fn else None

    def write(idx: int, img: np.ndarray, depth: np.ndarray, gt: np.ndarray | None) -> None:
        write_png(renders / f"{idx:05d}.png", img)
        write_png(depths / f"{idx:05d}.png", depth)
        if vid:
            vid.append(img)
        if gt is not None:
            write_png(gts / f"{idx:05d}.png", gt)
            if side:
                side.append(np.concatenate([gt, img], axis=1))

    writer = _OrderedWriter()
    try:
        for idx, cam in enumerate(tqdm(cams, desc=f"Rendering {name}", disable=quiet)):
            if networks is not None and deform:
                g = networks.frame(cam.exp.to(device), cam.campos(device))
            else:
                g = model.derive(cam.exp.to(device), cam.campos(device), deform=deform)
            out = render(g, cam, background, model.cfg, model.active_sh_degree, backend)
            depth = out.depth[0]
            depth = to_uint8(depth / (depth.max() + 1e-5))
            img = to_uint8(out.image.clamp(0, 1))
            writer.submit(write, idx, img, depth, to_uint8(gt_fn(cam)) if gt_fn else None)
        writer.close()
    except BaseException as err:
        # drop the queued frames; the videos' temporary files are removed whatever happens
        try:
            writer.abort()
        finally:
            for w in (vid, side):
                if w:
                    try:
                        w.__exit__(type(err), err, None)
                    except Exception:  # the original error is the one to report
                        pass
        raise
    for w in (vid, side):
        if w:
            w.close()
    return out_dir


def render_novel_view(model: GaussianHead, scene: Scene, out_root: Path, iteration: int,
                      backend: str, device: torch.device, n_frames: int = 100,
                      fps: float = 25.0, video: bool = True, quiet: bool = False,
                      networks: RenderNetworks | None = None) -> Path:
    """The test expressions (train ones if there is no test set) seen from an orbit."""
    src = scene.test_cameras or scene.train_cameras
    cams = orbit_cameras([c.exp for c in src], scene.info.intrinsics, scene.camera_distance,
                         n_frames=n_frames)
    bg = torch.tensor(scene.background, device=device)
    return render_cameras(model, cams, Path(out_root) / "novel_view" / f"ours_{iteration}",
                          "novel_view", bg, backend, device, None, fps, video, quiet,
                          model.deforms_at(iteration), networks)


def driving_cameras(path: str, model: GaussianHead, scene: Scene, use_pose: bool
                    ) -> list[Camera]:
    from scene.dataset_readers import read_driving

    frames = read_driving(path)
    exp_dim = model.cfg.exp_dim
    if len(frames[0][1]) != exp_dim:
        raise DatasetError(f"--driving {path}: its expressions have {len(frames[0][1])} values "
                           f"but the model was trained with {exp_dim}. Fix: drive it with data "
                           "tracked by the same expression model (same exp_ori length).")
    poses = scene.test_cameras or scene.train_cameras
    cams = []
    for k, (c2w, exp) in enumerate(frames):
        pose = c2w if use_pose else poses[k % len(poses)].c2w_gl
        cams.append(Camera(uid=k, intr=scene.info.intrinsics, c2w_gl=pose,
                           exp=torch.from_numpy(exp)))
    return cams


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    for note in pop_release_compat(args):
        print(note)
    v = resolve_options(args)
    device = resolve_device(v["device"])
    backend = resolve_backend(v["backend"], device)
    if not v["source_path"] or not Path(v["source_path"]).is_dir():
        raise OptionError(f"the dataset {v['source_path']!r} named in cfg_args does not exist "
                          "here. Fix: pass -s with the dataset folder.")
    need_train = not v["skip_train"]
    scene = Scene(v["source_path"], test_frames=v["test_frames"], eval_frames=v["eval_frames"],
                  is_debug=v["is_debug"], only_head=v["only_head"], resolution=v["resolution"],
                  white_background=v["white_background"], load_train=need_train,
                  load_test=True)
    model, it = load_model(v["model_path"], v["iteration"], v["sh_degree"], device)
    model.eval()
    # the original release computed in fp32: its checkpoints render in fp32 whatever --precision
    precision = "fp32" if model.cfg.semantics == "release" else v["precision"]
    model.autocast_dtype = configure_precision(precision, device)
    # the fast path (not for the release's models): fused linear+ReLU layers (same function)
    # and the per-frame networks replayed from a CUDA graph
    fast = (device.type == "cuda" and model.cfg.semantics == "fixed"
            and v.get("fast_path", "auto") == "auto")
    model.fused = fast
    networks = RenderNetworks(model, graphs=True) if fast else None
    if model.cfg.exp_dim != scene.exp_dim:
        raise DatasetError(f"{v['source_path']} has expressions of {scene.exp_dim} values but "
                           f"the model expects {model.cfg.exp_dim}. Fix: pass -s with the "
                           "dataset the model was trained on.")
    out_root = _output_root(v)
    note = " (original release: legacy math)" if model.cfg.semantics == "release" else ""
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
                               device, gt_fn, deform=model.deforms_at(it), **common)
            print(f"{name}: {len(cams)} frames in {d}")
    if v["novel_view"]:
        d = render_novel_view(model, scene, out_root, it, backend, device,
                              v["novel_view_frames"], **common)
        print(f"novel view: {v['novel_view_frames']} frames in {d}")
    if v["driving"]:
        cams = driving_cameras(v["driving"], model, scene, v["driving_pose"])
        src = Path(v["driving"]).resolve()
        name = "driving_" + (src.parent.name if src.is_file() else src.name)
        name += "_pose" if v["driving_pose"] else ""
        d = render_cameras(model, cams, out_root / name / f"ours_{it}", name, bg, backend,
                           device, None, deform=model.deforms_at(it), **common)
        print(f"driving: {len(cams)} frames in {d}")
    return 0


if __name__ == "__main__":
    run_cli(main)
