"""Expression vectors from pose-free landmark motion.

Each frame's landmarks, brought into the head frame by undoing its pose (see
:func:`preprocessing.geometry.image_residuals`), differ from the clip's mean face only by
non-rigid motion (jaw, lips, lids, brows, eyes). The principal components of these
displacements over the clip form the expression basis; a
frame's expression vector is its coefficients, mapped to a stable range: every coefficient
is divided by the same scale (six standard deviations of the first, the strongest, component)
and shifted by 0.5, so the strongest motion spans about [0, 1] and weaker components keep
their relative size (noise is not blown up), then clipped to [0, 1] like blendshape weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExpressionBasis:
    """mean [N, 3] face (head frame, metres), components [K, N * 3] (orthonormal rows, zero
    rows past the number of frames), scale (coefficient units per expression unit)."""

    mean: np.ndarray
    components: np.ndarray
    scale: float

    def encode(self, faces: np.ndarray) -> np.ndarray:
        """Expression vectors [F, K] in [0, 1] for pose-free faces [F, N, 3]."""
        d = (faces - self.mean).reshape(len(faces), -1)
        return np.clip(0.5 + d @ self.components.T / self.scale, 0.0, 1.0)


def fit_basis(faces: np.ndarray, dim: int) -> ExpressionBasis:
    """PCA of pose-free faces [F, N, 3] with ``dim`` components (padded with zeros when the
    clip has fewer frames than that)."""
    f = len(faces)
    mean = faces.mean(0)
    d = (faces - mean).reshape(f, -1)
    _, sing, vt = np.linalg.svd(d, full_matrices=False)
    k = min(dim, len(vt))
    comps = np.zeros((dim, d.shape[1]))
    comps[:k] = vt[:k]
    # A component's sign is arbitrary; make its largest-magnitude entry positive so the
    # basis does not flip between runs on similar clips.
    big = np.argmax(np.abs(comps), axis=1)
    comps *= np.where(comps[np.arange(dim), big] < 0, -1.0, 1.0)[:, None]
    std0 = sing[0] / np.sqrt(max(f - 1, 1)) if len(sing) else 0.0
    return ExpressionBasis(mean=mean, components=comps, scale=float(6.0 * std0 + 1e-9))
