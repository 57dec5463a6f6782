"""Reading and writing models in the original release's ``output/<id>`` layout::

    cfg_args                                   Namespace(...) text (see arguments)
    cameras.json                               the dataset cameras, test first then train
    input.ply                                  the initial point cloud
    point_cloud/iteration_N/point_cloud.ply    canonical Gaussians (3DGS PLY fields)
    deform/iteration_N/deform.pth              deformation network state_dict
    trip/iteration_N/trip.pth                  tri-planes and decoders state_dict
    tilted/iteration_N/tilted.pth              {'tau': [N, K, 4]} derivation quaternions

with the release's state_dict keys and shapes, so each side can read the other's runs. Runs
written here add ``model_meta.json`` (format version, the model's conventions and the head's
bounding sphere). Its absence marks a checkpoint of the original release, which is loaded in
``release`` semantics (reproducing the original's math) without any flag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from scene.gaussian_model import GaussianHead, ModelConfig
from utils.errors import CheckpointError
from utils.general_utils import inverse_sigmoid
from utils.io_utils import atomic_path, atomic_torch_save, atomic_write_json

FORMAT = "gaussianhead-open"
FORMAT_VERSION = 2  # 2: ModelConfig.derivation_coords (version 1 files are "v1")
META_FILE = "model_meta.json"
COMPONENTS = {
    "point_cloud": "point_cloud.ply",
    "deform": "deform.pth",
    "trip": "trip.pth",
    "tilted": "tilted.pth",
}


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


def _complete(model_path: Path, it: int) -> bool:
    return all(_component(model_path, comp, it).is_file() for comp in COMPONENTS)


def resolve_iteration(model_path: Path, iteration: int = -1) -> int:
    """The requested iteration, or for -1 the latest one saved whole (a save cut short by a
    crash leaves an incomplete iteration, which is passed over); checks every component."""
    model_path = Path(model_path)
    its = available_iterations(model_path)
    if not its:
        raise CheckpointError(
            f"{model_path / 'point_cloud'} holds no iteration_N/point_cloud.ply. Fix: pass -m "
            "with a trained run folder (train.py writes them at --save_iterations)."
        )
    if iteration == -1:
        complete = [i for i in its if _complete(model_path, i)]
        it = complete[-1] if complete else its[-1]
    else:
        it = iteration
    if it not in its:
        raise CheckpointError(f"{model_path} has no saved iteration {it}; saved: "
                              f"{', '.join(map(str, its))}. Fix: pass one of them to --iteration.")
    for comp, fname in COMPONENTS.items():
        p = model_path / comp / f"iteration_{it}" / fname
        if not p.is_file():
            raise CheckpointError(f"{p} is missing, so iteration {it} cannot be loaded as a "
                                  "whole. Fix: pass another --iteration, or restore the file.")
    return it


def _component(model_path: Path, comp: str, it: int) -> Path:
    return Path(model_path) / comp / f"iteration_{it}" / COMPONENTS[comp]


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, wrong format
        raise CheckpointError(f"{path} cannot be read ({err.__class__.__name__}: {err}). Fix: "
                              "restore it or pass another --iteration.") from None


# ----------------------------------------------------------------------------------------------
# PLY


def write_gaussian_ply(path: Path, model: GaussianHead, campos: torch.Tensor | None = None
                       ) -> None:
    """Write the canonical Gaussians as a standard 3DGS PLY.

    Position, log-scale and rotation are the model's parameters. Colour (SH) and opacity are
    decoded by the tri-plane for the canonical, undeformed head seen from ``campos`` (the mean
    training camera), so that ordinary 3DGS viewers show the avatar; opacity is stored as a
    logit, as 3DGS does. Loading reads only position, scale and rotation.
    """
    from plyfile import PlyData, PlyElement

    with torch.no_grad():
        if campos is None:
            campos = torch.zeros(3, device=model.xyz.device)
        frame = model.derive(None, campos.to(model.xyz.device), deform=False)
        sh = frame.sh.detach().cpu()  # [N, C, 3]
        opacity = inverse_sigmoid(frame.opacities.detach().cpu())[:, None]
    xyz = model.xyz.detach().cpu().numpy()
    f_dc = sh[:, :1].transpose(1, 2).flatten(1).numpy()
    f_rest = sh[:, 1:].transpose(1, 2).flatten(1).numpy()
    attrs = [xyz, np.zeros_like(xyz), f_dc, f_rest, opacity.numpy(),
             model.scaling.detach().cpu().numpy(), model.rotation.detach().cpu().numpy()]
    names = (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(f_dc.shape[1])]
             + [f"f_rest_{i}" for i in range(f_rest.shape[1])] + ["opacity"]
             + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])
    data = np.concatenate(attrs, axis=1).astype(np.float32)
    elements = np.empty(len(data), dtype=[(n, "f4") for n in names])
    for i, n in enumerate(names):
        elements[n] = data[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(elements, "vertex")]).write(str(tmp))


def read_gaussian_ply(path: Path) -> dict[str, torch.Tensor]:
    """Positions [N, 3], log-scales [N, 3] and rotations [N, 4] from a 3DGS PLY."""
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"]
        names = v.data.dtype.names

        def stack(prefix: str) -> np.ndarray:
            cols = sorted((n for n in names if n.startswith(prefix)),
                          key=lambda n: int(n.rsplit("_", 1)[1]))
            return np.stack([np.asarray(v[c]) for c in cols], axis=1)

        xyz = np.stack([v["x"], v["y"], v["z"]], axis=1)
        scale, rot = stack("scale_"), stack("rot_")
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable Gaussian PLY ({err}). Fix: restore it "
                              "or pass another --iteration.") from None
    if scale.shape[1] != 3 or rot.shape[1] != 4:
        raise CheckpointError(f"{path} needs scale_0..2 and rot_0..3 fields.")
    return {
        "xyz": torch.tensor(xyz, dtype=torch.float32),
        "scaling": torch.tensor(scale, dtype=torch.float32),
        "rotation": torch.tensor(rot, dtype=torch.float32),
    }


# ----------------------------------------------------------------------------------------------
# whole models


def write_meta(model_path: Path, cfg: ModelConfig) -> None:
    """Write ``model_meta.json``: what a loader needs to rebuild the model."""
    atomic_write_json(Path(model_path) / META_FILE,
                      {"format": FORMAT, "version": FORMAT_VERSION, "model": cfg.to_dict()})


def save_model(model_path: Path, model: GaussianHead, iteration: int,
               campos: torch.Tensor | None = None) -> None:
    """Write one iteration of the model in the release's layout (each file atomically; the
    point cloud, which marks an iteration as saved, last)."""
    atomic_torch_save(_cpu(model.deform.state_dict()), _component(model_path, "deform", iteration))
    atomic_torch_save(_cpu(model.triplane.state_dict()), _component(model_path, "trip", iteration))
    atomic_torch_save(_cpu(model.tilted_state_dict()), _component(model_path, "tilted", iteration))
    write_gaussian_ply(_component(model_path, "point_cloud", iteration), model, campos)


def _cpu(sd: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def read_config(model_path: Path, it: int, sh_degree: int) -> ModelConfig:
    """The model's configuration: from model_meta.json, or inferred from a release checkpoint."""
    meta_path = Path(model_path) / META_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            if int(meta.get("version", 0)) > FORMAT_VERSION:
                raise ValueError(f"written by a newer version ({meta['version']})")
            return ModelConfig.from_dict(meta["model"])
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{meta_path} cannot be used ({err}). Fix: restore it from "
                                  "the run (delete it only for a run of the original release)."
                                  ) from None
    _refuse_our_run_without_meta(Path(model_path), meta_path)
    trip = _torch_load(_component(model_path, "trip", it))
    tilted = _torch_load(_component(model_path, "tilted", it))
    deform = _torch_load(_component(model_path, "deform", it))
    try:
        levels = len({k.split(".")[1] for k in trip if k.startswith("tri_plane.")})
        plane = trip["tri_plane.0.0"]
        k = tilted["tau"].shape[1]
        n_freq_in = 3 * (1 + 2 * 10)
        exp_dim = deform["linear.0.weight"].shape[1] - n_freq_in
        n_rest = trip["shs_rest_net.weight"].shape[0]
    except (KeyError, IndexError) as err:
        raise CheckpointError(f"{model_path} does not look like a GaussianHead checkpoint "
                              f"(missing {err}).") from None
    sh_from_weights = int(round(((n_rest + 3) / 3) ** 0.5)) - 1
    if sh_from_weights != sh_degree:
        sh_degree = sh_from_weights
    return ModelConfig.release(exp_dim=exp_dim, sh_degree=sh_degree, num_derivations=k,
                               triplane_res=plane.shape[-1], triplane_channels=plane.shape[1],
                               triplane_levels=levels)


# cfg_args keys that only runs of this project write
_OUR_CFG_KEYS = ("num_derivations", "backend", "perceptual_loss", "test_frames")


def _refuse_our_run_without_meta(model_path: Path, meta_path: Path) -> None:
    """A run of ours that lost model_meta.json must not be rendered with the release's math."""
    cfg = model_path / "cfg_args"
    if not cfg.is_file():
        return
    from arguments import read_cfg_args

    ours = [k for k in _OUR_CFG_KEYS if k in read_cfg_args(model_path)]
    if ours:
        raise CheckpointError(
            f"{meta_path} is missing, but {cfg} was written by this project's train.py (it has "
            f"{', '.join(ours)}); without the file the run would be taken for one of the "
            "original release and rendered with its math. Fix: restore model_meta.json (train.py "
            "writes it when a run starts; the run's checkpoint.pt holds the same configuration "
            "under 'model_config').")


def load_model(model_path: str | Path, iteration: int = -1, sh_degree: int = 3,
               device: torch.device | str = "cpu") -> tuple[GaussianHead, int]:
    """Load a saved model (ours or the release's). Returns the model and its iteration."""
    model_path = Path(model_path)
    it = resolve_iteration(model_path, iteration)
    cfg = read_config(model_path, it, sh_degree)
    gauss = read_gaussian_ply(_component(model_path, "point_cloud", it))
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
    model = GaussianHead(cfg, num_points=0)
    model.set_gaussians({**gauss, "derivations": tau.float()})
    for name, module in (("deform", model.deform), ("trip", model.triplane)):
        sd = _torch_load(_component(model_path, name, it))
        try:
            module.load_state_dict(sd)
        except RuntimeError as err:
            raise CheckpointError(f"{_component(model_path, name, it)} does not fit the model "
                                  f"({str(err).splitlines()[0]}).") from None
    # the release rendered with every SH band whatever the iteration (as 3DGS's load_ply);
    # our models use the bands that were active when the iteration was saved
    model.active_sh_degree = (cfg.sh_degree if cfg.semantics == "release"
                              else model.sh_degree_at(it))
    return model.to(device), it
