"""Small helpers: learning-rate schedules, seeding, devices."""

from __future__ import annotations

import math
import random

import torch


def expon_lr(lr_init: float, lr_final: float, max_steps: int):
    """Log-linear decay from ``lr_init`` (step 0) to ``lr_final`` (step >= max_steps), as 3DGS.

    ``lr_final`` must be positive: the release decayed the derivation rate "to 0", which made
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


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device (checked)."""
    from utils.errors import OptionError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise OptionError(
            f"--device {name!r} is not a torch device (use cpu, cuda or cuda:N).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {name} was asked for but CUDA is not available here. "
                          "Fix: pass --device cpu (or auto).")
    return dev


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-6, 1 - 1e-6)
    return torch.log(x / (1 - x))


def configure_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Set the matrix-product precision for ``precision`` ('fp32', 'tf32' or 'mixed').

    Returns the autocast dtype for the MLPs (bf16 on CUDA in mixed mode), else None.
    """
    cuda = device.type == "cuda"
    tf32 = cuda and precision in ("tf32", "mixed")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return torch.bfloat16 if cuda and precision == "mixed" else None
