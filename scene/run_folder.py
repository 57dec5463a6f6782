"""The run folder ``output/<id>``: every file train.py writes and render.py reads, in the
original GaussianHead release's layout (so each side reads the other's runs)::

    cfg_args                                   Namespace(...) text of the run's options
    cameras.json                               the dataset cameras, test first then train
    input.ply                                  the initial point cloud
    point_cloud/iteration_N/point_cloud.ply    canonical Gaussians (3DGS PLY fields)
    deform/iteration_N/deform.pth              deformation network state_dict
    trip/iteration_N/trip.pth                  tri-planes and decoders state_dict
    tilted/iteration_N/tilted.pth              {'tau': [N, K, 4]} derivation quaternions
    body/iteration_N/body.pth                  ours, with a body: its Gaussians and network
    model_meta.json                            ours: format version and the model's config
    checkpoint.pt                              ours: everything needed to resume
    eval_log.json                              ours: test metrics at --test_iterations

Runs written here carry ``model_meta.json``; its absence marks a checkpoint of the original
release, which :func:`load_model` loads with the release's math (:mod:`scene.release`). Every
file is written atomically; ``cfg_args`` is read as literals, never evaluated.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene.gaussian_model import GaussianHead, ModelConfig
from scene.release import ReleaseGaussianHead, V1GaussianHead, release_config
from utils.errors import CheckpointError
from utils.general_utils import inverse_sigmoid
from utils.graphics_utils import GL_TO_CV
from utils.io_utils import atomic_torch_save, atomic_write_json, atomic_write_text
from utils.ply_io import read_gaussians, write_gaussians, write_points

FORMAT = "gaussianhead-open"
# One version for model_meta.json and checkpoint.pt. 2: positions rotated by the derivation
# quaternions (version 1 files used the column-sum coordinates of V1GaussianHead). 3: the
# appearance, expression-residual and body options (absent from older files: the paper's).
FORMAT_VERSION = 3
CHECKPOINT_FORMAT = "gaussianhead-open-checkpoint"
META_FILE = "model_meta.json"
CHECKPOINT = "checkpoint.pt"
EVAL_LOG = "eval_log.json"
COMPONENTS = {
    "point_cloud": "point_cloud.ply",
    "deform": "deform.pth",
    "trip": "trip.pth",
    "tilted": "tilted.pth",
    "body": "body.pth",  # only for a model with a body
}

# ----------------------------------------------------------------------------------------------
# cfg_args: the release's text form, read without eval

# keys the release's render.py expects but this project does not use
_RELEASE_KEYS = {"images": "images", "data_device": "cuda", "load2gpu_on_the_fly": True}


def write_cfg_args(model_path: str | os.PathLike, values: dict[str, Any]) -> None:
    """Write ``cfg_args`` as ``Namespace(k=v, ...)``, atomically, with the release's own keys
    filled in so that its ``render.py`` can read our runs."""
    merged = dict(values)
    for k, v in _RELEASE_KEYS.items():
        merged.setdefault(k, v)
    for k, v in merged.items():
        if not isinstance(v, (str, int, float, bool, type(None), list, tuple)):
            raise TypeError(f"cfg_args value {k}={v!r} is not a literal")
    body = ", ".join(f"{k}={v!r}" for k, v in merged.items())
    atomic_write_text(Path(model_path) / "cfg_args", f"Namespace({body})\n \n")


def read_cfg_args(model_path: str | os.PathLike) -> dict[str, Any]:
    """Read ``<model_path>/cfg_args`` (ours or the release's); literals only, never ``eval``."""
    path = Path(model_path) / "cfg_args"
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found. Fix: pass -m with a run folder written by train.py "
            "(or by the original release)."
        )
    text = path.read_text().strip()
    try:
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Namespace"):
            raise ValueError("not a Namespace(...) expression")
        if call.args:
            raise ValueError("positional arguments are not allowed")
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable cfg_args file ({err}). Fix: restore it from the run, "
            "or write it as Namespace(source_path='...', ...)."
        ) from None


# ----------------------------------------------------------------------------------------------
# files written when a run starts


def config_record(model: GaussianHead) -> dict:
    """The model's configuration as saved in model_meta.json and checkpoint.pt, with the
    coordinates rule that tells :func:`model_class` which class to rebuild."""
    coords = "v1" if isinstance(model, V1GaussianHead) else "rotate"
    return {**model.cfg.to_dict(), "derivation_coords": coords}


def write_meta(model_path: Path, model: GaussianHead) -> None:
    """``model_meta.json``: what a loader needs to rebuild the model."""
    atomic_write_json(Path(model_path) / META_FILE, {"format": FORMAT, "version": FORMAT_VERSION,
                                                     "model": config_record(model)})


def write_cameras_json(path: Path, frames: list, intr) -> None:
    """3DGS's cameras.json for dataset frames (test first, then train): rotation and position
    of the camera-to-world transform with OpenCV axes."""
    entries = []
    for i, f in enumerate(frames):
        c2w = f.c2w @ GL_TO_CV
        entries.append({
            "id": i, "img_name": f.img_id, "width": intr.width, "height": intr.height,
            "position": c2w[:3, 3].tolist(), "rotation": c2w[:3, :3].tolist(),
            "fy": intr.fy, "fx": intr.fx,
        })
    atomic_write_text(path, json.dumps(entries))


def write_input_ply(model_path: Path, xyz: np.ndarray) -> None:
    """The initial points (grey), as 3DGS writes ``input.ply``."""
    write_points(Path(model_path) / "input.ply", xyz)


def append_eval_log(model_path: Path, entry: dict) -> None:
    path = Path(model_path) / EVAL_LOG
    log = json.loads(path.read_text()) if path.is_file() else []
    log.append(entry)
    atomic_write_json(path, log)


# ----------------------------------------------------------------------------------------------
# saved iterations


def _component(model_path: Path, comp: str, it: int) -> Path:
    return Path(model_path) / comp / f"iteration_{it}" / COMPONENTS[comp]


def model_file_sizes(model_path: str | Path, iteration: int) -> dict[str, int]:
    """Bytes on disk of each component file of a saved iteration (point cloud, deformation
    network, tri-planes, derivations, body)."""
    return {c: _component(model_path, c, iteration).stat().st_size
            for c in _components(Path(model_path))}


def available_iterations(model_path: Path) -> list[int]:
    """Iterations for which a point cloud was saved, ascending."""
    folder = Path(model_path) / "point_cloud"
    its = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = re.fullmatch(r"iteration_(\d+)", p.name)
            if m and (p / "point_cloud.ply").is_file():
                its.append(int(m.group(1)))
    return sorted(its)


def _components(model_path: Path) -> list[str]:
    """The components an iteration of this run consists of."""
    comps = [c for c in COMPONENTS if c != "body"]
    meta = Path(model_path) / META_FILE
    if meta.is_file():
        try:
            if json.loads(meta.read_text()).get("model", {}).get("body"):
                comps.append("body")
        except (ValueError, AttributeError):
            pass  # read_config reports a broken file
    return comps


def resolve_iteration(model_path: Path, iteration: int = -1) -> int:
    """The requested iteration, or for -1 the latest one saved whole (a save cut short by a
    crash leaves an incomplete iteration, which is passed over); checks every component."""
    model_path = Path(model_path)
    components = _components(model_path)
    its = available_iterations(model_path)
    if not its:
        raise CheckpointError(
            f"{model_path / 'point_cloud'} holds no iteration_N/point_cloud.ply. Fix: pass -m "
            "with a trained run folder (train.py writes them at --save_iterations)."
        )
    if iteration == -1:
        complete = [i for i in its if all(_component(model_path, c, i).is_file()
                                          for c in components)]
        it = complete[-1] if complete else its[-1]
    else:
        it = iteration
    if it not in its:
        raise CheckpointError(f"{model_path} has no saved iteration {it}; saved: "
                              f"{', '.join(map(str, its))}. Fix: pass one of them to --iteration.")
    for comp in components:
        p = _component(model_path, comp, it)
        if not p.is_file():
            raise CheckpointError(f"{p} is missing, so iteration {it} cannot be loaded as a "
                                  "whole. Fix: pass another --iteration, or restore the file.")
    return it


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, wrong format
        raise CheckpointError(f"{path} cannot be read ({err.__class__.__name__}: {err}). Fix: "
                              "restore it or pass another --iteration.") from None


def save_model(model_path: Path, model: GaussianHead, iteration: int,
               campos: torch.Tensor | None = None) -> None:
    """Write one iteration (each file atomically; the point cloud, which marks an iteration as
    saved, last).

    The PLY holds the canonical Gaussians: position, log-scale and rotation are the model's
    parameters; colour (SH) and opacity (a logit) are decoded for the canonical, undeformed head
    seen from ``campos`` (the mean training camera), so that 3DGS viewers show the avatar.
    """
    def cpu(sd: dict) -> dict:
        return {k: v.detach().cpu().clone() for k, v in sd.items()}

    atomic_torch_save(cpu(model.deform.state_dict()), _component(model_path, "deform", iteration))
    atomic_torch_save(cpu(model.triplane.state_dict()), _component(model_path, "trip", iteration))
    atomic_torch_save(cpu(model.tilted_state_dict()), _component(model_path, "tilted", iteration))
    if model.body is not None:
        atomic_torch_save(cpu(model.body.state_dict()), _component(model_path, "body", iteration))
    with torch.no_grad():
        if campos is None:
            campos = torch.zeros(3, device=model.xyz.device)
        frame = model.derive(None, campos.to(model.xyz.device))
        sh = frame.sh.detach().cpu().numpy()
        opacity = inverse_sigmoid(frame.opacities.detach().cpu()).numpy()
    write_gaussians(_component(model_path, "point_cloud", iteration),
                    model.xyz.detach().cpu().numpy(), sh, opacity,
                    model.scaling.detach().cpu().numpy(), model.rotation.detach().cpu().numpy())


# ----------------------------------------------------------------------------------------------
# loading: the one place that decides which math a model uses


def model_class(model_config: dict, version: int) -> type[GaussianHead]:
    """The class of a model of ours from its saved config and format version."""
    if version < 2 or model_config.get("derivation_coords") == "v1":
        return V1GaussianHead
    return GaussianHead


def read_config(model_path: Path, it: int) -> tuple[ModelConfig, type[GaussianHead]]:
    """The model's configuration and class: from model_meta.json, or inferred from the weights
    of a release checkpoint."""
    meta_path = Path(model_path) / META_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            version = int(meta.get("version", 0))
            if version > FORMAT_VERSION:
                raise ValueError(f"written by a newer version ({meta['version']})")
            return ModelConfig.from_dict(meta["model"]), model_class(meta["model"], version)
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{meta_path} cannot be used ({err}). Fix: restore it from "
                                  "the run (delete it only for a run of the original release)."
                                  ) from None
    _refuse_our_run_without_meta(Path(model_path), meta_path)
    cfg = release_config(_torch_load(_component(model_path, "trip", it)),
                         _torch_load(_component(model_path, "tilted", it)),
                         _torch_load(_component(model_path, "deform", it)), str(model_path))
    return cfg, ReleaseGaussianHead


# cfg_args keys that only runs of this project write
_OUR_CFG_KEYS = ("num_derivations", "backend", "perceptual_loss", "test_frames")


def _refuse_our_run_without_meta(model_path: Path, meta_path: Path) -> None:
    """A run of ours that lost model_meta.json must not be rendered with the release's math."""
    cfg = model_path / "cfg_args"
    if not cfg.is_file():
        return
    ours = [k for k in _OUR_CFG_KEYS if k in read_cfg_args(model_path)]
    if ours:
        raise CheckpointError(
            f"{meta_path} is missing, but {cfg} was written by this project's train.py (it has "
            f"{', '.join(ours)}); without the file the run would be taken for one of the "
            "original release and rendered with its math. Fix: restore model_meta.json (train.py "
            "writes it when a run starts; the run's checkpoint.pt holds the same configuration "
            "under 'model_config').")


def load_model(model_path: str | Path, iteration: int = -1, *,
               device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
               fused: bool = False) -> tuple[GaussianHead, int]:
    """Load a saved model (ours or the release's). Returns the model and its iteration."""
    model_path = Path(model_path)
    it = resolve_iteration(model_path, iteration)
    cfg, cls = read_config(model_path, it)
    ply = _component(model_path, "point_cloud", it)
    gauss = read_gaussians(ply, CheckpointError, "restore it or pass another --iteration.")
    tau = _torch_load(_component(model_path, "tilted", it)).get("tau")
    if tau is None:
        raise CheckpointError(f"{_component(model_path, 'tilted', it)} has no 'tau' entry.")
    n = gauss["xyz"].shape[0]
    if tau.shape[0] != n:
        raise CheckpointError(
            f"{model_path} iteration {it}: the point cloud has {n} Gaussians but tilted.pth has "
            f"derivations for {tau.shape[0]}. Fix: the files come from different iterations; "
            "restore matching ones."
        )
    model = cls(cfg, num_points=0, autocast_dtype=autocast_dtype, fused=fused)
    model.set_gaussians({**{k: torch.from_numpy(v) for k, v in gauss.items()},
                         "derivations": tau.float()})
    parts = [("deform", model.deform), ("trip", model.triplane)]
    if model.body is not None:
        parts.append(("body", model.body))
        sd = _torch_load(_component(model_path, "body", it))
        try:
            model.body.set_gaussians({k: sd[k] for k in model.body.per_gaussian()})
        except KeyError as err:
            raise CheckpointError(f"{_component(model_path, 'body', it)} has no {err} entry. "
                                  "Fix: restore it or pass another --iteration.") from None
    for name, module in parts:
        sd = _torch_load(_component(model_path, name, it))
        try:
            module.load_state_dict(sd)
        except RuntimeError as err:
            raise CheckpointError(f"{_component(model_path, name, it)} does not fit the model "
                                  f"({str(err).splitlines()[0]}).") from None
    # the release rendered with every SH band whatever the iteration (as 3DGS's load_ply);
    # our models use the bands that were active when the iteration was saved
    model.active_sh_degree = (cfg.sh_degree if cls is ReleaseGaussianHead
                              else model.sh_degree_at(it))
    return model.to(device), it


def is_release_run(model_path: str | Path) -> bool:
    """Whether the run folder was written by the original release (no ``model_meta.json``);
    its models must run with exact fp32, unfused arithmetic."""
    return not (Path(model_path) / META_FILE).is_file()


# ----------------------------------------------------------------------------------------------
# checkpoint.pt


def write_checkpoint(model_path: Path, state: dict) -> None:
    """``checkpoint.pt``: ``state`` (the trainer's) plus the format and version, atomically."""
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, **state},
                      Path(model_path) / CHECKPOINT)


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
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of this project.")
    if int(ckpt.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer version of this project "
                              f"(format version {ckpt['version']}; this one reads up to "
                              f"{FORMAT_VERSION}). Fix: resume with that version.")
    return ckpt


def checkpoint_model(ckpt: dict) -> tuple[ModelConfig, type[GaussianHead]]:
    """The model configuration and class a checkpoint was trained with."""
    return (ModelConfig.from_dict(ckpt["model_config"]),
            model_class(ckpt["model_config"], int(ckpt.get("version", 1))))


def checkpoint_options(ckpt: dict) -> dict:
    """The options a run was started with, from its checkpoint (for --resume)."""
    schedule = {k: ckpt[k] for k in ("test_iterations", "save_iterations") if k in ckpt}
    return {**ckpt["data"], **ckpt["optimization"], **ckpt["pipeline"], "seed": ckpt["seed"],
            **schedule}
