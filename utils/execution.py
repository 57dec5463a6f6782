"""How a run executes: device, rasterizer backend, precision and the fast path's switches.

:func:`resolve_execution` turns the command-line options into one :class:`Execution`, which
train.py, render.py and the benchmarks share and pass into the constructors that need it
(the model, the trainer, the render networks); nothing is switched on a model afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from utils.errors import OptionError

Backend = Literal["gsplat", "torch"]
Precision = Literal["fp32", "tf32", "mixed"]


@dataclass(frozen=True)
class Execution:
    """Run-time settings; none of them is part of a model's weights."""

    device: torch.device
    backend: Backend
    precision: Precision
    # bf16 autocast of the MLPs (mixed precision on CUDA); None = fp32
    autocast_dtype: torch.dtype | None = None
    # fused linear+ReLU layers and aligned decoder operands: the same function, faster
    fused: bool = False
    # per-frame networks (and, in training, the loss) replayed from CUDA graphs
    graphs: bool = False
    # torch's fused Adam kernel and the vectorised sphere step (training.optimizers)
    fast_optimizers: bool = False

    @property
    def fast(self) -> bool:
        return self.graphs


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device (checked)."""
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


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def exclusive(lock_path: Path, on_wait: Callable[[], None] | None = None):
    """Hold an exclusive lock on ``lock_path`` (created if missing) for the block: a second
    process waits here until the first leaves it (``on_wait`` is called once if it has to)."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_gsplat(log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> None:
    """Load gsplat's CUDA kernels, compiling them first where they are not built yet (once per
    machine and torch build: about 1-2 minutes), and say so. Processes that start at the same
    time wait for the one that compiles instead of failing in a half-built folder (gsplat
    removes the lock torch's own build uses)."""
    from torch.utils.cpp_extension import _get_build_directory

    build = Path(_get_build_directory("gsplat_cuda", verbose=False))
    built = lambda: (build / "gsplat_cuda.so").exists()  # noqa: E731
    with exclusive(build.parent / "gsplat_cuda.gaussianhead.lock",
                   lambda: log("waiting for another process that compiles gsplat's CUDA "
                               "rasterizer ...")):
        if not built():
            arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
            log("compiling gsplat's CUDA rasterizer: about 1-2 minutes, once"
                + ("" if arch else " (set TORCH_CUDA_ARCH_LIST, e.g. 9.0, to compile for "
                   "your GPU only)") + f"; into {build}")
        from gsplat.cuda import _backend

        if _backend._C is None:
            raise OptionError("gsplat's CUDA kernels could not be built (no CUDA toolkit with "
                              "nvcc found). Fix: install the CUDA toolkit matching torch, or "
                              "pass --backend torch.")


def resolve_backend(name: str, device: torch.device) -> Backend:
    """Map ``auto`` to a concrete backend, checking that the choice can run on ``device``."""
    if name == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if name == "gsplat":
        if device.type != "cuda":
            raise OptionError("--backend gsplat needs a CUDA device; this run is on "
                              f"{device}. Fix: pass --backend torch (or auto).")
        if not gsplat_available():
            raise OptionError("--backend gsplat: the gsplat package is not installed. Fix: "
                              "pip install -r requirements.txt, or pass --backend torch.")
        return "gsplat"
    if name == "torch":
        return "torch"
    raise OptionError(f"--backend must be auto, gsplat or torch; got {name!r}.")


def configure_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Set the process-wide matrix-product precision for ``precision`` ('fp32', 'tf32' or
    'mixed'). Returns the autocast dtype for the MLPs (bf16 on CUDA in mixed mode), else None."""
    cuda = device.type == "cuda"
    tf32 = cuda and precision in ("tf32", "mixed")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return torch.bfloat16 if cuda and precision == "mixed" else None


def resolve_execution(device: str = "auto", backend: str = "auto", precision: str = "fp32",
                      fast_path: str = "auto", *, exact: bool = False) -> Execution:
    """The one place where options become run-time settings.

    ``exact`` (models that must reproduce another implementation's arithmetic): fp32, no
    fused layers, no graphs, whatever the options say.
    """
    dev = resolve_device(device)
    be = resolve_backend(backend, dev)
    if be == "gsplat":
        prepare_gsplat()
    if precision not in ("fp32", "tf32", "mixed"):
        raise OptionError(f"--precision must be fp32, tf32 or mixed; got {precision!r}.")
    if fast_path not in ("auto", "off"):
        raise OptionError(f"--fast_path must be auto or off; got {fast_path!r}.")
    if exact:
        precision = "fp32"
    dtype = configure_precision(precision, dev)
    fast = dev.type == "cuda" and fast_path == "auto" and not exact
    return Execution(device=dev, backend=be, precision=precision, autocast_dtype=dtype,
                     fused=fast, graphs=fast, fast_optimizers=fast)
