"""The launcher's console: lines above one live progress line, as a single process shows them.

The ranks write into log files (torch's agent redirects them); the launcher
follows the files (:mod:`launch.job.streams`) and draws here. Text is cut
into *lines* (ended by ``\\n``) and *frames* (ended by ``\\r``: a progress
bar's redraw, see :mod:`distengine.handlers.console`). On a terminal the
newest frame is the live line, redrawn in place; every line is printed above
it, never glued to it. Elsewhere (a pipe, a log file) frames are not
redraws: one is printed as a line now and then (every
:data:`FRAME_EVERY_S`), lines as they come.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import TextIO

#: Tells the ranks how the launcher draws (``distengine.handlers.console.CONSOLE_ENV``).
CONSOLE_ENV = "DISTENGINE_CONSOLE"
#: Without a terminal, a rank's own redrawing bar (a plain tqdm) prints a line this often.
FRAME_EVERY_S = 30.0
_CLEAR = "\r\x1b[K"  # back to the line's start, erase to its end


class Console:
    """Where the launcher and its ranks print; thread-safe.

    ``live``: draw frames in place (default: ``out`` is a terminal).

    Example::

        console = Console(sys.stdout, sys.stderr)
        console.frame("Epoch [1/8]: [3/22]  14%|#4  [00:01<00:05]")
        console.line("epoch 1  validation  accuracy=0.85")   # printed above the bar
        console.close()
    """

    def __init__(self, out: TextIO, err: TextIO, live: bool | None = None) -> None:
        self.out, self.err = out, err
        self.live = _isatty(out) if live is None else live
        self.width = shutil.get_terminal_size().columns if self.live else 0
        self._frame = ""  # the live line (on a terminal) or the frame not yet printed
        self._printed_at = time.monotonic()  # when a frame was last printed, without a terminal
        self._lock = threading.RLock()  # a signal handler may print while a thread does

    def environment(self) -> dict[str, str]:
        """What the ranks need to draw for this console (``distengine.handlers.console``)."""
        if not self.live:
            return {CONSOLE_ENV: "lines"}
        return {CONSOLE_ENV: "terminal", "COLUMNS": str(self.width)}

    def line(self, text: str, err: bool = False, over: bool = False) -> None:
        """Print ``text`` on a line of its own (on stderr with ``err``), above the live line.

        ``over``: the text replaces the live line (which comes back with the next frame).
        """
        stream = self.err if err else self.out
        with self._lock:
            if over:
                self._frame = ""
            if self.live:  # the bar's line (or a ^C the terminal echoed) makes room
                self._write(self.out, _CLEAR)
            self._write(stream, f"{text}\n")
            if self.live and self._frame:
                self._write(self.out, self._frame)

    def frame(self, text: str) -> None:
        """A redraw of the live line; blank text takes the line away."""
        text = text.rstrip()
        with self._lock:
            if not self.live:
                self._frame = text
                if text and time.monotonic() - self._printed_at >= FRAME_EVERY_S:
                    self._print_frame()
                return
            if self.width > 1:
                text = text[: self.width - 1]
            if text != self._frame:
                self._frame = text
                self._write(self.out, f"{_CLEAR}{text}")

    def close(self) -> None:
        """Leave the last frame on the screen (or print it), so later text starts below it."""
        with self._lock:
            if self.live and self._frame:
                self._write(self.out, "\n")
            elif self._frame:
                self._print_frame()
            self._frame = ""

    def _print_frame(self) -> None:
        self._write(self.out, f"{self._frame}\n")
        self._frame = ""
        self._printed_at = time.monotonic()

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed console (the terminal went away): keep going
            pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
