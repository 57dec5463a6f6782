"""Named ranges of the training step, for profilers and the benchmark's host-time split.

The trainer wraps each part of an iteration in ``self.phases(name)``. By default that is a
``torch.profiler.record_function`` range (free unless a profiler runs, and named in its
traces); :class:`HostTimer` also adds up the host wall time spent in each part.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


class Phases:
    """Profiler ranges only."""

    def __call__(self, name: str):
        return torch.profiler.record_function(name)


class HostTimer(Phases):
    """Profiler ranges plus the host wall time per name (seconds, summed over calls).

    ``isolated``: synchronise the device before each range, so that a range's time is its own
    host work (plus the waits inside it) rather than also the GPU work queued before it.
    Nested ranges are timed too, and count in their parent's time as well.
    """

    def __init__(self, device: torch.device, isolated: bool = False):
        self.device = device
        self.isolated = isolated
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.isolated:
            self._sync()
        t0 = time.perf_counter()
        try:
            with torch.profiler.record_function(name):
                yield
        finally:
            self.seconds[name] += time.perf_counter() - t0
