"""A training run's resumable state: what checkpoint.pt holds beyond the model's files, and
how a resumed run gets it back (``train.py --resume``)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

from scene.run_folder import CHECKPOINT, config_record
from training.optimizers import load_as_built

if TYPE_CHECKING:
    from training.trainer import Trainer


def checkpoint_state(t: Trainer, iteration: int) -> dict:
    """Everything :func:`restore_state` needs to continue the run of ``t`` after
    ``iteration`` exactly as if it had not stopped."""
    return {
        "iteration": iteration,
        "data": t.data.to_dict(), "optimization": t.options.to_dict(),
        "pipeline": t.pipe.to_dict(), "seed": t.seed, **t.asked_iterations,
        "model_config": config_record(t.model),
        "model": {k: v.detach().cpu() for k, v in t.model.state_dict().items()},
        "active_sh_degree": t.model.active_sh_degree,
        "optimizers": [opt.state_dict() for opt in t.optimizers],
        "densifier": {k: v.cpu() for k, v in t.densifier.state_dict().items()},
        "body_densifier": None if t.body_densifier is None else {
            k: v.cpu() for k, v in t.body_densifier.state_dict().items()},
        "sampler": t.sampler.state_dict(),
        "rng": {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        "last_saved": t.last_saved,
        "train_seconds": t.train_seconds,
    }


def restore_state(t: Trainer, ckpt: dict) -> None:
    """Put the trainer ``t`` (built from the checkpoint's options) into the checkpoint's
    state."""
    sd = ckpt["model"]
    n = sd["xyz"].shape[0]
    t.model.set_gaussians({k: sd[k] for k in ("xyz", "scaling", "rotation", "derivations")})
    if t.model.body is not None:
        t.model.body.set_gaussians({k: sd[f"body.{k}"] for k in t.model.body.per_gaussian()})
    t.model.load_state_dict(sd)
    t.model.to(t.device)
    t.model.active_sh_degree = ckpt["active_sh_degree"]
    t._build_optimizers()
    for opt, state in zip(t.optimizers, ckpt["optimizers"]):
        load_as_built(opt, state)  # this run's kernels, whichever path wrote the state
    # torch's load_state_dict turns an integer 'step' into a float32 tensor; geoopt keeps
    # it as an int, and the bias correction would then differ in the last bit
    for st in t.opt_deriv.state.values():
        if torch.is_tensor(st.get("step")):
            st["step"] = int(st["step"].item())
    t.densifier.load_state_dict(ckpt["densifier"])
    assert len(t.densifier) == n
    if t.body_densifier is not None:
        t.body_densifier.load_state_dict(ckpt["body_densifier"])
    t.sampler.load_state_dict(ckpt["sampler"])
    rng = ckpt["rng"]
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    t.start_iteration = ckpt["iteration"] + 1
    t.last_saved = ckpt["iteration"]
    t.train_seconds = ckpt.get("train_seconds", 0.0)
    t.log(f"[run] resumed from {t.model_path / CHECKPOINT} at iteration {ckpt['iteration']} "
          f"({n} Gaussians)")
