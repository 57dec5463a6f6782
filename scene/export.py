"""A frame's Gaussians as files for other viewers: the standard 3DGS PLY and the ``.splat``
format of web splat viewers.

A frame's Gaussians are the head's, deformed by the frame's expression and coloured for its
camera, joined by the body's placed by the frame's capture pose
(``model.with_body(model.derive(exp, campos), capture_c2w)``). :class:`GaussianArrays` holds
them as the files store them: positions, log-scales, unit quaternions (w, x, y, z), opacity
logits and SH coefficients (DC first; the body's have the DC band only).

``.splat`` (as antimatter15/splat's ``convert.py`` writes it and its viewer reads it): 32 bytes
per Gaussian, little-endian, sorted by decreasing ``scale_x * scale_y * scale_z * opacity``::

    position   3 x float32
    scale      3 x float32   linear (exp of the log-scales)
    colour     4 x uint8     RGB = clip(0.5 + C0 * f_dc, 0, 1) * 255, A = opacity * 255
    rotation   4 x uint8     clip(q / |q| * 128 + 128, 0, 255), order w, x, y, z

(uint8 values truncated, as the reference converter does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from arguments import ModelParams, defaults
from scene.dataset_readers import DatasetInfo, read_dataset
from scene.gaussian_model import FrameGaussians, GaussianHead
from scene.run_folder import read_cfg_args
from utils.errors import DatasetError, OptionError
from utils.general_utils import inverse_sigmoid
from utils.graphics_utils import rotmat_to_quat
from utils.io_utils import atomic_write_bytes
from utils.ply_io import write_gaussians
from utils.sh_utils import C0

Format = Literal["ply", "splat"]
FORMATS: tuple[str, ...] = ("ply", "splat")
SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4),
                        ("rotation", "u1", 4)])  # 32 bytes


@dataclass
class GaussianArrays:
    """Gaussians as stored in files (float32 numpy arrays)."""

    xyz: np.ndarray  # [N, 3]
    log_scales: np.ndarray  # [N, 3]
    quats: np.ndarray  # [N, 4] unit, (w, x, y, z)
    opacity_logits: np.ndarray  # [N]
    sh: np.ndarray  # [N, K, 3], DC first

    @classmethod
    def from_frame(cls, g: FrameGaussians, sh_degree: int | None = None) -> GaussianArrays:
        """One frame's Gaussians (no batch axis; covariances, where given instead of rotations
        and scales, are factored into them). ``sh_degree``: the bands above it are set to zero
        (those the model does not render yet); None keeps every band."""
        def np32(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        sh = np32(g.sh).copy()
        if sh_degree is not None:
            sh[:, (sh_degree + 1) ** 2:] = 0.0
        if g.quats is None:
            quats, scales = factor_covariances(g.covars)
        else:
            quats, scales = torch.nn.functional.normalize(g.quats, dim=-1), g.scales
        return cls(xyz=np32(g.means), log_scales=np32(torch.log(scales)), quats=np32(quats),
                   opacity_logits=np32(inverse_sigmoid(g.opacities.detach().float())), sh=sh)

    def __len__(self) -> int:
        return self.xyz.shape[0]

    @property
    def opacities(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.opacity_logits.astype(np.float64)))


def factor_covariances(covars: torch.Tensor, min_scale: float = 1e-10
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotations (unit quaternions w, x, y, z) [N, 4] and scales [N, 3] with
    ``R diag(s)^2 R^T = covars`` [N, 3, 3] (symmetric positive semi-definite)."""
    c = covars.detach().double()
    evals, evecs = torch.linalg.eigh((c + c.transpose(-1, -2)) / 2)
    flip = torch.linalg.det(evecs) < 0  # a rotation, not a reflection
    evecs[flip, :, 2] *= -1
    scales = evals.clamp_min(min_scale ** 2).sqrt()
    return rotmat_to_quat(evecs).float(), scales.float()


@torch.no_grad()
def frame_gaussians(model: GaussianHead, exp: torch.Tensor | None, campos: torch.Tensor,
                    capture_c2w: torch.Tensor, body: bool = True) -> FrameGaussians:
    """The Gaussians of one frame: expression exp [E] (None: the canonical head), colours seen
    from campos [3], the body (where the model has one, and ``body``) placed by the capture
    camera's camera-to-head matrix capture_c2w [4, 4]."""
    dev = model.xyz.device
    g = model.derive(None if exp is None else exp.to(dev), campos.to(dev))
    return model.with_body(g, capture_c2w.to(dev)) if body else g


def mean_pose(c2ws: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """The mean of camera-to-world matrices [F, 4, 4]: the mean rotation projected back onto
    the rotations, and the mean position. -> [4, 4] float64"""
    c2ws = np.asarray(c2ws, dtype=np.float64).reshape(-1, 4, 4)
    u, _, vt = np.linalg.svd(c2ws[:, :3, :3].mean(0))
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        rot = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = c2ws[:, :3, 3].mean(0)
    return out


# ----------------------------------------------------------------------------------------------
# files


def write_ply(path: str | Path, g: GaussianArrays) -> None:
    """The standard 3DGS PLY (utils.ply_io.write_gaussians), atomically."""
    write_gaussians(Path(path), g.xyz, g.sh, g.opacity_logits, g.log_scales, g.quats)


def splat_bytes(g: GaussianArrays) -> bytes:
    """The ``.splat`` encoding of ``g`` (module docstring)."""
    scales = np.exp(g.log_scales.astype(np.float64))
    opacity = g.opacities
    order = np.argsort(-(scales.prod(1) * opacity), kind="stable")
    rgb = 0.5 + C0 * g.sh[:, 0].astype(np.float64)  # [N, 3]
    rgba = np.concatenate([rgb, opacity[:, None]], axis=1)
    q = g.quats.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    out = np.empty(len(g), dtype=SPLAT_DTYPE)
    out["position"] = g.xyz[order]
    out["scale"] = scales[order]
    out["rgba"] = (np.clip(rgba, 0.0, 1.0) * 255.0)[order].astype(np.uint8)
    out["rotation"] = np.clip(q * 128.0 + 128.0, 0.0, 255.0)[order].astype(np.uint8)
    return out.tobytes()


def write_splat(path: str | Path, g: GaussianArrays) -> None:
    """``.splat`` (module docstring), atomically."""
    atomic_write_bytes(path, splat_bytes(g))


def read_splat(path: str | Path) -> dict[str, np.ndarray]:
    """Decode a ``.splat`` file: position [N, 3], scale [N, 3] (linear), rgba [N, 4] uint8,
    rotation [N, 4] (w, x, y, z, decoded to [-1, 1])."""
    data = Path(path).read_bytes()
    if len(data) % SPLAT_DTYPE.itemsize:
        raise ValueError(f"{path}: {len(data)} bytes is not a multiple of "
                         f"{SPLAT_DTYPE.itemsize}: not a .splat file")
    rec = np.frombuffer(data, dtype=SPLAT_DTYPE)
    return {"position": rec["position"].copy(), "scale": rec["scale"].copy(),
            "rgba": rec["rgba"].copy(),
            "rotation": (rec["rotation"].astype(np.float32) - 128.0) / 128.0}


def write_file(path: str | Path, g: GaussianArrays, fmt: Format | None = None) -> Path:
    """Write ``g`` as ``fmt`` (default: from the file's suffix). Returns the path."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()  # type: ignore[assignment]
    if fmt not in FORMATS:
        raise OptionError(f"{path}: unknown format {fmt!r}. Fix: name the file .ply or .splat, "
                          "or pass --format ply|splat.")
    path.parent.mkdir(parents=True, exist_ok=True)
    (write_ply if fmt == "ply" else write_splat)(path, g)
    return path


# ----------------------------------------------------------------------------------------------
# the dataset a run was trained on


def run_options(model_path: str | Path, **given) -> dict:
    """The run's data options: defaults <- its cfg_args <- the ``given`` ones that are not None
    (source_path, test_frames, ...)."""
    values = defaults(ModelParams)
    saved = read_cfg_args(model_path)
    values.update({k: v for k, v in saved.items() if k in values})
    values.update({k: v for k, v in given.items() if v is not None})
    return values


def read_run_dataset(model_path: str | Path, **given) -> DatasetInfo:
    """The dataset of a run (named in its cfg_args, or ``source_path``), split as in training
    (or by the ``given`` test_frames, eval_frames); only transforms.json is parsed (no image is
    decoded)."""
    v = run_options(model_path, **given)
    src = v["source_path"]
    if not src or not Path(src).is_dir():
        raise OptionError(f"the dataset {src!r} named in {Path(model_path) / 'cfg_args'} does "
                          "not exist here. Fix: pass -s with the dataset folder the run was "
                          "trained on.")
    return read_dataset(src, test_frames=v["test_frames"], eval_frames=v["eval_frames"],
                        is_debug=v["is_debug"], only_head=v["only_head"],
                        resolution=v["resolution"])


def check_expression_size(model: GaussianHead, info: DatasetInfo) -> None:
    if model.cfg.exp_dim != info.exp_dim:
        raise DatasetError(f"{info.root} has expressions of {info.exp_dim} values but the model "
                           f"expects {model.cfg.exp_dim}. Fix: pass -s with the dataset the model "
                           "was trained on.")
