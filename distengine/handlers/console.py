"""Where a rank's progress output ends up, and how to draw it there.

A progress bar is drawn one of three ways:

- ``"terminal"``: the stream is a terminal; tqdm redraws its line in place.
- ``"frames"``: the stream is followed by a launcher that draws on a terminal
  (``python -m launch`` sets ``DISTENGINE_CONSOLE=terminal`` for its ranks).
  Each redraw is written as one frame ending in ``\\r``; the launcher shows
  the newest frame as its live line and prints every ``\\n``-ended line above
  it, so text printed after a frame never lands on the bar's line.
- ``"lines"``: nobody draws (a pipe, a log file, CI, SLURM): the bar is
  written as a plain line now and then, never as redraws.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, TextIO

#: Set by a launcher that follows its ranks' stdout/stderr: ``terminal`` or ``lines``.
CONSOLE_ENV = "DISTENGINE_CONSOLE"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _is_standard(stream: Any) -> bool:
    """Whether ``stream`` writes to this process's stdout or stderr (what a launcher follows)."""
    try:
        return stream.fileno() in (1, 2)
    except (AttributeError, ValueError, OSError):
        return False


def console_kind(stream: TextIO) -> str:
    """How a bar on ``stream`` is drawn: ``"terminal"``, ``"frames"`` or ``"lines"``.

    Example::

        console_kind(sys.stderr)   # "terminal" in a terminal, "lines" in CI
    """
    if _isatty(stream):
        return "terminal"
    if os.environ.get(CONSOLE_ENV) == "terminal" and _is_standard(stream):
        return "frames"
    return "lines"


def frame_width() -> int | None:
    """The width of the terminal a launcher draws on (``COLUMNS``), if known."""
    columns = shutil.get_terminal_size(fallback=(0, 0)).columns
    return columns - 1 if columns > 1 else None


class Sink:
    """A stream that keeps nothing: tqdm computes, the caller writes (frames and lines).

    It reports the encoding of the stream really written to (tqdm draws a
    unicode bar where that stream takes it).
    """

    def __init__(self, real: Any = None) -> None:
        self.encoding = getattr(real, "encoding", None)

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


def write_frame(stream: TextIO, text: str) -> None:
    """A live redraw for a launcher to show (``"frames"``): the text, then ``\\r``."""
    stream.write(f"{text}\r")
    stream.flush()


def clear_frame(stream: TextIO) -> None:
    """Take the live line away (``"frames"``): a blank frame."""
    write_frame(stream, " ")


def write_line(stream: TextIO, text: str) -> None:
    """A line that stays (a bar's last state, a message)."""
    stream.write(f"{text}\n")
    stream.flush()
