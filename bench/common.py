"""What the benchmark scripts share: device timing, the commit and the device's name."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def split_extra(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """A script's own arguments and those after ``--`` (train.py options for its runs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall-clock timing of a region, synchronising the device before and after."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, fn, repeat: int = 20, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        sync(self.device)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            sync(self.device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def commit() -> str:
    """The checkout's short commit (+dirty), or $GH_COMMIT where the tree is no git checkout."""
    if os.environ.get("GH_COMMIT"):
        return os.environ["GH_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def profile(fn, device: torch.device, repeat: int = 10):
    """(total ms per call, [(kernel, ms per call, launches per call)]) of ``fn``'s device work
    (on the CPU: its operators' own CPU time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    with prof(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as p:
        for _ in range(repeat):
            fn()
        sync()

    def own(e) -> float:
        return e.self_device_time_total if cuda else e.self_cpu_time_total

    events = [e for e in p.key_averages() if own(e) > 0]
    total = sum(own(e) for e in events) / repeat / 1000
    top = sorted(events, key=own, reverse=True)
    return total, [(e.key[:90], own(e) / repeat / 1000, e.count // repeat) for e in top]


def print_profile(title: str, fn, device: torch.device, top: int, indent: str = "") -> None:
    """Profile ``fn`` and print its total device time and its ``top`` kernels."""
    total, kernels = profile(fn, device)
    print(f"{indent}{title}: {total:.3f} ms of {device.type} work per call")
    for key, ms, count in kernels[:top]:
        print(f"{indent}  {ms:8.3f} ms  x{count:<3d} {key}")
