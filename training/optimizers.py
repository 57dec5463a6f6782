"""The optimizers: :func:`build_optimizers` (groups, learning rates and their schedules), and
the fast path's classes, with the same updates and state as ``torch.optim.Adam(fused=True)``
and geoopt's ``RiemannianAdam`` on the sphere but less host work per step.

Host time is what limits a training iteration at tens of thousands of Gaussians: torch's Adam
spends tens of microseconds per parameter group on checks and bookkeeping before its one fused
kernel, and geoopt's step runs about 25 small tensor operations through the manifold's generic
methods. The classes here keep the parent's
parameter groups, state layout and ``state_dict`` (checkpoints, densification's moment
remapping and a switch back to the parent class all work unchanged):

- :class:`FusedAdam`: one step-counter update for every group and one ``_fused_adam_`` call
  per group; the arithmetic is torch's fused kernel itself.
- :class:`SphereAdam`: the Riemannian Adam update of geoopt for parameters on
  ``geoopt.Sphere``, in 14 tensor operations (vector dot products, fused multiply-adds);
  other manifolds, AMSGrad and stabilisation fall back to geoopt's own step.
"""

from __future__ import annotations

import warnings

import torch

from arguments import OptimizationParams
from scene.gaussian_model import GaussianHead
from training.densification import check_optimizer_layout
from utils.general_utils import expon_lr

with warnings.catch_warnings():  # geoopt 0.5 calls the deprecated torch.jit.script
    warnings.simplefilter("ignore", DeprecationWarning)
    import geoopt


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` (no AMSGrad, no gradient scaler) with a leaner
    :meth:`step`. Each parameter's state is torch's: ``step`` (a float32 tensor on the
    parameter's device), ``exp_avg``, ``exp_avg_sq``. A state dict of any torch Adam loads
    (its steps are moved to the parameters' devices, as the fused kernel reads them there)."""

    # the step ignores a gradient scaler's grad_scale / found_inf: let GradScaler unscale
    _step_supports_amp_scaling = False

    def __init__(self, params, **kwargs):
        kwargs["fused"] = True
        if kwargs.get("amsgrad") or kwargs.get("capturable") or kwargs.get("foreach"):
            raise ValueError("FusedAdam supports neither amsgrad, capturable nor foreach")
        super().__init__(params, **kwargs)

    def load_state_dict(self, state_dict: dict) -> None:
        # torch takes 'fused' from the saved groups and moves 'step' to the parameter's device
        # only when it is set: a state dict of a non-fused Adam would leave the steps on the
        # CPU, where the CUDA kernel cannot read them
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["fused"] = True
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    state["step"] = torch.as_tensor(state["step"], dtype=torch.float32,
                                                    device=p.device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        steps: list[torch.Tensor] = []
        for group in self.param_groups:
            if group["amsgrad"] or group.get("decoupled_weight_decay", False):
                raise ValueError("FusedAdam supports neither amsgrad nor decoupled weight "
                                 "decay")
            params, grads, avgs, sqs, st = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("FusedAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                avgs.append(state["exp_avg"])
                sqs.append(state["exp_avg_sq"])
                st.append(state["step"])
            if params:
                work.append((group, params, grads, avgs, sqs, st))
                steps += st
        if not work:
            return loss
        torch._foreach_add_(steps, 1)
        for group, params, grads, avgs, sqs, st in work:
            beta1, beta2 = group["betas"]
            torch._fused_adam_(params, grads, avgs, sqs, [], st, lr=group["lr"], beta1=beta1,
                               beta2=beta2, weight_decay=group["weight_decay"],
                               eps=group["eps"], amsgrad=False, maximize=group["maximize"],
                               grad_scale=None, found_inf=None)
        return loss


def load_as_built(opt: torch.optim.Optimizer, state_dict: dict) -> None:
    """Load ``state_dict`` into ``opt`` keeping the implementation ``opt`` was built with.

    torch's ``load_state_dict`` takes every group option from the saved groups, the choice of
    kernel (``fused``, ``foreach``, ``capturable``) included: a checkpoint of the fast path
    resumed with ``--fast_path off`` would run the reference on the fused kernel, and one of
    the reference resumed on the fast path would hand the fused kernel steps on the CPU."""
    keys = ("fused", "foreach", "capturable", "differentiable")
    built = [{k: g[k] for k in keys if k in g} for g in opt.param_groups]
    saved = dict(state_dict)
    saved["param_groups"] = [{**{k: v for k, v in g.items() if k not in keys}, **b}
                             for g, b in zip(state_dict["param_groups"], built)]
    opt.load_state_dict(saved)


def _on_plain_sphere(p: torch.Tensor) -> bool:
    m = getattr(p, "manifold", None)
    return type(m) is geoopt.Sphere and getattr(m, "projector", None) is None


class SphereAdam(geoopt.optim.RiemannianAdam):
    """geoopt's ``RiemannianAdam`` with a vectorised step for parameters on ``geoopt.Sphere``
    (unit vectors along the last dimension). Per parameter ``x`` with gradient ``g``:

    - Riemannian gradient ``r = g - <x, g> x``;
    - ``m <- b1 m + (1 - b1) r``; ``v <- b2 v + (1 - b2) <r, r>`` (``v`` holds the squared norm
      in every component, as geoopt stores it);
    - ``y = normalise(x - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps))`` (retraction);
    - ``x <- y``, ``m <- m - <y, m> y`` (the moment transported to y's tangent space).

    Equal to geoopt's step up to rounding; state (``step`` as an int, ``exp_avg``,
    ``exp_avg_sq``) and ``state_dict`` are geoopt's."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # first: the closure makes the gradients the choice reads
            with torch.enable_grad():
                loss = closure()
        if any(g["amsgrad"] or g["stabilize"] is not None for g in self.param_groups) or any(
                p.grad is not None and not _on_plain_sphere(p)
                for g in self.param_groups for p in g["params"]):
            super().step()
            return loss
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for x in group["params"]:
                grad = x.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("SphereAdam does not support sparse gradients")
                state = self.state[x]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(x)
                    state["exp_avg_sq"] = torch.zeros_like(x)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if group["weight_decay"]:  # into the gradient, as geoopt does
                    grad.add_(x, alpha=group["weight_decay"])
                r = torch.addcmul(grad, x, torch.linalg.vecdot(x, grad).unsqueeze(-1), value=-1)
                m.lerp_(r, 1 - beta1)
                v.lerp_(torch.linalg.vecdot(r, r).unsqueeze(-1).expand_as(v), 1 - beta2)
                bc1 = 1 - beta1 ** state["step"]
                bc2 = 1 - beta2 ** state["step"]
                denom = v.mul(1 / bc2).sqrt_().add_(group["eps"])
                y = torch.addcdiv(x, m, denom, value=-group["lr"] / bc1)
                y.div_(torch.linalg.vector_norm(y, dim=-1, keepdim=True))
                m.addcmul_(y, torch.linalg.vecdot(y, m).unsqueeze(-1), value=-1)
                x.copy_(y)
        return loss


# the body's rates: 3DGS's for its per-Gaussian tensors (positions x the scene extent)
BODY_LRS = {"xyz": 1.6e-4, "scaling": 5e-3, "rotation": 1e-3, "color": 2.5e-3, "opacity": 5e-2,
            "deform": 1e-3}


def build_optimizers(m: GaussianHead, o: OptimizationParams, fused: bool = False,
                     extent: float = 1.0):
    """The original code's optimizers: Adam for the per-Gaussian tensors (one group each),
    Riemannian Adam for the derivations on the sphere, Adam for the networks (one per part);
    with a body, Adam for its per-Gaussian tensors (3DGS's rates, positions scaled by
    ``extent``) as a fourth optimizer and its pose network in the networks' optimizer.
    ``fused`` selects this module's classes (torch's fused Adam kernel, a vectorised sphere
    step). Returns the optimizers and the learning-rate schedules by group name."""
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
    if m.body is not None:
        lrs["body.deform"] = BODY_LRS["deform"]
    opt_net = adam([{"params": nets[k], "lr": lrs[k], "name": k} for k in lrs], lr=0.0,
                   eps=1e-15)
    optimizers = [opt_gauss, opt_deriv, opt_net]
    check_optimizer_layout(m, optimizers)
    schedules = {}
    if m.body is not None:
        body = m.body.per_gaussian()
        rates = {k: BODY_LRS[k] * (extent if k == "xyz" else 1.0) for k in body}
        optimizers.append(adam([{"params": [p], "lr": rates[k], "name": f"body.{k}"}
                                for k, p in body.items()], lr=0.0, eps=1e-15))
        check_optimizer_layout(m.body, optimizers)
        schedules["body.xyz"] = expon_lr(rates["xyz"], rates["xyz"] / 100,
                                         o.position_lr_max_steps)
        schedules["body.deform"] = expon_lr(BODY_LRS["deform"], BODY_LRS["deform"] / 100,
                                            o.deform_lr_max_steps)
    schedules |= {
        "xyz": expon_lr(o.position_lr_init * s, o.position_lr_final * s,
                        o.position_lr_max_steps),
        "deform": expon_lr(o.position_lr_init * s, o.position_lr_final, o.deform_lr_max_steps),
        "trip": expon_lr(o.triplane_lr, o.position_lr_final, o.triplane_lr_max_step),
        "derivations": expon_lr(o.quater_lr_init, o.quater_lr_final, o.quater_lr_max_step),
    }
    return optimizers, schedules
