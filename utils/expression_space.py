"""The main axes of a dataset's expression vectors, for sliders: a PCA of ``exp_ori``.

An expression ``e`` [E] is written as ``mean + coeffs @ components + residual``, where
``components`` [k, E] are the k leading principal axes (orthonormal rows) of the training
expressions, ``coeffs`` [k] its coordinates along them and ``residual`` [E] what the k axes
leave out. A slider moves one coefficient; the residual of the expression being edited is kept,
so that a dataset frame's expression is reproduced exactly until a slider moves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

MAX_COMPONENTS = 8
MIN_EXPLAINED = 0.005  # axes along which the data vary less than this fraction are left out


@dataclass(frozen=True)
class ExpressionSpace:
    """The PCA of a set of expressions and the slider range of each axis."""

    mean: np.ndarray  # [E]
    components: np.ndarray  # [k, E] orthonormal rows, by decreasing variance
    low: np.ndarray  # [k] slider minimum: a low percentile of the data's coefficients
    high: np.ndarray  # [k] slider maximum: a high percentile
    std: np.ndarray  # [k] standard deviation of the data's coefficients
    explained: np.ndarray  # [k] fraction of the data's variance along each axis

    @classmethod
    def fit(cls, exps: np.ndarray, k: int = MAX_COMPONENTS,
            percentiles: tuple[float, float] = (2.0, 98.0),
            min_explained: float = MIN_EXPLAINED) -> ExpressionSpace:
        """PCA of expressions [F, E] keeping at most ``k`` axes, each explaining at least
        ``min_explained`` of the data's variance (fewer where the data vary in fewer
        dimensions)."""
        exps = np.asarray(exps, dtype=np.float64)
        if exps.ndim != 2 or len(exps) == 0:
            raise ValueError(f"expected expressions [F, E], got shape {exps.shape}")
        mean = exps.mean(0)
        _, s, vt = np.linalg.svd(exps - mean, full_matrices=False)
        total = float(np.sum(s ** 2))
        ratio = s ** 2 / total if total > 0 else np.zeros_like(s)
        keep = int(min(k, np.sum(ratio >= max(min_explained, 1e-12))))
        comps = vt[:keep]
        coeffs = (exps - mean) @ comps.T  # [F, k]
        low, high = np.percentile(coeffs, percentiles, axis=0) if keep else (
            np.zeros(0), np.zeros(0))
        explained = ratio[:keep]
        return cls(mean=mean.astype(np.float32), components=comps.astype(np.float32),
                   low=np.asarray(low, np.float64), high=np.asarray(high, np.float64),
                   std=coeffs.std(0), explained=explained)

    @property
    def k(self) -> int:
        return self.components.shape[0]

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def project(self, exps: np.ndarray) -> np.ndarray:
        """Coordinates [..., k] of expressions [..., E] along the axes."""
        return (np.asarray(exps, np.float64) - self.mean) @ self.components.T.astype(np.float64)

    def expression(self, coeffs: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """The expression [E] (float32) with coordinates ``coeffs`` [k], plus ``residual`` [E]."""
        e = self.mean + np.asarray(coeffs, np.float64) @ self.components.astype(np.float64)
        if residual is not None:
            e = e + residual
        return e.astype(np.float32)

    def residual(self, exp: np.ndarray) -> np.ndarray:
        """What the axes leave out of ``exp`` [E]: ``exp - expression(project(exp))``."""
        exp = np.asarray(exp, np.float64)
        return exp - self.expression(self.project(exp)).astype(np.float64)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A plausible random expression's coordinates [k]: a normal sample with the data's
        standard deviation along each axis, clipped to the slider ranges."""
        return np.clip(rng.normal(size=self.k) * self.std, self.low, self.high)

    @property
    def labels(self) -> list[str]:
        """The sliders' names: the axis and the share of the variance it explains."""
        return [f"Axis {i + 1} ({e:.0%})" for i, e in enumerate(self.explained)]

    @property
    def hints(self) -> list[str]:
        return [f"coordinate along the expressions' main axis {i + 1} (range: 2nd to 98th "
                "percentile of the data)" for i in range(self.k)]

    def neutral_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates [k] and residual [E] of the neutral expression: the data's mean."""
        return np.zeros(self.k), np.zeros(self.dim)


MIN_NAMED_RANGE = 0.02  # named coefficients that move less than this in the data get no slider
DIRECTIONS = {"left", "right", "up", "down", "in", "out"}


def slider_label(name: str) -> str:
    """A named coefficient as words: "jawOpen" -> "jaw open", "mouthSmileLeft" -> "smile
    left", "eyeBlinkRight" -> "blink right" ("mouth" and "eye" are dropped where a word other
    than a direction follows: "mouthLeft" stays "mouth left")."""
    words = re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)
    words = [w.lower() for w in words] or [name]
    if words[0] in ("mouth", "eye") and any(w not in DIRECTIONS for w in words[1:]):
        words = words[1:]
    return " ".join(words)


@dataclass(frozen=True)
class NamedSpace:
    """Sliders for named coefficients (blendshape-like weights in [0, 1]): one per
    coefficient that moves in the data, in the space's order, each from 0 to 1. Coordinates
    are the weights themselves; the coefficients without a slider stay in the residual."""

    names: tuple[str, ...]  # [E] every coefficient of the space
    index: np.ndarray  # [k] the coefficients with a slider
    neutral: np.ndarray  # [E] the neutral code
    std: np.ndarray  # [k] standard deviation of the data's weights
    median: np.ndarray  # [k] the data's median weights

    @classmethod
    def fit(cls, exps: np.ndarray, names: list[str] | tuple[str, ...],
            neutral: np.ndarray | None = None, min_range: float = MIN_NAMED_RANGE
            ) -> NamedSpace:
        """Sliders for the coefficients of ``names`` whose 98th percentile in the data
        ``exps`` [F, E] lies ``min_range`` above their 2nd."""
        exps = np.asarray(exps, dtype=np.float64)
        if exps.ndim != 2 or exps.shape[1] != len(names) or len(exps) == 0:
            raise ValueError(f"expected expressions [F, {len(names)}], got shape {exps.shape}")
        lo, hi = np.percentile(exps, (2.0, 98.0), axis=0)
        index = np.flatnonzero(hi - lo >= min_range)
        neutral = np.zeros(len(names)) if neutral is None else np.asarray(neutral, np.float64)
        return cls(names=tuple(names), index=index, neutral=neutral, std=exps[:, index].std(0),
                   median=np.median(exps[:, index], axis=0))

    @property
    def k(self) -> int:
        return len(self.index)

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def low(self) -> np.ndarray:
        return np.zeros(self.k)

    @property
    def high(self) -> np.ndarray:
        return np.ones(self.k)

    @property
    def labels(self) -> list[str]:
        return [slider_label(self.names[i]) for i in self.index]

    @property
    def hints(self) -> list[str]:
        return [f"{self.names[i]}: weight of the named coefficient (0: neutral, 1: its "
                "documented full motion; docs/reenactment.md)" for i in self.index]

    def project(self, exps: np.ndarray) -> np.ndarray:
        """The weights [..., k] of the coefficients with a slider."""
        return np.asarray(exps, np.float64)[..., self.index]

    def expression(self, coeffs: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """The code [E] (float32) with slider weights ``coeffs`` [k] and the other
        coefficients from ``residual`` [E] (zero at the sliders' coefficients)."""
        e = np.zeros(self.dim) if residual is None else np.array(residual, np.float64)
        e[self.index] += np.asarray(coeffs, np.float64)
        return e.astype(np.float32)

    def residual(self, exp: np.ndarray) -> np.ndarray:
        """``exp`` [E] with the sliders' coefficients zeroed."""
        out = np.array(exp, np.float64)
        out[self.index] = 0.0
        return out

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Random weights [k]: about the data's medians with its spread, in [0, 1]."""
        return np.clip(self.median + rng.normal(size=self.k) * self.std, 0.0, 1.0)

    def neutral_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights [k] and residual [E] of the neutral code."""
        return self.project(self.neutral), self.residual(self.neutral)


def slider_space(exps: np.ndarray, names: list[str] | tuple[str, ...] | None = None,
                 neutral: np.ndarray | None = None) -> ExpressionSpace | NamedSpace:
    """The sliders for expressions [F, E]: named coefficients where ``names`` are given,
    else the PCA's main axes."""
    if names is not None:
        return NamedSpace.fit(exps, names, neutral)
    return ExpressionSpace.fit(exps)
