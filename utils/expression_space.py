"""The main axes of a dataset's expression vectors, for sliders: a PCA of ``exp_ori``.

An expression ``e`` [E] is written as ``mean + coeffs @ components + residual``, where
``components`` [k, E] are the k leading principal axes (orthonormal rows) of the training
expressions, ``coeffs`` [k] its coordinates along them and ``residual`` [E] what the k axes
leave out. A slider moves one coefficient; the residual of the expression being edited is kept,
so that a dataset frame's expression is reproduced exactly until a slider moves.
"""

from __future__ import annotations

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
