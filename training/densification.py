"""Adaptive density control: one policy object with explicit state, and one helper that does
every change of the number of Gaussians, optimizer moments included.

Opacity reset: the original code called 3DGS's opacity reset, but its opacity is decoded by
the tri-plane network anew for every frame, so the reset had no effect. Imitating it would mean
changing the shared opacity decoder, which moves every Gaussian at once; we do not reset. The
decoded opacity still drives pruning (below ``min_opacity``), and ``opacity_reset_interval``
keeps its other role in the original schedule: screen-size pruning starts after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from scene.gaussian_model import GaussianHead
from utils.graphics_utils import quat_to_rotmat

# Moments of these parameters are copied to clones and split children; the rest start at
# zero for new Gaussians (as 3DGS).
INHERIT_MOMENTS = ("derivations",)


def _find_in_optimizers(param: nn.Parameter, optimizers) -> tuple | None:
    for opt in optimizers:
        for group in opt.param_groups:
            for i, p in enumerate(group["params"]):
                if p is param:
                    return opt, group, i
    return None


def check_optimizer_layout(model: GaussianHead, optimizers) -> None:
    """Every per-Gaussian parameter sits alone in exactly one optimizer group."""
    for name, p in model.per_gaussian().items():
        hits = [(opt, g) for opt in optimizers for g in opt.param_groups
                if any(q is p for q in g["params"])]
        if len(hits) != 1 or len(hits[0][1]["params"]) != 1:
            raise RuntimeError(f"per-Gaussian parameter {name!r} must be alone in exactly one "
                               f"optimizer group (found in {len(hits)})")


@torch.no_grad()
def remap_gaussians(model: GaussianHead, optimizers, index: torch.Tensor,
                    new_values: dict[str, torch.Tensor] | None = None,
                    fresh: torch.Tensor | None = None) -> None:
    """Make Gaussian ``j`` of the result a copy of old Gaussian ``index[j]``.

    This one operation covers prune (``index`` = kept ids), clone and split (repeated ids).
    ``new_values[name]`` [M, ...] replaces a parameter after the gather (e.g. the positions
    of split children). Optimizer state rows are gathered the same way; rows marked in
    ``fresh`` [M] (new Gaussians) get zero moments, except for parameters in
    ``INHERIT_MOMENTS``, whose children keep their parent's.
    """
    new_values = new_values or {}
    n_old = model.num_gaussians
    old = model.per_gaussian()
    model.set_gaussians({name: new_values[name] if name in new_values else p.detach()[index]
                         for name, p in old.items()})
    for name, p in old.items():
        hit = _find_in_optimizers(p, optimizers)
        if hit is None:
            continue
        opt, group, i = hit
        new_p = getattr(model, name)
        group["params"][i] = new_p
        state = opt.state.pop(p, None)
        if not state:
            continue
        for key, v in state.items():
            if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n_old:
                v = v[index]
                if fresh is not None and name not in INHERIT_MOMENTS:
                    v[fresh] = 0
                state[key] = v
        opt.state[new_p] = state


@dataclass
class DensifyConfig:
    grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    min_opacity: float = 0.005
    max_screen_size: float = 20.0
    world_size_fraction: float = 0.1
    interval: int = 100
    start: int = 500
    stop: int = 15_000
    size_prune_after: int = 3_000
    split_children: int = 2


class Densifier:
    """Clone / split / prune on the original code's schedule and thresholds.

    State (one row per Gaussian, kept the same length as the model by :meth:`remap`):
    accumulated screen-space gradient norms (NDC units), how often each Gaussian was visible,
    the largest screen radius seen, and the largest decoded opacity, all since the last
    densification. Opacity depends on the expression, so a Gaussian is pruned as transparent
    only if it was so in every frame seen since then (not just the last one: an inner mouth is
    transparent in most frames).
    """

    def __init__(self, cfg: DensifyConfig, num_gaussians: int, device: torch.device,
                 keep: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.cfg = cfg
        self.keep = keep  # positions [N, 3] -> [N] bool: False are pruned (the visual hull)
        self.grad_accum = torch.zeros(num_gaussians, device=device)
        self.denom = torch.zeros(num_gaussians, device=device)
        self.max_radii = torch.zeros(num_gaussians, device=device)
        # NaN until a frame is observed (never pruned as transparent without evidence)
        self.max_opacity = torch.full((num_gaussians,), float("nan"), device=device)

    def state_dict(self) -> dict:
        return {k: getattr(self, k).detach().clone()
                for k in ("grad_accum", "denom", "max_radii", "max_opacity")}

    def load_state_dict(self, sd: dict) -> None:
        for k, v in sd.items():
            setattr(self, k, v.to(self.grad_accum.device))

    def __len__(self) -> int:
        return self.grad_accum.shape[0]

    @torch.no_grad()
    def observe(self, means2d_grad: torch.Tensor | None, radii: torch.Tensor,
                opacities: torch.Tensor, width: int, height: int) -> None:
        """Accumulate one frame's statistics. means2d_grad [N, 2] in pixels (gsplat's and our
        rasterizer's unit) is converted to the NDC units of the original code (x W/2, x H/2)."""
        self.max_opacity = torch.fmax(self.max_opacity, opacities.detach().reshape(-1))
        visible = radii > 0
        self.max_radii = torch.where(visible, torch.maximum(self.max_radii, radii.float()),
                                     self.max_radii)
        if means2d_grad is None:
            return
        # scalars, not a tensor made from a list: that is a copy from pageable host memory,
        # which waits for the GPU queue at every iteration
        norm = torch.hypot(means2d_grad[:, 0] * (width / 2.0), means2d_grad[:, 1] * (height / 2.0))
        self.grad_accum += torch.where(visible, norm, torch.zeros_like(norm))
        self.denom += visible.float()

    def due(self, iteration: int, position: float | None = None) -> bool:
        """Whether to densify after ``iteration``: every ``interval`` iterations while the
        schedule's ``position`` (the iteration, unless a time budget runs the schedule ahead
        of it: :class:`training.run_control.ScheduleClock`) is between start and stop."""
        c = self.cfg
        p = iteration if position is None else position
        return c.start < p < c.stop and iteration % c.interval == 0

    @torch.no_grad()
    def densify_and_prune(self, model: GaussianHead, optimizers, extent: float,
                          iteration: float) -> dict[str, int]:
        """One densification step at the schedule's position ``iteration`` (large Gaussians are
        pruned after ``size_prune_after``). Returns counts of cloned, split and pruned
        Gaussians."""
        c = self.cfg
        n = model.num_gaussians
        dev = model.xyz.device
        grads = torch.nan_to_num(self.grad_accum / self.denom, nan=0.0)
        big_grad = grads >= c.grad_threshold
        scales = torch.exp(model.scaling)
        large = scales.amax(dim=1) > c.percent_dense * extent
        clone_ids = torch.nonzero(big_grad & ~large).squeeze(1)
        split_ids = torch.nonzero(big_grad & large).squeeze(1)
        k = c.split_children
        index = torch.cat([torch.arange(n, device=dev), clone_ids, split_ids.repeat(k)])
        m = len(index)
        n_children = len(split_ids) * k
        fresh = torch.zeros(m, dtype=torch.bool, device=dev)
        fresh[n:] = True

        new_values = {}
        if n_children:
            # split children: sampled inside the parent, scales shrunk by 1 / (0.8 k)
            s = scales[split_ids].repeat(k, 1)
            samples = torch.normal(torch.zeros_like(s), s)
            rot = quat_to_rotmat(model.rotation[split_ids]).repeat(k, 1, 1)
            xyz = model.xyz.detach()[index].clone()
            xyz[n + len(clone_ids):] = (rot @ samples[..., None])[..., 0] + model.xyz[
                split_ids].repeat(k, 1)
            log_s = model.scaling.detach()[index].clone()
            log_s[n + len(clone_ids):] = torch.log(s / (0.8 * k))
            new_values = {"xyz": xyz, "scaling": log_s}

        # prune (on the grown set): split parents, transparent, and (later) too large ones
        prune = torch.zeros(m, dtype=torch.bool, device=dev)
        prune[split_ids] = True
        prune |= self.max_opacity[index] < c.min_opacity
        if iteration > c.size_prune_after:
            radii = torch.where(fresh, torch.zeros_like(self.max_radii[index]),
                                self.max_radii[index])
            grown_scales = torch.exp(new_values.get("scaling", model.scaling.detach()[index]))
            if c.max_screen_size > 0:  # 0: no screen-size pruning
                prune |= radii > c.max_screen_size
            prune |= grown_scales.amax(dim=1) > c.world_size_fraction * extent
        if self.keep is not None:
            prune |= ~self.keep(new_values.get("xyz", model.xyz.detach()[index]))
        keep = ~prune
        final = index[keep]
        remap_gaussians(model, optimizers, final,
                        {k2: v[keep] for k2, v in new_values.items()}, fresh[keep])
        self.reset(len(final), dev)
        return {"cloned": len(clone_ids), "split": len(split_ids),
                "pruned": int(prune.sum()) - len(split_ids),
                "total": len(final)}

    def reset(self, n: int, device: torch.device) -> None:
        self.grad_accum = torch.zeros(n, device=device)
        self.denom = torch.zeros(n, device=device)
        self.max_radii = torch.zeros(n, device=device)
        self.max_opacity = torch.full((n,), float("nan"), device=device)

