"""Small helpers: learning-rate schedules, seeding, the logit."""

from __future__ import annotations

import math
import random

import torch


def expon_lr(lr_init: float, lr_final: float, max_steps: int):
    """Log-linear decay from ``lr_init`` (step 0) to ``lr_final`` (step >= max_steps), as 3DGS.

    ``lr_final`` must be positive: the original code decayed the derivation rate "to 0", which made
    the schedule produce NaN and is why it never ran.
    """
    if lr_init <= 0 or lr_final <= 0:
        raise ValueError(f"learning rates must be positive, got {lr_init} -> {lr_final}")

    def schedule(step: int) -> float:
        t = min(max(step / max_steps, 0.0), 1.0)
        return math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)

    return schedule


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-6, 1 - 1e-6)
    return torch.log(x / (1 - x))
