"""User-facing errors: one readable message that names the file, the frame and the fix.

Entry scripts wrap their `main` in :func:`run_cli`, which prints a :class:`UserError` without a
traceback (set ``GH_TRACEBACK=1`` to see one) and exits with status 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """An error caused by input or options, with a message meant for the person running us."""


class DatasetError(UserError):
    """The dataset folder is missing, malformed or inconsistent."""


class OptionError(UserError):
    """A command-line option is invalid or contradicts the data."""


class InputError(UserError):
    """A video or folder of frames to preprocess is missing, unreadable or unusable."""


class CheckpointError(UserError):
    """A model folder or checkpoint cannot be read."""


class TrainingDiverged(UserError):
    """The loss or the parameters became non-finite."""


def first_few(items: Sequence, n: int = 5) -> str:
    """Format the first ``n`` items of a list, with a count of the rest."""
    shown = ", ".join(str(x) for x in items[:n])
    rest = len(items) - n
    return shown + (f" and {rest} more" if rest > 0 else "")


def run_cli(main: Callable[[], int | None]) -> None:
    """Run an entry point, turning :class:`UserError` into a one-message exit."""
    try:
        code = main()
    except UserError as err:
        if os.environ.get("GH_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
