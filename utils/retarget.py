"""Retargeting one person's expressions and head motion onto another's avatar.

Expressions in a shared named space (``exp_names`` in both datasets' transforms.json) move
by the driver's change from its own neutral code, scaled per coefficient::

    avatar_code = avatar_neutral + gain * (driver_code - driver_neutral)    (clipped to [0, 1])

Head poses (camera-to-head matrices) move by the driver's change from its mean pose, put on
the avatar's mean pose, so a driver who sits elsewhere in its frame still drives a head
where the avatar's is::

    c2h_avatar[i] = c2h_driver[i] @ inv(mean(c2h_driver)) @ mean(c2h_avatar)

(the driver's head-frame motion ``inv(mean) -> pose i`` applied to the avatar's mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_pose(c2h: np.ndarray) -> np.ndarray:
    """Mean [4, 4] of rigid poses [F, 4, 4]: the rotation nearest the mean of the rotation
    matrices (chordal mean) and the mean translation."""
    c2h = np.asarray(c2h, np.float64)
    u, _, vt = np.linalg.svd(c2h[:, :3, :3].mean(0))
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = c2h[:, :3, 3].mean(0)
    return out


def retarget_poses(driver: np.ndarray, driver_mean: np.ndarray, avatar_mean: np.ndarray
                   ) -> np.ndarray:
    """The driver's camera-to-head poses [F, 4, 4] moved from ``driver_mean`` [4, 4] onto
    ``avatar_mean`` [4, 4] (see the module docstring)."""
    return np.asarray(driver, np.float64) @ np.linalg.inv(driver_mean) @ avatar_mean


def parse_gains(text: str | float | None, names: Sequence[str]) -> np.ndarray:
    """Per-coefficient gains [len(names)] from ``"1.2"`` (every coefficient) or
    ``"jawOpen=1.2,eyeBlinkLeft=0.8"`` (the rest 1). Raises ValueError naming what is wrong."""
    gains = np.ones(len(names))
    if text is None or text == "":
        return gains
    if isinstance(text, (int, float)):
        return gains * float(text)
    text = str(text).strip()
    try:
        return gains * float(text)
    except ValueError:
        pass
    index = {n: k for k, n in enumerate(names)}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in index:
            known = ", ".join(names)
            raise ValueError(f"{item.strip()!r} is not NAME=GAIN with a coefficient of the "
                             f"expression space ({known})")
        try:
            gains[index[name]] = float(value)
        except ValueError:
            raise ValueError(f"the gain of {name} must be a number, got {value!r}") from None
    return gains


def retarget_codes(driver: np.ndarray, driver_neutral: np.ndarray, avatar_neutral: np.ndarray,
                   gains: np.ndarray) -> np.ndarray:
    """Avatar codes [F, E] from driver codes [F, E] (see the module docstring)."""
    out = avatar_neutral + gains * (np.asarray(driver, np.float64) - driver_neutral)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
