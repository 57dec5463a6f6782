"""Where the host's time goes in training iterations: the wall time of each named part of the
step (:mod:`utils.profiling`), the device's busy time, and the host's waits for the device."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.common import sync
from training.trainer import Trainer
from utils.profiling import HostTimer, Phases


def _device_busy_s(prof) -> float:
    """Seconds in which at least one kernel, copy or fill ran: the union of the device
    activities' intervals (a plain sum would count concurrent work twice). The device-side
    spans of ``record_function`` ranges (the optimizers open some) are left out: they run
    from their first to their last kernel, idle gaps included."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA
                   and not getattr(e, "is_user_annotation", False))
    busy, end = 0.0, float("-inf")
    for a, b in spans:
        if b <= end:
            continue
        busy += b - max(a, end)
        end = b
    return busy / 1e6


def host_syncs(t: Trainer, start: int, n: int = 10) -> dict:
    """Where Python code of the training loop makes the host wait for the GPU: torch's sync
    debug mode over ``n`` iterations, as {source line: synchronizations per iteration}. A
    synchronisation inside a C++ extension (gsplat reads its tile-list size there) warns on
    stderr, not here: :func:`outside_gpu` counts the CUDA synchronisation calls themselves."""
    import warnings
    from collections import Counter

    counts: Counter = Counter()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for it in range(start, start + n):
                t.step(it)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sync(t.device)
    for w in caught:
        if "synchroniz" in str(w.message):
            counts[f"{Path(w.filename).parent.name}/{Path(w.filename).name}:{w.lineno}"] += 1
    return {k: v / n for k, v in counts.most_common()}


SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy",
              "cudaEventSynchronize")


def outside_gpu(t: Trainer, start: int, n: int = 20) -> dict:
    """Wall time vs GPU busy time of ``n`` training iterations (torch profiler)."""
    if t.device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    sync(t.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for it in range(start, start + n):
            t.step(it)
        sync(t.device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    busy = _device_busy_s(prof)
    # where the host time goes: the operators with the most self CPU time, and kernel counts
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                       "cudaLaunchKernelExC"))
    return {"wall_ms_per_it": 1000 * wall / n, "gpu_busy_ms_per_it": 1000 * busy / n,
            "outside_gpu_ms_per_it": 1000 * max(0.0, wall - busy) / n,
            "kernel_launches_per_it": launches / n,
            "sync_calls_per_it": {e.key: e.count / n for e in events if e.key in SYNC_CALLS},
            "sync_wait_ms_per_it": sum(e.self_cpu_time_total for e in events
                                       if e.key in SYNC_CALLS) / 1000 / n,
            "python_syncs_per_it": host_syncs(t, start + n),
            "top_host_ops_ms_per_it": {e.key: round(e.self_cpu_time_total / 1000 / n, 3)
                                       for e in top}}


def host_phases(t: Trainer, start: int, n: int = 50) -> dict:
    """Host wall time of ``n`` training iterations by named part of :meth:`Trainer.step`
    (its ``phases``), in ms per iteration, measured twice:

    - ``as_run``: nothing added; a part that waits for the GPU includes the wait (gsplat reads
      its tile-list size in the rasterization forward, so that part absorbs the GPU time
      queued before it);
    - ``isolated``: the device is synchronised before each part, so a part's time is its own
      host cost (launches, Python) plus the GPU time of the syncs inside it.

    ``other`` is the wall time not inside any timed part (the step's own Python, the camera,
    the non-finite check, copying the loss terms)."""
    def measure(isolated: bool) -> dict:
        timer = HostTimer(t.device, isolated=isolated)
        t.phases = timer
        try:
            sync(t.device)
            t0 = time.perf_counter()
            for it in range(start, start + n):
                t.step(it)
            sync(t.device)
            wall = time.perf_counter() - t0
        finally:
            t.phases = Phases()
        parts = {k: 1000 * v / n
                 for k, v in sorted(timer.seconds.items(), key=lambda kv: -kv[1])}
        parts["other"] = max(0.0, 1000 * wall / n - sum(parts.values()))
        return {"wall_ms_per_it": 1000 * wall / n, "parts_ms_per_it": parts}

    first = measure(isolated=False)
    return {"gaussians": t.model.num_gaussians, "iterations": n, "as_run": first,
            "isolated": measure(isolated=True)}


def print_host_phases(h: dict) -> None:
    print(f"  host time per iteration at {h['gaussians']} Gaussians (ms; as run | isolated):")
    a, b = h["as_run"], h["isolated"]
    for k in a["parts_ms_per_it"]:
        print(f"    {k:40s} {a['parts_ms_per_it'][k]:7.3f} | {b['parts_ms_per_it'].get(k, 0):7.3f}")
    print(f"    {'wall':40s} {a['wall_ms_per_it']:7.3f} | {b['wall_ms_per_it']:7.3f}")
