"""Command-line parameter groups, shared by train.py, render.py and the tools.

Each group is a dataclass whose fields become flags (``--name``) with help text. Boolean flags
accept both forms: ``--is_debug`` (true) and ``--is_debug true|false`` (the original release used
``type=bool``, for which ``--is_debug False`` meant True).

A run's data and model options are saved to ``<model_path>/cfg_args``
(:mod:`scene.run_folder`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any


def str2bool(value: str | bool) -> bool:
    """Parse a boolean flag value ('true'/'false', 'yes'/'no', '1'/'0', 'on'/'off')."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _opt(default: Any, help: str, short: str | None = None, **extra: Any) -> Any:
    """A dataclass field that carries its flag's help text and optional short form."""
    return field(default=default, metadata={"help": help, "short": short, **extra})


class ParamGroup:
    """Base class: turns dataclass fields into an argparse group and back."""

    title = "Parameters"

    @classmethod
    def add_to(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(cls.title)
        for f in dataclasses.fields(cls):
            names = ["--" + f.name]
            if f.metadata.get("short"):
                names.append(f.metadata["short"])
            help_text = f.metadata.get("help", "")
            if f.default not in ("", None):
                shown = str(f.default).lower() if isinstance(f.default, bool) else f.default
                help_text += f" (default: {shown})"
            # SUPPRESS: only options given on the command line appear in the parsed namespace,
            # so they can override a saved run's options (render.py, --resume)
            kwargs: dict[str, Any] = {"help": help_text, "dest": f.name,
                                      "default": argparse.SUPPRESS}
            if f.type in (bool, "bool"):
                kwargs.update(nargs="?", const=True, type=str2bool, metavar="true|false")
            elif f.metadata.get("nargs"):
                kwargs.update(nargs=f.metadata["nargs"], type=f.metadata.get("elem", int))
            else:
                kwargs["type"] = _field_type(f)
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            group.add_argument(*names, **kwargs)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build the group from a dict, ignoring keys that belong elsewhere."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_type(f: dataclasses.Field) -> type:
    t = f.type
    if isinstance(t, str):
        t = {"int": int, "float": float, "str": str}[t]
    return t


@dataclass
class ModelParams(ParamGroup):
    """Where the data and the run live, how frames are split, and the model's sizes."""

    title = "Data and model"
    source_path: str = _opt("", "dataset folder holding transforms.json", short="-s")
    model_path: str = _opt(
        "", "output folder of the run (default: a new folder under output/)", short="-m"
    )
    sh_degree: int = _opt(3, "maximum spherical-harmonics degree of the colour")
    resolution: int = _opt(
        -1,
        "image scale: 1, 2, 4 or 8 divide the size; another positive value is the target width; "
        "-1 keeps it (widths over 1600 px are reduced to 1600)",
        short="-r",
    )
    white_background: bool = _opt(
        True, "composite frames onto white (true) or black (false)", short="-w"
    )
    eval: bool = _opt(False, "evaluate on held-out test frames during and after training")
    test_frames: int = _opt(
        1000, "the last N frames are held out and never trained on (the release used 1000)"
    )
    eval_frames: int = _opt(50, "the last N of the held-out frames form the test set")
    is_debug: bool = _opt(False, "load only the first 50 training frames, for quick runs")
    only_head: bool = _opt(
        False, "train on the head only, masked by parsing/ (head = RGB (0,0,255))"
    )
    init_points: int = _opt(
        10_000, "random initial Gaussians when the dataset has no points3d.ply (release: 10000)"
    )
    head_centre: str = _opt(
        "origin", "where the random initial head Gaussians are sought: origin = about the "
        "point the cameras' optical axes cross, drawn towards the head frame's origin where "
        "the axes are nearly parallel (a monocular clip: their crossing in depth rests on a few "
        "degrees of head motion); axes = the crossing alone (before 2026-12-07: on webcam "
        "clips it lay 0.1-0.3 in front of the head, and the head started there)",
        choices=("origin", "axes"))
    head_shell: float = _opt(
        0.0, "with a value > 0, the random initial head Gaussians fill only the outer layer of "
        "the head's volume (the visual hull cut to a head-deep ellipsoid), this fraction of the "
        "way from its surface to its centre: the sides and back of the head start where a "
        "surface is, rather than a filled volume whose outline is drawn from the depth of its "
        "centre (0 = the whole volume)")
    face_init_share: float = _opt(
        0.2, "share of the initial head Gaussians placed on the face mesh of transforms.json "
        "(written by tools/preprocess.py; ignored without one) instead of at random in the "
        "visual hull (0 = none, as the paper)")
    num_derivations: int = _opt(4, "learnable rotations (derivations) per Gaussian")
    appearance: str = _opt(
        "canonical",
        "where each Gaussian samples the tri-plane for its colour and opacity: canonical (its "
        "own canonical position: colours stay with the Gaussian) or deformed (its deformed "
        "position, as the paper: whatever passes through a point shares its colour)",
        choices=("canonical", "deformed"))
    expression_residuals: bool = _opt(
        True, "the deformation network also changes each Gaussian's opacity and colour with "
        "the expression (blinks, lips, the inside of the mouth); false: the paper's offsets of "
        "position, rotation and scale only")
    deform_start: str = _opt(
        "random", "the deformation network's position, rotation and scale outputs at the "
        "start: random (as the paper: switched on after the warm-up, it moves every Gaussian "
        "by a random offset, some 7%% of the head's radius) or identity (zero outputs: the "
        "warm-up's Gaussians stay where they are)", choices=("random", "identity"))
    body: bool = _opt(
        True, "model the neck and torso as Gaussians in the capture camera's frame, moved by "
        "the head pose (the body does not follow the head in the data); ignored with "
        "--only_head")
    body_points: int = _opt(5000, "initial body Gaussians")
    body_shape: str = _opt(
        "surface",
        "the body's depth, which one camera cannot see: surface (its Gaussians stay on a "
        "rounded surface fitted to the neck's and torso's silhouette, so a turned camera sees "
        "the shoulders where they are) or slab (each keeps the depth it starts at, a layer at "
        "the head's depth)", choices=("surface", "slab"))
    body_depth_ratio: float = _opt(
        0.5, "with --body_shape surface: the torso's depth as a fraction of its width (a neck, "
        "narrower than the head, is round)")
    body_depth_offset: float = _opt(
        0.4, "with --body_shape surface: how far behind the head's centre the body's centre "
        "lies, in half head widths")
    body_margin: float = _opt(
        0.25, "with --body_shape surface: where the body's silhouette touches the frame's sides "
        "or bottom, the body continues beyond them by this fraction of the image's width and "
        "height (a turned camera sees past the frame's cut; 0 = the frame only)")
    body_back: float = _opt(
        0.3, "with --body_shape surface: share of the body's initial Gaussians on the back of "
        "its volume (unseen from the capture camera, the back forms the far shoulder's outline "
        "in a turned view; 0 = the front surface only)")
    colour_view: str = _opt(
        "capture",
        "where the colour's view direction comes from: capture (the camera that filmed the "
        "frame; its light is fixed to it, so a novel view keeps the frame's shading) or render "
        "(the camera rendering the frame, as the paper); training frames are the same either "
        "way", choices=("capture", "render"))
    triplane_res: int = _opt(64, "resolution of each tri-plane")
    triplane_channels: int = _opt(32, "channels of each tri-plane")


@dataclass
class PipelineParams(ParamGroup):
    """How and where rendering runs."""

    title = "Pipeline"
    backend: str = _opt(
        "auto",
        "rasterizer: gsplat (CUDA), torch (pure PyTorch, any device) or auto "
        "(gsplat when CUDA works, else torch)",
        choices=("auto", "gsplat", "torch"),
    )
    device: str = _opt("auto", "torch device: auto (cuda if available), cpu, cuda or cuda:N")
    precision: str = _opt(
        "fp32",
        "matrix products on CUDA: fp32 = plain fp32; tf32 = TF32 tensor cores (fp32 storage); "
        "mixed = TF32, and bf16 MLPs with fp32 accumulation. The CPU always runs fp32",
        choices=("fp32", "tf32", "mixed"),
    )
    fast_path: str = _opt(
        "auto",
        "on CUDA: auto = fused linear+ReLU layers and, in training, the per-frame networks "
        "and the loss (forward and backward) replayed from CUDA graphs and fused Adam (the same "
        "arithmetic up to rounding); off = the eager, unfused reference. No effect on the CPU",
        choices=("auto", "off"),
    )


@dataclass
class OptimizationParams(ParamGroup):
    """Schedule, learning rates, loss weights and densification.

    Lengths given as -1 are fractions of ``--iterations`` (:data:`SCHEDULE_FRACTIONS`), so a
    longer schedule is one flag away: ``--iterations 80000`` stretches every phase with it.
    """

    title = "Optimization"
    iterations: int = _opt(20_000, "training iterations (the phases below scale with it)")
    warm_up: int = _opt(-1, "iterations before the deformation network is switched on "
                        "(-1: 5%% of --iterations; the paper: 3000 of 80000)")
    position_lr_init: float = _opt(1.6e-4, "position learning rate at the start (x5 spatial scale)")
    position_lr_final: float = _opt(1.6e-6, "position learning rate at the end (x5 spatial scale)")
    position_lr_delay_mult: float = _opt(
        0.01, "3DGS's learning-rate delay multiplier; it has no effect without delay steps, in "
        "the release as here, and is kept so that its command lines run")
    position_lr_max_steps: int = _opt(-1, "iterations over which the position rate decays "
                                      "(-1: --iterations)")
    deform_lr_max_steps: int = _opt(-1, "iterations over which the deformation rate decays "
                                    "(-1: --iterations)")
    spatial_lr_scale: float = _opt(5.0, "scale of the position/scale/deformation rates")
    feature_lr: float = _opt(1e-3, "learning rate of the colour decoder")
    opacity_lr: float = _opt(1e-4, "learning rate of the opacity decoder")
    scaling_lr: float = _opt(1e-3, "learning rate of the log-scales (x spatial scale)")
    rotation_lr: float = _opt(1e-3, "learning rate of the rotations")
    triplane_lr: float = _opt(1e-3, "learning rate of the tri-planes at the start")
    triplane_lr_max_step: int = _opt(-1, "iterations over which the tri-plane rate decays "
                                     "(-1: --iterations)")
    quater_lr_init: float = _opt(1e-3, "learning rate of the derivation quaternions at the start")
    quater_lr_final: float = _opt(1e-5, "learning rate of the derivation quaternions at the end")
    quater_lr_max_step: int = _opt(-1, "iterations over which the derivation rate decays "
                                   "(-1: --iterations)")
    lambda_dssim: float = _opt(0.2, "weight of the (1 - SSIM) term; L1 gets 1 - lambda_dssim")
    lambda_vgg: float = _opt(0.01, "weight of the VGG perceptual term")
    lambda_alpha: float = _opt(
        0.1, "weight of the L1 distance between the rendered alpha and the mask (keeps the "
        "person opaque and the background empty; 0 = off, as the paper)")
    lambda_regions: float = _opt(
        0.0, "weight of a second L1 term over the eyes and the mouth only (regions/ of "
        "tools/preprocess.py), normalised by their area: blinks and the lips, a small share of "
        "the frame, weigh as much as the whole frame's L1 at 1.0 (0 = off; ignored without "
        "region maps)")
    rare_frames: float = _opt(
        0.0, "sample training frames with rare expressions (a blink, a wide-open mouth: a "
        "coefficient far from its usual value) up to 1 + this many times as often as the rest "
        "(0 = every frame once per epoch, as the paper)")
    lambda_aniso: float = _opt(
        0.01, "weight of the penalty on Gaussians more than --max_aniso times longer than "
        "wide (needles along the viewing direction break up side views; 0 = off, as the "
        "paper)")
    max_aniso: float = _opt(10.0, "the largest ratio of a Gaussian's scales not penalised")
    lambda_view_extent: float = _opt(
        0.01, "weight of the penalty on Gaussians that reach further along the capture "
        "camera's line of sight than --max_view_ratio times across it (needles pointing at the "
        "camera and sheets seen edge-on look right only from the front; 0 = off, as the paper)")
    max_view_ratio: float = _opt(
        1.0, "the largest ratio of a Gaussian's extent along the line of sight to its extent "
        "across it not penalised (a sphere: 1, a sheet seen edge-on: 1.41)")
    hull_prune: bool = _opt(
        True, "at each densification, prune head Gaussians outside the head's visual hull "
        "(the volume inside the head's silhouette in the training frames), which a turned "
        "view would see beside the head (false: as the paper)")
    unseen_prune: float = _opt(
        0.5, "at the end of training, remove head Gaussians whose blending weight stays below "
        "this many millionths of the frame's area in every one of --unseen_views training "
        "frames: hidden behind the face or inside the head, nothing holds them, and a turned "
        "camera sees them stick out past the head's outline; a run resumed past its end goes on "
        "without them (0 = keep them, as the paper)")
    unseen_views: int = _opt(
        64, "training frames that --unseen_prune looks through: half spread over the clip, "
        "half where an expression coefficient is largest or smallest")
    body_prune: bool = _opt(
        False, "with --body_shape surface: at each densification, prune body Gaussians whose "
        "place across the view leaves the body's silhouette in the capture camera (over the "
        "head, where they could stand in for the face from the capture direction only)")
    lambda_face_depth: float = _opt(
        0.01, "weight of the penalty on head Gaussians more than --face_margin in front of the "
        "face mesh of transforms.json (written by tools/preprocess.py; ignored without one): "
        "floaters before the face that only the capture direction hides (0 = off, as the "
        "paper)")
    face_margin: float = _opt(
        0.1, "how far in front of the face mesh a Gaussian may lie unpenalised, as a fraction "
        "of the head's radius (room for hair over the forehead and for glasses)")
    lambda_virtual_depth: float = _opt(
        0.0, "weight of the depth roughness of the head rendered from a turned camera (the "
        "training camera orbited by up to --virtual_yaw degrees): smooth depth inside the "
        "head's outline where no image says anything, against flakes, rims and holes in "
        "turned views (0 = off, as the paper)")
    virtual_yaw: float = _opt(35.0, "largest yaw (degrees) of the turned camera of "
                              "--lambda_virtual_depth; drawn from a third of it to all of it")
    virtual_scale: float = _opt(0.5, "size of the turned camera's image as a fraction of the "
                                "training image's")
    virtual_every: int = _opt(1, "render the turned camera every N iterations")
    lambda_radial_normal: float = _opt(
        0.0, "weight of the penalty on flat head Gaussians whose normal (shortest axis) does "
        "not point away from the head's centre: a surface facing outwards, so that the "
        "head's outline seen from the front is made of sheets reaching back along its sides, "
        "not of discs facing the camera that a turned view sees as a flat rim (0 = off, as "
        "the paper)")
    lambda_offset: float = _opt(
        0.0, "weight of the mean length of the deformation's position offsets, in head radii "
        "(holds still what the expressions need not move: hair, ears, the head's sides, "
        "which a free deformation moves frame by frame to hide wrong depth from the capture "
        "camera; 0 = off, as the paper)")
    percent_dense: float = _opt(0.01, "split above / clone below this fraction of the extent")
    densification_interval: int = _opt(100, "densify every N iterations")
    densify_from_iter: int = _opt(500, "first densification iteration")
    densify_until_iter: int = _opt(-1, "last densification iteration (-1: half of "
                                   "--iterations)")
    densify_grad_threshold: float = _opt(
        2e-4, "mean screen-space gradient (NDC units, as the original code) above which to "
        "densify"
    )
    opacity_reset_interval: int = _opt(
        -1, "after this many iterations large-on-screen Gaussians are pruned too (-1: 15%% "
        "of --iterations)"
    )
    scene_extent: float = _opt(
        -1.0, "the length densification's size thresholds are fractions of: -1 = 1.1 x the "
        "larger of the camera centres' spread and their distance from the head (what a camera "
        "circling the head would give); 0 = 3DGS's, 1.1 x the spread alone (tiny for a "
        "monocular video, as the paper); > 0 = this value")
    min_opacity: float = _opt(0.005, "prune Gaussians whose decoded opacity is below this")
    max_screen_size: int = _opt(20, "prune Gaussians larger than this many pixels (0: off)")

    def resolved(self) -> OptimizationParams:
        """A copy with every -1 length replaced by its fraction of ``iterations``."""
        out = dataclasses.replace(self)
        for name, frac in SCHEDULE_FRACTIONS.items():
            if getattr(out, name) < 0:
                setattr(out, name, max(1, round(frac * self.iterations)))
        return out


# the default phase lengths as fractions of --iterations
SCHEDULE_FRACTIONS = {
    "warm_up": 0.05, "position_lr_max_steps": 1.0, "deform_lr_max_steps": 1.0,
    "triplane_lr_max_step": 1.0, "quater_lr_max_step": 1.0, "densify_until_iter": 0.5,
    "opacity_reset_interval": 0.15,
}


def defaults(*groups: type[ParamGroup]) -> dict[str, Any]:
    """The default values of every field of the given groups."""
    out: dict[str, Any] = {}
    for g in groups:
        for f in dataclasses.fields(g):
            out[f.name] = f.default
    return out


# ----------------------------------------------------------------------------------------------
# the original release's options that have no meaning here

RELEASE_ONLY_FLAGS = {
    "images": str, "data_device": str, "load2gpu_on_the_fly": str2bool,
    "convert_SHs_python": str2bool, "compute_cov3D_python": str2bool, "debug": str2bool,
}


def add_compat_options(parser: argparse.ArgumentParser, extra: dict[str, Any] | None = None
                       ) -> None:
    """Accept the original release's options that do nothing here, so that commands written
    for it run unchanged (:func:`pop_compat_options` reports the ones given)."""
    group = parser.add_argument_group(
        "Accepted for compatibility with the original release (no effect here)")
    for name, kind in {**RELEASE_ONLY_FLAGS, **(extra or {})}.items():
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f"compat_{name}",
                                  "help": "accepted and ignored"}
        if kind is str2bool:
            kwargs.update(nargs="?", const=True, type=str2bool, metavar="true|false")
        else:
            kwargs["type"] = kind
        group.add_argument(f"--{name}", **kwargs)


def pop_compat_options(args: dict[str, Any]) -> list[str]:
    """Remove the compatibility options from parsed ``args``; return a note for each given."""
    given = [k for k in list(args) if k.startswith("compat_")]
    for k in given:
        args.pop(k)
    return [f"note: --{k[len('compat_'):]} (an option of the original release) has no effect "
            "here" for k in given]
