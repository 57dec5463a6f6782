"""What steers the training loop besides the model: the order of frames, the schedule's clock
under a time budget, and Ctrl-C."""

from __future__ import annotations

import signal
import threading

import torch


class CameraSampler:
    """Visits every training camera once per epoch in a random order (seeded, resumable).

    With ``weights`` (one per camera, e.g. :func:`rare_expression_weights`), an epoch is ``n``
    draws with replacement in proportion to them instead: frames with rare expressions (a
    blink, a wide-open mouth) come round more often than once per epoch."""

    def __init__(self, n: int, seed: int, weights: torch.Tensor | None = None):
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        if weights is not None and weights.shape != (n,):
            raise ValueError(f"CameraSampler: {tuple(weights.shape)} weights for {n} cameras")
        self.weights = None if weights is None else weights.double().cpu()

    def next(self) -> int:
        if not self.order:
            if self.weights is None:
                self.order = torch.randperm(self.n, generator=self.gen).tolist()
            else:
                self.order = torch.multinomial(self.weights, self.n, replacement=True,
                                               generator=self.gen).tolist()
        return self.order.pop()

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": list(self.order)}

    def load_state_dict(self, sd: dict) -> None:
        self.gen.set_state(sd["gen"])
        self.order = list(sd["order"])


def rare_expression_weights(exps: torch.Tensor, boost: float) -> torch.Tensor:
    """Sampling weights [N] for the expressions [N, E] of the training frames, from 1 to
    ``1 + boost``: a frame's rarity is its largest coefficient's distance from that
    coefficient's median in robust standard deviations; frames up to the median rarity get 1,
    those twice as far out or further ``1 + boost``, linear between.

    The spread is the median absolute deviation (scaled to a normal's standard deviation), so
    that the rare frames themselves do not widen it; for a coefficient that rests at one value
    in most frames (a blink) it is the standard deviation. A coefficient that never moves is
    never rare. Relative to the median frame, the measure does not grow with the number of
    coefficients."""
    n = exps.shape[0]
    if boost <= 0 or n < 2:
        return torch.ones(n, dtype=torch.float64)
    e = exps.double()
    dev = (e - e.median(dim=0).values).abs()
    floor = 1e-9 * float(e.abs().max().clamp(min=1.0))
    mad = dev.median(dim=0).values * 1.4826
    spread = torch.where(mad > floor, mad, e.std(dim=0))
    moving = spread > floor
    if not bool(moving.any()):
        return torch.ones(n, dtype=torch.float64)
    rarity = (dev[:, moving] / spread[moving]).max(dim=1).values
    typical = float(rarity.median().clamp(min=1e-6))
    return 1.0 + boost * ((rarity - typical) / typical).clamp(0.0, 1.0)


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
