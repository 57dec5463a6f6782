"""The training loop: data, model, optimizers, densification, evaluation and checkpoints.

``train.py`` only parses options and calls :class:`Trainer`. Order of work:

1. read and check the whole dataset (images decoded) - nothing is written before this;
2. build (or, with ``--resume``, restore) the model, optimizers and densification state;
3. write the run folder (cfg_args, model_meta.json, cameras.json, input.ply);
4. train; at ``--test_iterations`` evaluate, at ``--save_iterations`` (and on Ctrl-C) save the
   model (3DGS layout) and a resumable checkpoint, each file atomically.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from pathlib import Path

import torch
from tqdm import tqdm

from arguments import ModelParams, OptimizationParams, PipelineParams
from gaussian_renderer import RenderOutput, means2d_grad
from scene import Scene
from scene.cameras import Camera
from scene.gaussian_model import SH_DEGREE_INTERVAL
from scene.rendering import colour_viewpoint, render_view
from scene.run_folder import (
    CHECKPOINT,
    append_eval_log,
    save_model,
    write_cameras_json,
    write_cfg_args,
    write_checkpoint,
    write_input_ply,
    write_meta,
)
from training.cuda_graphs import FrameNetworks
from training.densification import Densifier, DensifyConfig
from training.face_prior import FaceSurface
from training.losses import TrainingLoss
from training.model_setup import build_model
from training.optimizers import build_optimizers
from training.regularizers import ShapeTerms, VisualHull
from training.resume import checkpoint_state, restore_state
from training.run_control import (
    CameraSampler,
    DeferredInterrupt,
    ScheduleClock,
    rare_expression_weights,
)
from training.virtual_views import VirtualViews
from training.visibility import prune_unseen
from utils.errors import OptionError, TrainingDiverged
from utils.execution import Execution, resolve_execution
from utils.general_utils import seed_everything
from utils.loss_utils import make_perceptual_loss
from utils.metrics_utils import image_metrics, make_lpips, mean_metrics
from utils.profiling import Phases


class Trainer:
    """Trains one run. ``execution`` defaults to what ``pipe``'s options resolve to;
    ``checkpoint`` (from :func:`scene.run_folder.read_checkpoint`) resumes a run."""

    def __init__(self, data: ModelParams, opt: OptimizationParams, pipe: PipelineParams, *,
                 test_iterations: list[int], save_iterations: list[int], seed: int = 0,
                 quiet: bool = False, checkpoint: dict | None = None,
                 tensorboard: bool = True, execution: Execution | None = None,
                 log=print):
        # the options as given (saved for --resume) and with the schedule resolved (used)
        self.data, self.options, self.pipe = data, opt, pipe
        opt = self.opt = opt.resolved()
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
        self.execution = execution or resolve_execution(pipe.device, pipe.backend,
                                                        pipe.precision, pipe.fast_path)
        self.device, self.backend = self.execution.device, self.execution.backend
        # named ranges of the step (profiler traces; the benchmark's host-time split)
        self.phases = Phases()
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
        self.model, self.init_xyz, init_note = build_model(
            self.scene, data, opt, seed, self.execution, ckpt)
        self.cfg = self.model.cfg
        self.extent = (opt.scene_extent if opt.scene_extent > 0 else self.scene.extent
                       if opt.scene_extent == 0 else
                       max(self.scene.extent, 1.1 * self.scene.camera_distance))
        self._build_optimizers()
        dcfg = DensifyConfig(
            grad_threshold=opt.densify_grad_threshold, percent_dense=opt.percent_dense,
            min_opacity=opt.min_opacity, max_screen_size=opt.max_screen_size,
            interval=opt.densification_interval, start=opt.densify_from_iter,
            stop=opt.densify_until_iter, size_prune_after=opt.opacity_reset_interval,
        )
        hull = (VisualHull.build(self.scene, self.cfg.body, self.device) if opt.hull_prune
                else None)
        self.densifier = Densifier(dcfg, self.model.num_gaussians, self.device,
                                   keep=None if hull is None else hull.inside)
        self.body_densifier = (Densifier(dcfg, self.model.body.num_gaussians, self.device,
                                         keep=(lambda xyz: self.model.body.in_silhouette(
                                             xyz[:, :2])) if opt.body_prune else None)
                               if self.cfg.body else None)
        self.sampler = CameraSampler(
            len(self.scene.train_cameras), seed,
            rare_expression_weights(torch.stack([c.exp for c in self.scene.train_cameras]),
                                    opt.rare_frames) if opt.rare_frames > 0 else None)
        self.vgg, self.vgg_note = make_perceptual_loss(opt.lambda_vgg, self.device)
        mesh = self.scene.info.face_mesh
        face = (FaceSurface.from_mesh(mesh, self.scene.mean_campos().numpy(),
                                      opt.face_margin * self.cfg.radius, self.device)
                if opt.lambda_face_depth > 0 and mesh is not None else None)
        self.shape_terms = ShapeTerms(opt.lambda_aniso, opt.max_aniso, opt.lambda_view_extent,
                                      opt.max_view_ratio, opt.lambda_face_depth, face,
                                      opt.lambda_offset, self.cfg.radius,
                                      opt.lambda_radial_normal, self.cfg.center)
        self.use_alpha = opt.lambda_alpha > 0 and self.scene.images.masks is not None
        self.use_regions = opt.lambda_regions > 0 and self.scene.load_regions()
        if opt.lambda_regions > 0 and not self.use_regions:
            self.log("[loss] --lambda_regions: the dataset has no region maps (regions/ of "
                     "tools/preprocess.py) for every training frame; the region term is off")
        self.loss_fn = TrainingLoss(opt.lambda_dssim, opt.lambda_vgg, self.vgg,
                                    self.execution.graphs,
                                    opt.lambda_alpha if self.use_alpha else 0.0,
                                    lambda_regions=opt.lambda_regions if self.use_regions
                                    else 0.0)
        self.virtual = VirtualViews.from_options(opt, self.cfg, seed)
        self.frame_networks = FrameNetworks(self.model, self.execution.graphs,
                                            shape=self.shape_terms)
        self.lpips_fn, self.lpips_note = make_lpips(self.device)
        self.start_iteration = 1
        self.train_seconds = 0.0  # in training steps (a resumed run's includes the earlier)
        self.last_saved: int | None = None
        self.loss_log: list[tuple[int, float]] = []  # (iteration, total loss) every 10
        if ckpt is not None:
            restore_state(self, ckpt)
        self.last_iteration = self.start_iteration - 1

        # 3. the run folder
        self.model_path.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            write_cfg_args(self.model_path, self.cfg_args())
            write_meta(self.model_path, self.model)
            info = self.scene.info
            write_cameras_json(self.model_path / "cameras.json",
                               info.test_frames + info.train_frames, info.intrinsics)
            write_input_ply(self.model_path, self.init_xyz)
        self.log(f"[run] output folder {self.model_path}; device {self.device}, backend "
                 f"{self.backend}; {self.model.num_gaussians} Gaussians"
                 + (f" ({init_note})" if init_note else ""))
        self.log(f"[run] VGG perceptual loss {self.vgg_note}; {self.lpips_note}")
        self.tb = _tensorboard(self.model_path) if tensorboard else None

    # ------------------------------------------------------------------ setup helpers
    def cfg_args(self) -> dict:
        """What goes into cfg_args (the data and model options, then ours)."""
        d = self.data.to_dict()
        d["model_path"] = str(self.model_path)
        d["source_path"] = str(Path(d["source_path"]).resolve())
        d["perceptual_loss"] = self.vgg_note
        d["backend"] = self.pipe.backend
        return d

    def _build_optimizers(self) -> None:
        self.optimizers, self.schedules = build_optimizers(
            self.model, self.opt, self.execution.fast_optimizers, self.extent)
        self.opt_gauss, self.opt_deriv, self.opt_net = self.optimizers[:3]

    def _set_learning_rates(self, iteration: int) -> None:
        for opt in self.optimizers:
            for g in opt.param_groups:
                sched = self.schedules.get(g["name"])
                if sched is not None:
                    g["lr"] = sched(iteration)

    # ------------------------------------------------------------------ one iteration
    def render_camera(self, cam: Camera, iteration: int) -> RenderOutput:
        """Render a camera with the model as it is (no gradients are kept by the caller)."""
        exp = cam.tensors(self.device, self.model.centred_principal_point)[3]
        view = colour_viewpoint(self.model, cam, self.device)
        g = self.model.derive(exp if self.model.deforms_at(iteration) else None, view)
        g = self.model.with_body(g, cam.capture(self.device))
        return render_view(self.model, g, cam, self.background, self.backend)

    def step(self, iteration: int, position: float | None = None) -> dict[str, torch.Tensor]:
        """One training iteration at the schedule's ``position`` (default: the iteration; see
        :class:`ScheduleClock`). Returns the loss terms (detached copies: no autograd graph or
        graph buffer outlives the iteration). Each part runs in a named ``self.phases``
        range."""
        o, phase = self.opt, self.phases
        pos = iteration if position is None else position
        if iteration % SH_DEGREE_INTERVAL == 0:
            self.model.oneup_sh_degree()
        with phase("learning rates"):
            self._set_learning_rates(pos)
        cam = self.scene.train_cameras[self.sampler.next()]
        _, _, campos, exp = cam.tensors(self.device, self.model.centred_principal_point)
        with phase("networks forward"):
            # padded and CUDA-graphed on the fast path; the arithmetic of model.derive and
            # model.with_body, and the shape penalties of the canonical Gaussians
            g, shape = self.frame_networks.frame(exp, campos, self._deforms(iteration, pos),
                                                 cam.capture(self.device))
            n_head = self.model.num_gaussians
        with phase("rasterization forward"):
            out = render_view(self.model, g, cam, self.background, self.backend)
        with phase("loss forward"):
            store = self.scene.images
            mask = store.masks[cam.image_slot] if self.use_alpha else None
            regions = store.regions[cam.image_slot] if self.use_regions else None
            loss, terms = self.loss_fn(out.image, store.images[cam.image_slot], out.alpha, mask,
                                       regions)
            if shape:
                loss = loss + sum(shape.values())
                terms = {**terms, **shape, "total": loss}
        if self.virtual is not None and iteration % o.virtual_every == 0:
            with phase("virtual view"):  # the head from a turned camera: smooth depth
                virtual = o.lambda_virtual_depth * self.virtual.term(
                    self.model, g, n_head, cam, self.background, self.backend)
                loss = loss + virtual
                terms = {**terms, "virtual_depth": virtual, "total": loss}
        # Stop before a non-finite loss reaches the parameters. On the CPU the check is free; on
        # CUDA it would stall the queue, so it runs every 10 iterations (non-finite sample
        # coordinates are made harmless in the tri-plane meanwhile).
        if (self.device.type == "cpu" or iteration % 10 == 0) and not torch.isfinite(loss):
            self._diverged(iteration)
        with phase("backward"):
            loss.backward()

        with torch.no_grad():
            if pos < o.densify_until_iter:
                with phase("densification statistics"):
                    grad = means2d_grad(out)
                    for d, rows in self._sets(n_head):
                        d.observe(None if grad is None else grad[rows], out.radii[rows],
                                  g.opacities[rows], cam.width, cam.height)
                if self.densifier.due(iteration, pos):
                    with phase("densification"):
                        self._densify(iteration, pos)
        for opt in self.optimizers:
            with phase(f"optimizer step ({opt.param_groups[0]['name']}...)"):
                opt.step()
            with phase("zero_grad"):
                opt.zero_grad(set_to_none=True)
        # copies: on the fast path the terms are views of the loss graph's static outputs
        return {k: v.detach().clone() for k, v in terms.items()}

    def _sets(self, n_head: int) -> list[tuple[Densifier, slice]]:
        """Each densifier with its Gaussians' rows in a frame's joined tensors."""
        out = [(self.densifier, slice(0, n_head))]
        if self.body_densifier is not None:
            out.append((self.body_densifier, slice(n_head, None)))
        return out

    def _deforms(self, iteration: int, position: float) -> bool:
        """Whether the deformation network is on; where a time budget's clock reaches the end
        of the warm-up before the iterations do, it is switched on here (and the run folder's
        model_meta.json says from which iteration)."""
        m = self.model
        if not m.deforms_at(iteration) and position >= self.opt.warm_up:
            m.cfg.deform_from = iteration
            write_meta(self.model_path, m)
        return m.deforms_at(iteration)

    def _densify(self, iteration: int, position: float) -> None:
        """Clone, split and prune the head's Gaussians and the body's, each with its own
        statistics, in the optimizers of its own parameters."""
        stats = self.densifier.densify_and_prune(self.model, self.optimizers, self.extent,
                                                 position)
        if self.body_densifier is not None:
            body = self.body_densifier.densify_and_prune(
                self.model.body, self.optimizers, self.extent, position)
            stats |= {f"body_{k}": v for k, v in body.items()}
        if self.tb:
            for k, v in stats.items():
                self.tb.add_scalar(f"densify/{k}", v, iteration)

    # ------------------------------------------------------------------ the loop
    def run(self, time_limit: float | None = None) -> dict:
        """Train to --iterations, or until ``time_limit`` seconds of training (evaluation and
        saving not counted) have passed, with the schedule fitted to that budget
        (:class:`ScheduleClock`): the last iteration is then evaluated and saved there.
        Returns the last test metrics; ``self.train_seconds`` and ``self.last_iteration`` say
        how long and how far it trained."""
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
        clock = ScheduleClock(last, time_limit)
        with DeferredInterrupt(self.log) as interrupt:
            for iteration in bar:
                t_step = time.perf_counter()
                terms = self.step(iteration, clock.position(iteration, self.train_seconds))
                self.train_seconds += time.perf_counter() - t_step
                out_of_time = clock.spent(self.train_seconds)
                if out_of_time and iteration < last:
                    self.log(f"\n[run] time limit of {time_limit:.0f} s reached at iteration "
                             f"{iteration}, the end of the schedule fitted to it")
                    if self.data.eval:
                        self.test_iterations.append(iteration)
                    self.save_iterations.append(iteration)
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
                if (iteration == last or out_of_time) and o.unseen_prune > 0:
                    self.log(f"\n[run] {prune_unseen(self, iteration)} head Gaussians that no "
                             f"training frame sees removed (--unseen_prune {o.unseen_prune})")
                if iteration in self.test_iterations and self.scene.test_cameras:
                    final_metrics = self.evaluate(iteration)
                if iteration in self.save_iterations:
                    self.save(iteration)
                if out_of_time:
                    break
                if interrupt.requested:
                    bar.close()
                    self.save(iteration, checkpoint_only=True)
                    self.log(f"[run] stopped after iteration {iteration}; checkpoint saved to "
                             f"{self.model_path / CHECKPOINT}. Continue with: python train.py "
                             f"-m {self.model_path} --resume")
                    raise KeyboardInterrupt
        bar.close()
        self.last_iteration = iteration
        self.log(f"[run] trained {iteration - self.start_iteration + 1} iterations in "
                 f"{time.time() - t0:.1f} s ({self.train_seconds:.1f} s in training steps); "
                 f"{self.model.num_gaussians} Gaussians"
                 + (f" + {self.model.body.num_gaussians} body" if self.model.body is not None
                    else ""))
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
        append_eval_log(self.model_path, {"iteration": iteration,
                                          "num_gaussians": self.model.num_gaussians,
                                          "frames": len(rows), **metrics})
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
        write_checkpoint(self.model_path, checkpoint_state(self, iteration))
        self.last_saved = iteration

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
