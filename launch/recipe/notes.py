"""The recipe's own warnings as the launcher's lines: ``warning: <message>``, no source path.

Python shows a warning as ``/site-packages/distengine/engine/engine.py:726:
RuntimeWarning: ...`` and the source line under it: a path into our code that
tells a user of the default job nothing. Warnings raised in ``distengine``
and ``launch`` are shown as one line like every other launcher message;
those of torch or of the user's own code (a model's ``_target_``) keep
Python's form, which points at the code that can be changed.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import distengine
import launch

#: Folders whose warnings are shown as one line.
OURS = tuple(str(Path(package.__file__).parent) for package in (distengine, launch))


def is_ours(filename: str) -> bool:
    """Whether a warning was raised from ``distengine`` or ``launch`` code."""
    return str(filename).startswith(OURS)


def show_our_warnings_as_lines() -> None:
    """Install the formatting above for this process (a rank of the default recipe).

    Example::

        show_our_warnings_as_lines()
        warnings.warn("resuming on 2 rank(s) ...", RuntimeWarning)   # warning: resuming on ...
    """
    shown = warnings.showwarning
    if getattr(shown, "one_line", False):
        return

    def show(message: Any, category: type, filename: str, lineno: int, *args: Any) -> None:
        if not is_ours(filename):
            return shown(message, category, filename, lineno, *args)
        file = args[0] if args and args[0] is not None else sys.stderr
        try:
            file.write(f"warning: {message}\n")
        except (OSError, ValueError):
            pass
        return None

    show.one_line = True  # type: ignore[attr-defined]
    warnings.showwarning = show
