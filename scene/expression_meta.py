"""Which expression space a dataset's ``exp_ori`` vectors live in, from its transforms.json.

tools/preprocess.py (``--expression named``, the default) writes three top-level keys:
``exp_space`` (the code's name and version), ``exp_names`` (one name per ``exp_ori`` value,
jawOpen, eyeBlinkLeft, ...) and ``exp_neutral`` (the clip's neutral code). Datasets without
them (the per-clip PCA, the published NeRFBlendShape data, anything older) are *unnamed*: their
coefficients mean something only within their own clip. Two datasets can drive each other
only in the same named space, or as unnamed data of the same length (the same subject's
clips tracked together, as the original code did).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import DatasetError

FIX_NAMED = ("Fix: make both datasets with tools/preprocess.py (its default --expression named "
             "gives every person the same named code) and train the avatar on its dataset")


@dataclass(frozen=True)
class ExpressionMeta:
    """The space of a dataset's expressions: ``names`` [E] and ``neutral`` [E] where named."""

    space: str | None = None
    names: tuple[str, ...] | None = None
    neutral: np.ndarray | None = None

    @property
    def named(self) -> bool:
        return self.names is not None

    def describe(self) -> str:
        if not self.named:
            return "unnamed expressions (a per-clip basis: PCA or the published data)"
        return f"the named space {self.space or '(no exp_space)'} ({len(self.names)} names)"


UNNAMED = ExpressionMeta()


def parse_expression_meta(meta: dict, tpath: Path, exp_dim: int) -> ExpressionMeta:
    """The expression space of a parsed transforms.json (``exp_dim``: its exp_ori length);
    raises :class:`DatasetError` for malformed keys."""
    names = meta.get("exp_names")
    if names is None:
        return UNNAMED
    if (not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)):
        raise DatasetError(f"{tpath}: 'exp_names' must be a list of distinct, non-empty names. "
                           "Fix: re-run tools/preprocess.py, or delete the key.")
    if len(names) != exp_dim:
        raise DatasetError(f"{tpath}: 'exp_names' has {len(names)} names but 'exp_ori' has "
                           f"{exp_dim} values. Fix: re-run tools/preprocess.py.")
    space = meta.get("exp_space")
    if space is not None and not isinstance(space, str):
        raise DatasetError(f"{tpath}: 'exp_space' must be a string, got {space!r}.")
    neutral = meta.get("exp_neutral")
    if neutral is None:
        arr = np.zeros(exp_dim)
    else:
        ok = isinstance(neutral, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in neutral)
        arr = np.asarray(neutral, np.float64) if ok else np.zeros(0)
        if not ok or arr.shape != (exp_dim,) or not np.isfinite(arr).all():
            raise DatasetError(f"{tpath}: 'exp_neutral' must be {exp_dim} finite numbers (one "
                               "per exp_names). Fix: re-run tools/preprocess.py.")
    return ExpressionMeta(space=space, names=tuple(names), neutral=arr)


def check_mixable(avatar: ExpressionMeta, avatar_path: Path, avatar_dim: int,
                  driver: ExpressionMeta, driver_path: Path, driver_dim: int) -> None:
    """Raise :class:`DatasetError` unless the driver's expressions can drive the avatar's."""
    where = f"--driving {driver_path} ({driver.describe()}) cannot drive the avatar of " \
            f"{avatar_path} ({avatar.describe()})"
    if avatar.named != driver.named:
        raise DatasetError(f"{where}: one is named, the other is not. {FIX_NAMED}.")
    if not avatar.named:
        if avatar_dim != driver_dim:
            raise DatasetError(f"{where}: its expressions have {driver_dim} values, the "
                               f"avatar's {avatar_dim}. {FIX_NAMED}.")
        return
    if avatar.space != driver.space:
        raise DatasetError(f"{where}: different spaces. Fix: make both datasets with the same "
                           "version of tools/preprocess.py.")
    if avatar.names != driver.names:
        diff = next((k for k, (a, b) in enumerate(zip(avatar.names, driver.names)) if a != b),
                    min(len(avatar.names), len(driver.names)))
        a = avatar.names[diff] if diff < len(avatar.names) else "(none)"
        b = driver.names[diff] if diff < len(driver.names) else "(none)"
        raise DatasetError(f"{where}: their exp_names differ (coefficient {diff}: {b} against "
                           f"{a}). Fix: make both datasets with the same version of "
                           "tools/preprocess.py.")
