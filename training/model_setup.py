"""A new run's model, built from its dataset and options, or a resumed run's, rebuilt from its
checkpoint (whose weights the trainer then loads)."""

from __future__ import annotations

import numpy as np
import torch

from arguments import ModelParams, OptimizationParams
from scene import Scene
from scene.gaussian_model import GaussianHead, ModelConfig
from scene.run_folder import checkpoint_model
from training.face_prior import FaceSurface
from utils.execution import Execution
from utils.graphics_utils import bounding_sphere


def build_model(scene: Scene, data: ModelParams, opt: OptimizationParams, seed: int,
                execution: Execution, checkpoint: dict | None = None
                ) -> tuple[GaussianHead, np.ndarray | None, str | None]:
    """The model on the execution's device, the initial head points (None when resuming) and a
    note on where they came from. ``opt`` has its schedule resolved."""
    if checkpoint is not None:
        cfg, cls = checkpoint_model(checkpoint)
        model = cls(cfg, autocast_dtype=execution.autocast_dtype, fused=execution.fused)
        return model.to(execution.device), None, None
    body = data.body and not data.only_head
    xyz, note = scene.initial_points(data.init_points, seed, head_only=body,
                                      centre=data.head_centre, shell=data.head_shell)
    xyz, note = _face_start(scene, xyz, note, data.face_init_share, seed)
    # tri-plane coordinates are normalised to the head's bounding sphere (from the initial
    # points) so that the planes' resolution covers the head
    center, radius = bounding_sphere(xyz)
    cfg = ModelConfig(
        exp_dim=scene.exp_dim, sh_degree=data.sh_degree, num_derivations=data.num_derivations,
        triplane_res=data.triplane_res, triplane_channels=data.triplane_channels,
        center=center, radius=radius, deform_from=opt.warm_up, appearance=data.appearance,
        expression_residuals=data.expression_residuals, body=body,
        colour_view=data.colour_view, body_shape=data.body_shape,
    )
    model = GaussianHead(cfg, autocast_dtype=execution.autocast_dtype,
                         fused=execution.fused).to(execution.device)
    model.init_from_points(xyz, torch.Generator().manual_seed(seed))
    if data.deform_start == "identity":
        model.deform.start_as_identity()
    if cfg.body:
        start = scene.body_points(xyz, data.body_points, seed, data.body_shape,
                                  data.body_depth_ratio, data.body_depth_offset,
                                  data.body_margin, data.body_back)
        model.body.init_from_points(start.xyz, start.rgb,
                                    np.stack([f.c2w for f in scene.info.train_frames]),
                                    length=cfg.radius, surface=start.surface,
                                    ref_depth=start.head_depth, back=start.back)
        note += f"; {len(start.xyz)} body points" + (
            " on a surface fitted to the body's silhouette" if start.surface is not None
            else "")
    return model, xyz, note


def _face_start(scene: Scene, xyz: np.ndarray, note: str, share: float, seed: int
                ) -> tuple[np.ndarray, str]:
    """``share`` of the initial head points moved onto the dataset's face mesh (where it has
    one and the points were not read from points3d.ply)."""
    mesh = scene.info.face_mesh
    n = int(round(min(max(share, 0.0), 1.0) * len(xyz)))
    if mesh is None or n == 0 or scene.info.points3d_path is not None:
        return xyz, note
    _, radius = bounding_sphere(xyz)
    face = FaceSurface.from_mesh(mesh, scene.mean_campos().numpy(), 0.05 * radius)
    rng = np.random.default_rng(seed)
    out = xyz.copy()
    out[rng.choice(len(xyz), size=n, replace=False)] = face.surface_points(n, rng)
    return out, note + f", {n} of them on the face mesh"
