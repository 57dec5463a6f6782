"""PLY files: point clouds (``points3d.ply``, ``input.ply``) and 3DGS Gaussian clouds
(``point_cloud.ply``). Every writer is atomic; readers raise ``error_cls`` with the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.io_utils import atomic_path

# then f_dc_*, f_rest_*, opacity, scale_*, rot_*
GAUSSIAN_FIELDS = ("x", "y", "z", "nx", "ny", "nz")


def _write(path: Path, names: list[str], columns: np.ndarray, extra: dict | None = None) -> None:
    from plyfile import PlyData, PlyElement

    dtype = [(n, "f4") for n in names] + [(n, d) for n, (d, _) in (extra or {}).items()]
    elements = np.empty(len(columns), dtype=dtype)
    for i, n in enumerate(names):
        elements[n] = columns[:, i]
    for n, (_, values) in (extra or {}).items():
        elements[n] = values
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(elements, "vertex")]).write(str(tmp))


def write_points(path: Path, xyz: np.ndarray, rgb: np.ndarray | None = None) -> None:
    """A point cloud [P, 3] with zero normals and uint8 colours (grey without ``rgb`` in [0, 1]),
    as 3DGS writes ``input.ply``."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    rgb8 = (np.full(xyz.shape, 128, np.uint8) if rgb is None
            else np.clip(np.rint(np.asarray(rgb) * 255), 0, 255).astype(np.uint8))
    cols = np.concatenate([xyz, np.zeros_like(xyz)], axis=1)
    _write(path, list(GAUSSIAN_FIELDS), cols,
           {c: ("u1", rgb8[:, i]) for i, c in enumerate(("red", "green", "blue"))})


def read_points(path: Path, error_cls: type[Exception], fix: str) -> np.ndarray:
    """Positions [P, 3] float32 of a PLY point cloud (finite, at least one point)."""
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    except Exception as err:  # plyfile raises many kinds of errors for a bad file
        raise error_cls(f"{path} is not a readable PLY point cloud ({err}). Fix: {fix}") from None
    if len(xyz) == 0 or not np.isfinite(xyz).all():
        raise error_cls(f"{path} has no points or non-finite coordinates. Fix: {fix}")
    return xyz


def write_gaussians(path: Path, xyz: np.ndarray, sh: np.ndarray, opacity_logit: np.ndarray,
                    log_scales: np.ndarray, quats: np.ndarray) -> None:
    """A standard 3DGS PLY: xyz [N, 3], SH coefficients sh [N, K, 3] (DC first), opacity logits
    [N], log-scales [N, 3], rotations (w, x, y, z) [N, 4]."""
    n = len(xyz)
    f_dc = np.asarray(sh[:, :1]).transpose(0, 2, 1).reshape(n, -1)
    f_rest = np.asarray(sh[:, 1:]).transpose(0, 2, 1).reshape(n, -1)
    cols = np.concatenate([xyz, np.zeros_like(xyz), f_dc, f_rest,
                           np.asarray(opacity_logit).reshape(n, 1), log_scales, quats], axis=1)
    names = (list(GAUSSIAN_FIELDS) + [f"f_dc_{i}" for i in range(f_dc.shape[1])]
             + [f"f_rest_{i}" for i in range(f_rest.shape[1])] + ["opacity"]
             + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])
    _write(path, names, cols.astype(np.float32))


def read_gaussians(path: Path, error_cls: type[Exception], fix: str) -> dict[str, np.ndarray]:
    """Positions ``xyz`` [N, 3], log-scales ``scaling`` [N, 3] and rotations ``rotation``
    [N, 4] of a 3DGS PLY (colour and opacity are not read)."""
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
        raise error_cls(f"{path} is not a readable Gaussian PLY ({err}). Fix: {fix}") from None
    if scale.shape[1] != 3 or rot.shape[1] != 4:
        raise error_cls(f"{path} needs scale_0..2 and rot_0..3 fields. Fix: {fix}")
    return {"xyz": xyz.astype(np.float32), "scaling": scale.astype(np.float32),
            "rotation": rot.astype(np.float32)}
