"""The command-line help every script shares: a description that is the whole first paragraph
of the script's docstring, and each option's default said once."""

from __future__ import annotations

import argparse
import re

# Help that already says its default ("(default: the run's setting)", "(default 5; 0: ...)")
# gets no second one; "the default browser" or "the default is what ..." do not count.
_SAYS_DEFAULT = re.compile(r"\(default\b|\bdefault:", re.IGNORECASE)


def summary(doc: str) -> str:
    """The first paragraph of a module docstring, as one line."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _shown(default) -> str:
    """A default as one would type it: booleans lower-case, lists space-separated."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, (list, tuple)):
        return " ".join(_shown(v) for v in default)
    return str(default)


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already says its default, the
    option takes no value (store_true and the like), is required, or has no default to show
    (None, suppressed, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (_SAYS_DEFAULT.search(text) or "%(default)" in text or action.nargs == 0
                or action.required or default is None or default == argparse.SUPPRESS
                or (isinstance(default, (str, list, tuple)) and len(default) == 0)):
            return text
        # the help is %-formatted after this: a % in the value must stay a %
        return f"{text} (default: {_shown(default).replace('%', '%%')})"


def make_parser(doc: str, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser described by the first paragraph of ``doc`` (a script's docstring),
    with the shared HelpFormatter; ``kwargs`` go to ArgumentParser."""
    return argparse.ArgumentParser(description=summary(doc), formatter_class=HelpFormatter,
                                   **kwargs)
