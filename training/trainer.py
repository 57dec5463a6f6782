"""The training loop: data, model, optimizers, densification, evaluation and checkpoints.

``train.py`` only parses options and calls :class:`Trainer`. Order of work:

1. read and check the whole dataset (images decoded) - nothing is written before this;
2. build (or, with ``--resume``, restore) the model, optimizers and densification state;
3. write the run folder (cfg_args, model_meta.json, cameras.json, input.ply);
4. train; at ``--test_iterations`` evaluate, at ``--save_iterations`` (and on Ctrl-C) save the
   release-layout model and a resumable checkpoint, each file atomically.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from arguments import ModelParams, OptimizationParams, PipelineParams, write_cfg_args
from gaussian_renderer import RenderOutput, means2d_grad, render, resolve_backend
from scene import Scene
from scene.cameras import Camera
from scene.cuda_graphs import FrameNetworks, TrainingLoss
from scene.densification import Densifier, DensifyConfig, check_optimizer_layout
from scene.gaussian_model import SH_DEGREE_INTERVAL, GaussianHead, ModelConfig
from scene.model_io import save_model, write_meta
from scene.optimizers import FusedAdam, SphereAdam, load_as_built
from utils.errors import CheckpointError, OptionError, TrainingDiverged
from utils.general_utils import configure_precision, expon_lr, resolve_device, seed_everything
from utils.graphics_utils import bounding_sphere
from utils.io_utils import atomic_torch_save, atomic_write_json
from utils.loss_utils import make_perceptual_loss
from utils.metrics_utils import image_metrics, make_lpips, mean_metrics

with warnings.catch_warnings():  # geoopt 0.5 calls the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    import geoopt

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 2  # 2: model_config carries derivation_coords (version 1: "v1")
EVAL_LOG = "eval_log.json"


class CameraSampler:
    """Visits every training camera once per epoch in a random order (seeded, resumable)."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> int:
        if not self.order:
            self.order = torch.randperm(self.n, generator=self.gen).tolist()
        return self.order.pop()

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": list(self.order)}

    def load_state_dict(self, sd: dict) -> None:
        self.gen.set_state(sd["gen"])
        self.order = list(sd["order"])


class Trainer:
    def __init__(self, data: ModelParams, opt: OptimizationParams, pipe: PipelineParams, *,
                 test_iterations: list[int], save_iterations: list[int], seed: int = 0,
                 quiet: bool = False, checkpoint: dict | None = None,
                 tensorboard: bool = True,
                 log=print):
        self.data, self.opt, self.pipe = data, opt, pipe
        # as asked (kept in the checkpoint for --resume)
        self.asked_iterations = {"test_iterations": list(test_iterations),
                                 "save_iterations": list(save_iterations)}
        # with --eval the last iteration is always evaluated, as it is always saved
        self.test_iterations = sorted(set(test_iterations) | ({opt.iterations} if data.eval
                                                              else set()))
        self.save_iterations = sorted(set(save_iterations) | {opt.iterations})
        self.seed = seed
        self.quiet = quiet
        self.log = log
        self.device = resolve_device(pipe.device)
        self.backend = resolve_backend(pipe.backend, self.device)
        self.autocast_dtype = configure_precision(pipe.precision, self.device)
        # the fast path: CUDA graphs for the per-frame networks and the loss, fused MLP layers,
        # fused Adam
        self.graphs = self.device.type == "cuda" and pipe.fast_path == "auto"
        self.fast_optimizers = self.graphs  # scene.optimizers (fused Adam kernels)
        _check_options(opt)
        if not data.source_path:
            raise OptionError("no dataset given. Fix: pass -s data/<id> (a folder with "
                              "transforms.json).")
        seed_everything(seed)

        # 1. the dataset, fully checked before anything is written
        self.scene = Scene(
            data.source_path, test_frames=data.test_frames, eval_frames=data.eval_frames,
            is_debug=data.is_debug, only_head=data.only_head, resolution=data.resolution,
            white_background=data.white_background, load_test=data.eval,
        )
        for note in self.scene.info.notes:
            self.log(f"[data] {note}")
        self.log(f"[data] {len(self.scene.train_cameras)} training frames, "
                 f"{len(self.scene.test_cameras)} test frames, "
                 f"{self.scene.info.intrinsics.width}x{self.scene.info.intrinsics.height}, "
                 f"expression size {self.scene.exp_dim}")
        if self.device.type == "cuda":
            self.scene.images.to(self.device)
        self.background = torch.tensor(self.scene.background, device=self.device)

        self.model_path = Path(data.model_path or Path("output") / uuid.uuid4().hex[:10])
        ckpt = checkpoint  # --resume: read by the caller with read_checkpoint
        if ckpt is None and (self.model_path / CHECKPOINT).exists():
            raise OptionError(f"{self.model_path} already holds a run ({CHECKPOINT}). Fix: pass "
                              "--resume to continue it, or another -m for a new run.")

        # 2. model, optimizers, densification
        init_note = None
        if ckpt is None:
            xyz, init_note = self.scene.initial_points(data.init_points, seed)
            # tri-plane coordinates are normalised to the head's bounding sphere (from the
            # initial points) so that the planes' resolution covers the head
            center, radius = bounding_sphere(xyz)
            cfg = ModelConfig(
                exp_dim=self.scene.exp_dim, sh_degree=data.sh_degree,
                num_derivations=data.num_derivations, triplane_res=data.triplane_res,
                triplane_channels=data.triplane_channels, center=center, radius=radius,
                deform_from=opt.warm_up,
            )
        else:
            cfg = ModelConfig.from_dict(ckpt["model_config"])
        self.cfg = cfg
        self.model = GaussianHead(cfg).to(self.device)
        self.model.autocast_dtype = self.autocast_dtype
        self.model.fused = self.graphs
        if ckpt is None:
            gen = torch.Generator().manual_seed(seed)
            self.model.init_from_points(xyz, gen)
            self.init_xyz = xyz
        self._build_optimizers()
        self.densifier = Densifier(
            DensifyConfig(
                grad_threshold=opt.densify_grad_threshold, percent_dense=opt.percent_dense,
                min_opacity=opt.min_opacity, max_screen_size=opt.max_screen_size,
                interval=opt.densification_interval, start=opt.densify_from_iter,
                stop=opt.densify_until_iter, size_prune_after=opt.opacity_reset_interval,
            ),
            self.model.num_gaussians, self.device,
        )
        self.sampler = CameraSampler(len(self.scene.train_cameras), seed)
        self.vgg, self.vgg_note = make_perceptual_loss(opt.lambda_vgg, self.device)
        self.loss_fn = TrainingLoss(opt.lambda_dssim, opt.lambda_vgg, self.vgg, self.graphs)
        self.frame_networks = FrameNetworks(self.model, self.graphs)
        self.lpips_fn, self.lpips_note = make_lpips(self.device)
        self.start_iteration = 1
        self.last_saved: int | None = None
        self.loss_log: list[tuple[int, float]] = []  # (iteration, total loss) every 10
        if ckpt is not None:
            self._restore(ckpt)

        # 3. the run folder
        self.model_path.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            write_cfg_args(self.model_path, self.cfg_args())
            write_meta(self.model_path, self.cfg)
            self.scene.write_cameras_json(self.model_path / "cameras.json")
            _write_input_ply(self.model_path / "input.ply", self.init_xyz)
        self.log(f"[run] output folder {self.model_path}; device {self.device}, backend "
                 f"{self.backend}; {self.model.num_gaussians} Gaussians"
                 + (f" ({init_note})" if init_note else ""))
        self.log(f"[run] VGG perceptual loss {self.vgg_note}; {self.lpips_note}")
        self.tb = _tensorboard(self.model_path) if tensorboard else None

    # ------------------------------------------------------------------ setup helpers
    def cfg_args(self) -> dict:
        """What goes into cfg_args (the release's keys first, then ours)."""
        d = self.data.to_dict()
        d["model_path"] = str(self.model_path)
        d["source_path"] = str(Path(d["source_path"]).resolve())
        d["perceptual_loss"] = self.vgg_note if hasattr(self, "vgg_note") else None
        d["backend"] = self.pipe.backend
        return d

    def _build_optimizers(self) -> None:
        self.optimizers, self.schedules = build_optimizers(self.model, self.opt,
                                                           self.fast_optimizers)
        self.opt_gauss, self.opt_deriv, self.opt_net = self.optimizers

    def _set_learning_rates(self, iteration: int) -> None:
        for opt in self.optimizers:
            for g in opt.param_groups:
                sched = self.schedules.get(g["name"])
                if sched is not None:
                    g["lr"] = sched(iteration)

    # ------------------------------------------------------------------ one iteration
    def render_camera(self, cam: Camera, iteration: int) -> RenderOutput:
        _, _, campos, exp = cam.tensors(self.device, self.cfg.centred_principal_point)
        g = self.model.derive(exp, campos, deform=self.model.deforms_at(iteration))
        return self._render(g, cam)

    def _render(self, g, cam: Camera) -> RenderOutput:
        return render(g, cam, self.background, self.cfg, self.model.active_sh_degree,
                      self.backend)

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        """One training iteration. Returns the loss terms (detached copies: no autograd graph
        or graph buffer outlives the iteration)."""
        o = self.opt
        if iteration % SH_DEGREE_INTERVAL == 0:
            self.model.oneup_sh_degree()
        self._set_learning_rates(iteration)
        cam = self.scene.train_cameras[self.sampler.next()]
        _, _, campos, exp = cam.tensors(self.device, self.cfg.centred_principal_point)
        # the model's per-frame networks through FrameNetworks (padded, CUDA-graphed on the
        # fast path); same arithmetic as model.derive
        g = self.frame_networks(exp, campos, deform=self.model.deforms_at(iteration))
        out = self._render(g, cam)
        loss, terms = self.loss_fn(out.image, self.scene.images.images[cam.image_slot])
        # Stop before a non-finite loss reaches the parameters. On the CPU the check is free; on
        # CUDA it would stall the queue, so it runs every 10 iterations (non-finite sample
        # coordinates are made harmless in the tri-plane meanwhile).
        if (self.device.type == "cpu" or iteration % 10 == 0) and not torch.isfinite(loss):
            self._diverged(iteration)
        loss.backward()

        with torch.no_grad():
            if iteration < o.densify_until_iter:
                self.densifier.observe(means2d_grad(out), out.radii, out.opacities,
                                       cam.width, cam.height)
                if self.densifier.due(iteration):
                    stats = self.densifier.densify_and_prune(
                        self.model, self.optimizers, self.scene.extent, iteration)
                    if self.tb:
                        for k, v in stats.items():
                            self.tb.add_scalar(f"densify/{k}", v, iteration)
        for opt in self.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        # copies: on the fast path the terms are views of the loss graph's static outputs
        return {k: v.detach().clone() for k, v in terms.items()}

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        o = self.opt
        last = o.iterations
        if self.start_iteration > last:
            self.log(f"[run] already at iteration {self.start_iteration - 1} >= --iterations "
                     f"{last}; nothing to train")
            return {}
        bar = tqdm(range(self.start_iteration, last + 1), desc="Training", disable=self.quiet,
                   dynamic_ncols=True, file=sys.stdout, initial=self.start_iteration - 1,
                   total=last)
        ema = None
        final_metrics: dict = {}
        iteration = self.start_iteration - 1
        t0 = time.time()
        with DeferredInterrupt(self.log) as interrupt:
            for iteration in bar:
                terms = self.step(iteration)
                if iteration % 10 == 0 or iteration == last:
                    values = {k: float(v.detach()) for k, v in terms.items()}
                    if not math.isfinite(values["total"]):
                        self._diverged(iteration)
                    self.loss_log.append((iteration, values["total"]))
                    ema = values["total"] if ema is None else 0.4 * values["total"] + 0.6 * ema
                    bar.set_postfix({"loss": f"{ema:.4f}", **{k: f"{v:.4f}" for k, v in
                                     values.items() if k != "total"},
                                     "N": str(self.model.num_gaussians)})
                    if self.tb:
                        for k, v in values.items():
                            self.tb.add_scalar(f"train/{k}", v, iteration)
                        self.tb.add_scalar("train/num_gaussians", self.model.num_gaussians,
                                           iteration)
                if iteration in self.test_iterations and self.scene.test_cameras:
                    final_metrics = self.evaluate(iteration)
                if iteration in self.save_iterations:
                    self.save(iteration)
                if interrupt.requested:
                    bar.close()
                    self.save(iteration, checkpoint_only=True)
                    self.log(f"[run] stopped after iteration {iteration}; checkpoint saved to "
                             f"{self.model_path / CHECKPOINT}. Continue with: python train.py "
                             f"-m {self.model_path} --resume")
                    raise KeyboardInterrupt
        bar.close()
        self.log(f"[run] trained {last - self.start_iteration + 1} iterations in "
                 f"{time.time() - t0:.1f} s; {self.model.num_gaussians} Gaussians")
        if self.tb:
            self.tb.close()
        return final_metrics

    def _diverged(self, iteration: int) -> None:
        where = (f"the last good checkpoint is iteration {self.last_saved} in "
                 f"{self.model_path}" if self.last_saved else "no checkpoint was saved yet")
        raise TrainingDiverged(
            f"the loss became non-finite by iteration {iteration}; {where}. Fix: lower the "
            "learning rates (e.g. --position_lr_init), check the dataset for broken frames, "
            "then --resume or start again.")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, iteration: int) -> dict:
        rows = []
        for k, cam in enumerate(self.scene.test_cameras):
            out = self.render_camera(cam, iteration)
            img = out.image.clamp(0, 1)
            gt = self.scene.gt(cam, self.device)
            rows.append(image_metrics(img, gt, self.lpips_fn))
            if self.tb and k < 5:
                self.tb.add_images(f"test/{cam.img_id}/render", img[None], iteration)
                if iteration == self.test_iterations[0]:
                    self.tb.add_images(f"test/{cam.img_id}/gt", gt[None], iteration)
        metrics = mean_metrics(rows)
        metrics_str = ", ".join(f"{k.upper()} {v:.4f}" for k, v in metrics.items())
        self.log(f"\n[ITER {iteration}] test ({len(rows)} frames): {metrics_str}")
        if self.tb:
            for k, v in metrics.items():
                self.tb.add_scalar(f"test/{k}", v, iteration)
        log_path = self.model_path / EVAL_LOG
        log = json.loads(log_path.read_text()) if log_path.is_file() else []
        log.append({"iteration": iteration, "num_gaussians": self.model.num_gaussians,
                    "frames": len(rows), **metrics})
        atomic_write_json(log_path, log)
        return metrics

    # ------------------------------------------------------------------ saving
    def _check_finite(self, iteration: int) -> None:
        for p in self.model.parameters():
            if not torch.isfinite(p).all():
                self._diverged(iteration)

    def save(self, iteration: int, checkpoint_only: bool = False) -> None:
        self._check_finite(iteration)
        if not checkpoint_only:
            save_model(self.model_path, self.model, iteration, self.scene.mean_campos())
        atomic_torch_save(self._checkpoint(iteration), self.model_path / CHECKPOINT)
        self.last_saved = iteration

    def _checkpoint(self, iteration: int) -> dict:
        return {
            "format": "gaussianhead-open-checkpoint", "version": CHECKPOINT_VERSION,
            "iteration": iteration,
            "data": self.data.to_dict(), "optimization": self.opt.to_dict(),
            "pipeline": self.pipe.to_dict(), "seed": self.seed, **self.asked_iterations,
            "model_config": self.cfg.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "active_sh_degree": self.model.active_sh_degree,
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "densifier": {k: v.cpu() for k, v in self.densifier.state_dict().items()},
            "sampler": self.sampler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "last_saved": self.last_saved,
        }

    def _restore(self, ckpt: dict) -> None:
        sd = ckpt["model"]
        n = sd["xyz"].shape[0]
        self.model.set_gaussians({k: sd[k] for k in ("xyz", "scaling", "rotation",
                                                     "derivations")})
        self.model.load_state_dict(sd)
        self.model.to(self.device)
        self.model.active_sh_degree = ckpt["active_sh_degree"]
        self._build_optimizers()
        for opt, state in zip(self.optimizers, ckpt["optimizers"]):
            load_as_built(opt, state)  # this run's kernels, whichever path wrote the state
        # torch's load_state_dict turns an integer 'step' into a float32 tensor; geoopt keeps
        # it as an int, and the bias correction would then differ in the last bit
        for st in self.opt_deriv.state.values():
            if torch.is_tensor(st.get("step")):
                st["step"] = int(st["step"].item())
        self.densifier.load_state_dict(ckpt["densifier"])
        assert len(self.densifier) == n
        self.sampler.load_state_dict(ckpt["sampler"])
        rng = ckpt["rng"]
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.start_iteration = ckpt["iteration"] + 1
        self.last_saved = ckpt["iteration"]
        self.log(f"[run] resumed from {self.model_path / CHECKPOINT} at iteration "
                 f"{ckpt['iteration']} ({n} Gaussians)")


class DeferredInterrupt:
    """Ctrl-C during training: the first one lets the current iteration finish (so that the
    checkpoint holds a consistent state), the second stops at once (no checkpoint)."""

    def __init__(self, log=print):
        self.log = log
        self.requested = False
        self._previous = None

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log("\n[run] Ctrl-C: finishing this iteration, then saving a checkpoint "
                 "(Ctrl-C again to stop without one)")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def build_optimizers(m: GaussianHead, o: OptimizationParams, fused: bool = False):
    """The release's optimizers: Adam for the per-Gaussian tensors (one group each), Riemannian
    Adam for the derivations on the sphere, Adam for the networks (one group per part);
    ``fused`` selects :mod:`scene.optimizers` (torch's fused Adam kernels, a vectorised sphere
    step).
    Returns the optimizers and the learning-rate schedules by group name."""
    s = o.spatial_lr_scale
    # the fast path's optimizers: the same updates and state, with less host work per step
    adam = FusedAdam if fused else torch.optim.Adam
    sphere_adam = SphereAdam if fused else geoopt.optim.RiemannianAdam
    opt_gauss = adam([
        {"params": [m.xyz], "lr": o.position_lr_init * s, "name": "xyz"},
        {"params": [m.scaling], "lr": o.scaling_lr * s, "name": "scaling"},
        {"params": [m.rotation], "lr": o.rotation_lr, "name": "rotation"},
    ], lr=0.0, eps=1e-15)
    opt_deriv = sphere_adam(
        [{"params": [m.derivations], "lr": o.quater_lr_init, "name": "derivations"}])
    nets = m.network_parameters()
    lrs = {"deform": o.position_lr_init * s, "trip": o.triplane_lr,
           "trip.opacity": o.opacity_lr, "trip.shs": o.feature_lr,
           "trip.shs_dc": o.feature_lr, "trip.shs_rest": o.feature_lr / 20.0}
    opt_net = adam([{"params": nets[k], "lr": lrs[k], "name": k} for k in lrs], lr=0.0,
                   eps=1e-15)
    optimizers = [opt_gauss, opt_deriv, opt_net]
    check_optimizer_layout(m, optimizers)
    schedules = {
        "xyz": expon_lr(o.position_lr_init * s, o.position_lr_final * s,
                        o.position_lr_max_steps),
        "deform": expon_lr(o.position_lr_init * s, o.position_lr_final, o.deform_lr_max_steps),
        "trip": expon_lr(o.triplane_lr, o.position_lr_final, o.triplane_lr_max_step),
        "derivations": expon_lr(o.quater_lr_init, o.quater_lr_final, o.quater_lr_max_step),
    }
    return optimizers, schedules


def _check_options(o: OptimizationParams) -> None:
    if o.iterations <= 0:
        raise OptionError(f"--iterations must be > 0, got {o.iterations}.")
    for name in ("position_lr_init", "position_lr_final", "triplane_lr", "quater_lr_init",
                 "quater_lr_final"):
        if getattr(o, name) <= 0:
            raise OptionError(f"--{name} must be > 0, got {getattr(o, name)}.")


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def _write_input_ply(path: Path, xyz: np.ndarray) -> None:
    """The initial points as a PLY (x, y, z, normals, grey colour), as the release does."""
    from plyfile import PlyData, PlyElement

    from utils.io_utils import atomic_path

    dtype = [(n, "f4") for n in ("x", "y", "z", "nx", "ny", "nz")] + [
        (n, "u1") for n in ("red", "green", "blue")]
    el = np.zeros(len(xyz), dtype=dtype)
    for i, n in enumerate("xyz"):
        el[n] = xyz[:, i]
    for n in ("red", "green", "blue"):
        el[n] = 128
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(el, "vertex")]).write(str(tmp))



def read_checkpoint(model_path: str | Path) -> dict:
    """A run's ``checkpoint.pt``, checked to be one of ours."""
    path = Path(model_path) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"--resume: {path} not found. Fix: pass -m with the folder of a "
                              "run started by this train.py, or drop --resume.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{path} cannot be read ({err}). Fix: start a new run.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "gaussianhead-open-checkpoint":
        raise CheckpointError(f"{path} is not a training checkpoint of this project.")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} was written by a newer version of this project "
                              f"(checkpoint version {ckpt['version']}; this one reads up to "
                              f"{CHECKPOINT_VERSION}). Fix: resume with that version.")
    return ckpt


def checkpoint_options(ckpt: dict) -> dict:
    """The options a run was started with, from its checkpoint (for --resume)."""
    schedule = {k: ckpt[k] for k in ("test_iterations", "save_iterations") if k in ckpt}
    return {**ckpt["data"], **ckpt["optimization"], **ckpt["pipeline"], "seed": ckpt["seed"],
            **schedule}
