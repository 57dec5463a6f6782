"""What steers the training loop besides the model: the order of frames, the schedule's clock
under a time budget, and Ctrl-C."""

from __future__ import annotations

import signal
import threading

import torch


class CameraSampler:
    """Visits every training camera once per epoch in a random order (seeded, resumable)."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> int:
        if not self.order:
            self.order = torch.randperm(self.n, generator=self.gen).tolist()
        return self.order.pop()

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": list(self.order)}

    def load_state_dict(self, sd: dict) -> None:
        self.gen.set_state(sd["gen"])
        self.order = list(sd["order"])


class ScheduleClock:
    """Where a run stands in its schedule: the position every learning rate and phase (warm-up,
    densification, pruning) is a function of.

    Without a time limit it is the iteration. With one (seconds of training steps), the
    schedule of ``iterations`` is fitted to the budget: the position is the share of the budget
    spent times ``iterations``, or the iteration where the iterations run ahead of the clock.
    A machine too slow for the schedule goes through every phase, each compressed to the
    iterations it can do, and stops at the schedule's end when the budget is spent; a fast one
    trains as it would without the limit."""

    def __init__(self, iterations: int, time_limit: float | None = None):
        self.iterations = iterations
        self.time_limit = time_limit

    def position(self, iteration: int, seconds: float) -> float:
        """The schedule's position at ``iteration`` after ``seconds`` of training steps."""
        if self.time_limit is None:
            return iteration
        return max(float(iteration), self.iterations * min(seconds / self.time_limit, 1.0))

    def spent(self, seconds: float) -> bool:
        """Whether the budget is spent."""
        return self.time_limit is not None and seconds >= self.time_limit


class DeferredInterrupt:
    """Ctrl-C during training: the first one lets the current iteration finish (so that the
    checkpoint holds a consistent state), the second stops at once (no checkpoint)."""

    def __init__(self, log=print):
        self.log = log
        self.requested = False
        self._previous = None

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log("\n[run] Ctrl-C: finishing this iteration, then saving a checkpoint "
                 "(Ctrl-C again to stop without one)")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
