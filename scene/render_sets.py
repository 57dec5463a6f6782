"""Rendering whole sets of views to files: dataset frames (with ground truth), the novel-view
orbit and cross-reenactment, as PNGs and videos, written on a background thread."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from scene import Scene
from scene.cameras import Camera, orbit_cameras
from scene.dataset_readers import DatasetInfo, read_driving_set
from scene.expression_meta import check_mixable
from scene.gaussian_model import GaussianHead
from scene.novel_views import read_novel_views
from scene.rendering import RenderNetworks, colour_viewpoint, render_view
from utils.errors import DatasetError, OptionError
from utils.io_utils import VideoWriter, atomic_write_json, to_uint8, write_png
from utils.retarget import mean_pose, parse_gains, retarget_codes, retarget_poses

# half-width in degrees of render.py's --novel_view orbit (the original code's: 15)
NOVEL_VIEW_RANGE = 20.0


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
                   deform: bool = True, networks: RenderNetworks | None = None,
                   regions_fn=None, frames_info: list[dict] | None = None) -> Path:
    """Render cameras to ``out_dir/{renders,gt,depth}/%05d.png`` and ``<name>.mp4`` (plus a
    ground truth | render ``<name>_gt_render.mp4`` when ground truth exists). ``deform=False``
    renders the canonical Gaussians (a model saved before its deformation was trained).
    Files are written on a background thread while the next frames render. ``networks``
    (CUDA graphs of the per-frame networks) replaces ``model.derive`` where given.

    ``regions_fn(cam)``: the frame's region label map (or None), written to
    ``regions/%05d.png`` for metrics.py; ``frames_info``: one dict per camera (img_id, yaw of
    a novel view, ...), written to ``frames.json`` with each render's file name."""
    renders, gts, depths = out_dir / "renders", out_dir / "gt", out_dir / "depth"
    regions = out_dir / "regions"
    for d in (renders, depths) + ((gts,) if gt_fn else ()) + ((regions,) if regions_fn else ()):
        d.mkdir(parents=True, exist_ok=True)
    if frames_info is not None:
        atomic_write_json(out_dir / "frames.json", [
            {"file": f"{k:05d}.png", **info} for k, info in enumerate(frames_info)])
    vid = VideoWriter(out_dir / f"{name}.mp4", fps) if video else None
    side = VideoWriter(out_dir / f"{name}_gt_render.mp4", fps) if video and gt_fn else None

    def write(idx: int, img: np.ndarray, depth: np.ndarray, gt: np.ndarray | None,
              labels: np.ndarray | None) -> None:
        write_png(renders / f"{idx:05d}.png", img)
        write_png(depths / f"{idx:05d}.png", depth)
        if labels is not None:
            write_png(regions / f"{idx:05d}.png", labels)
        if vid:
            vid.append(img)
        if gt is not None:
            write_png(gts / f"{idx:05d}.png", gt)
            if side:
                side.append(np.concatenate([gt, img], axis=1))

    writer = _OrderedWriter()
    try:
        for idx, cam in enumerate(tqdm(cams, desc=f"Rendering {name}", disable=quiet)):
            view = colour_viewpoint(model, cam, device)
            if networks is not None and deform:
                g = networks.frame(cam.exp.to(device), view)
            else:
                g = model.derive(cam.exp.to(device) if deform else None, view)
            g = model.with_body(g, cam.capture(device))
            out = render_view(model, g, cam, background, backend)
            depth = out.depth[0]
            depth = to_uint8(depth / (depth.max() + 1e-5))
            img = to_uint8(out.image.clamp(0, 1))
            writer.submit(write, idx, img, depth, to_uint8(gt_fn(cam)) if gt_fn else None,
                          regions_fn(cam) if regions_fn else None)
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
                      networks: RenderNetworks | None = None,
                      yaw_range: float = NOVEL_VIEW_RANGE) -> Path:
    """The test expressions (train ones if there is no test set) seen from an orbit from
    +``yaw_range`` to -``yaw_range`` degrees about the head's vertical axis."""
    src = scene.test_cameras or scene.train_cameras
    cams = orbit_cameras([c.exp for c in src], scene.info.intrinsics, scene.camera_distance,
                         n_frames=n_frames, start_deg=yaw_range, end_deg=-yaw_range,
                         captures=[c.c2w_gl for c in src])
    bg = torch.tensor(scene.background, device=device)
    return render_cameras(model, cams, Path(out_root) / "novel_view" / f"ours_{iteration}",
                          "novel_view", bg, backend, device, None, fps, video, quiet,
                          model.deforms_at(iteration), networks)


def render_novel_ground_truth(model: GaussianHead, scene: Scene, out_root: Path,
                              iteration: int, backend: str, device: torch.device,
                              fps: float = 25.0, video: bool = True, quiet: bool = False,
                              networks: RenderNetworks | None = None) -> Path | None:
    """The dataset's novel views with ground truth (``<dataset>/novel/``, see
    :mod:`scene.novel_views`) into ``novel/ours_N/`` with gt/, regions/ and frames.json (the
    yaw of each view), for metrics.py; None where the dataset has none."""
    info = scene.info
    novel = read_novel_views(info.root, scene.resolution, scene.background, info.exp_dim)
    if novel is None:
        return None
    bg = torch.tensor(scene.background, device=device)
    return render_cameras(model, novel.cameras, Path(out_root) / "novel" / f"ours_{iteration}",
                          "novel", bg, backend, device, novel.gt, fps, video, quiet,
                          model.deforms_at(iteration), networks, regions_fn=novel.regions,
                          frames_info=novel.frames_info)


@dataclass
class Driving:
    """What drives the avatar: one pose (camera-to-head, OpenGL axes) and expression per frame,
    and where they come from."""

    path: Path  # the driver's transforms.json
    c2w: list[np.ndarray]  # [4, 4] each
    exps: np.ndarray  # [F, E] float32
    retargeted: bool  # named codes moved from the driver's neutral onto the avatar's


def plan_driving(path: str | Path, info: DatasetInfo, exp_dim: int, use_pose: bool,
                 gains: str | None = None, max_frames: int | None = None) -> Driving:
    """The driving frames for an avatar trained on ``info`` with expressions of ``exp_dim``
    values: the first ``max_frames`` (all by default) of the driver's. In a shared named space
    the codes are retargeted (utils/retarget.py, ``gains``: "1.2" or "jawOpen=1.2,..."); unnamed
    expressions of the same length are taken as they are. Poses: the driver's change from its
    mean pose put on the avatar's mean pose (``use_pose``), else the avatar's test frames'
    (train frames' without a test set), cycled. Raises DatasetError / OptionError for data
    that cannot drive the avatar."""
    tpath, frames, driver = read_driving_set(path)
    avatar = info.expression
    check_mixable(avatar, info.root / "transforms.json", info.exp_dim, driver, tpath,
                  len(frames[0][1]))
    if len(frames[0][1]) != exp_dim:
        raise DatasetError(f"--driving {path}: its expressions have {len(frames[0][1])} values "
                           f"but the model was trained with {exp_dim}. Fix: drive it with data "
                           "tracked by the same expression model (same exp_ori length).")
    exps = np.stack([e for _, e in frames]).astype(np.float32)
    if avatar.named:
        try:
            gain = parse_gains(gains, avatar.names)
        except ValueError as err:
            raise OptionError(f"--driving_gain: {err}.") from None
        exps = retarget_codes(exps, driver.neutral, avatar.neutral, gain)
    elif gains not in (None, ""):
        raise OptionError(f"--driving_gain needs named expressions (exp_names), which "
                          f"{info.root / 'transforms.json'} has not. Fix: drop --driving_gain, "
                          "or preprocess the videos with --expression named.")
    n = len(frames) if max_frames is None else min(max_frames, len(frames))
    if use_pose:
        c2w = np.stack([c for c, _ in frames])
        avatar_mean = mean_pose(np.stack([f.c2w for f in info.frames]))
        poses = list(retarget_poses(c2w, mean_pose(c2w), avatar_mean)[:n])
    else:
        own = info.test_frames or info.train_frames
        poses = [own[k % len(own)].c2w for k in range(n)]
    return Driving(path=tpath, c2w=poses, exps=exps[:n], retargeted=avatar.named)


def driving_cameras(driving: Driving, scene: Scene) -> list[Camera]:
    """Cameras of the driving frames at the avatar's intrinsics (the body placed by each
    frame's own pose, as in training)."""
    return [Camera(intr=scene.info.intrinsics, c2w_gl=c2w, exp=torch.from_numpy(exp))
            for c2w, exp in zip(driving.c2w, driving.exps)]
