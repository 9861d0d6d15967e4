"""Following the ranks' log files: rank 0 on the console as itself, the others when it matters.

torch's agent redirects every rank's stdout and stderr into files under
``logs/<run>/attempt_<n>/<local rank>/``. A :class:`Follower` (one thread)
reads the files of the current attempt as they grow and

- shows global rank 0's output as a single process would: its lines, and its
  progress bar as the console's live line (:class:`~launch.job.console.Console`);
- shows another rank's warnings and errors (from its stderr, tracebacks
  whole) with a ``[rank<N>]`` prefix, a warning that an earlier rank already
  showed only once; with ``dist.console=all``, every line of every rank;
- writes each rank's readable log, ``logs/rank<N>.log`` (every line of its
  stdout and stderr, each attempt under a header; bar redraws left out).
"""

from __future__ import annotations

import codecs
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from launch.job.console import Console
from launch.job.folder import describe_os_error

#: How often the files are read (seconds).
POLL_S = 0.05
#: A line that starts a warning or an error worth showing from a rank other than 0.
NOTABLE = re.compile(
    r"\b\w*(Warning|Error|Exception)\b|\b(WARNING|ERROR|CRITICAL|FATAL)\b"
    r"|^Traceback \(most recent call last\)|^(warning|error): "
)
_TRACEBACK_GOES_ON = ("During handling of the above exception", "The above exception was")


class Segments:
    """Cuts text into lines (``\\n``-ended) and frames (``\\r``-ended); keeps the unended rest.

    ``feed`` returns ``("frame", text)``, ``("line", text)``, and ``("over", text)``
    for a line written over the frame just before it, as on a terminal: a
    bar's last state (``frame\\r\\n``, or tqdm's ``\\rframe\\n``) or text
    printed while a bar was shown (it takes the bar's line until the bar is
    drawn again).
    """

    def __init__(self) -> None:
        self.rest = ""
        self._frame = ""  # the frame just seen, while nothing followed it

    def feed(self, text: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        parts = re.split(r"(\r|\n)", self.rest + text)
        self.rest = parts.pop()
        for body, end in zip(parts[::2], parts[1::2]):
            if end == "\r":
                if body:
                    found.append(("frame", body))
                    self._frame = body
                continue
            if self._frame:
                found.append(("over", body or self._frame))
            else:
                found.append(("line", body))
            self._frame = ""
        return found

    def end(self) -> list[tuple[str, str]]:
        """What is left when the stream ends: an unended line is a line."""
        rest, self.rest = self.rest, ""
        return self.feed(f"{rest}\n") if rest else []


class Highlights:
    """Which lines of a rank's stderr matter: warnings and errors, tracebacks whole."""

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen  # first lines of warnings already shown (shared by the ranks)
        self.state = ""  # "", "block" (a warning and its indented lines) or "traceback"
        self.shown = False

    def keep(self, line: str) -> bool:
        indented = line[:1] in (" ", "\t")
        if self.state == "traceback":
            if not indented and line and not line.startswith(_TRACEBACK_GOES_ON):
                self.state = ""
            return True
        if self.state == "block" and indented:
            return self.shown
        self.state = ""
        if line.startswith("Traceback (most recent call last)"):
            self.state = "traceback"
            return True
        if NOTABLE.search(line):
            self.state, self.shown = "block", line not in self.seen
            self.seen.add(line)
            return self.shown
        return False


class StackDump:
    """The lines of a faulthandler stack dump (``Current thread 0x... (most recent call
    first):`` and its frames, after ``Timeout (0:05:00)!`` when the hang watchdog fired),
    which a rank writes when it is stopped or hangs: the failure summary names them."""

    HEADER = re.compile(
        r"^((Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):"
        r"|Timeout \(\d+:\d\d:\d\d(\.\d+)?\)!)$"
    )

    def __init__(self) -> None:
        self.inside = False

    def skips(self, line: str) -> bool:
        if self.HEADER.match(line):
            self.inside = True
        elif self.inside and not (line.startswith("  File ") or not line.strip()):
            self.inside = False
        return self.inside


@dataclass
class Source:
    """One file of one rank (``stdout`` or ``stderr``) as far as it was read."""

    rank: int
    kind: str
    path: Path
    highlights: Highlights
    segments: Segments = field(default_factory=Segments)
    dump: StackDump = field(default_factory=lambda: StackDump())
    file: BinaryIO | None = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def read(self) -> str:
        """What the rank wrote since the last read ("" before the file exists)."""
        if self.file is None:
            try:
                self.file = open(self.path, "rb")  # noqa: SIM115 - kept open while followed
            except FileNotFoundError:
                return ""
        return self.decoder.decode(self.file.read())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class Follower:
    """Reads the current attempt's rank logs in a thread and shows them (see the module).

    Example::

        follower = Follower(console, log_dir, everything=False)
        follower.attempt(0, {0: ("…/0/stdout.log", "…/0/stderr.log"), 1: (...)})
        ...                                     # the ranks run
        follower.close()                        # reads what is left, stops the thread
    """

    def __init__(self, console: Console, log_dir: Path, everything: bool = False) -> None:
        self.console, self.log_dir, self.everything = console, Path(log_dir), everything
        self.sources: list[Source] = []
        self._logs: dict[int, TextIO] = {}
        self.log_error: str | None = None  # why the readable logs could not be written
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rank-logs", daemon=True)
        self._thread.start()

    def attempt(self, number: int, files: dict[int, tuple[str, str]]) -> None:
        """Follow a new attempt's files ({global rank: (stdout, stderr)}); finish the last one's.

        ``number`` counts restarts (torch's ``attempt_<number>`` folder); the logs say
        ``attempt 1``, ``attempt 2 (restart 1)``, as the console does.
        """
        with self._lock:
            self._finish_sources()
            seen: set[str] = set()
            for rank in sorted(files):
                log = self._log(rank)
                when = time.strftime("%Y-%m-%d %H:%M:%S")
                self._write(log, f"=== {attempt_name(number)} ({when}) ===\n")
                for kind, path in zip(("stdout", "stderr"), files[rank]):
                    self.sources.append(Source(rank, kind, Path(path), Highlights(seen)))

    def close(self) -> None:
        """Read what the ranks left, stop following, close the readable logs and the console."""
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            self._finish_sources()
            for log in self._logs.values():
                try:
                    log.close()
                except OSError:  # its last write failed: already said
                    pass
            self._logs.clear()
        self.console.close()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._lock:
                for source in self.sources:
                    self._show(source, source.segments.feed(source.read()))

    def _finish_sources(self) -> None:
        for source in self.sources:
            self._show(source, source.segments.feed(source.read()) + source.segments.end())
            source.close()
        if any(s.rank == 0 for s in self.sources):
            self.console.close()  # the last attempt's bar stays where it was
        self.sources = []

    def _show(self, source: Source, pieces: list[tuple[str, str]]) -> None:
        log = self._logs.get(source.rank)
        written = [f"{text}\n" for what, text in pieces if what != "frame"]
        if written and log is not None:
            self._write(log, "".join(written))
        for what, text in pieces:
            if source.rank == 0:
                self._show_rank0(source, what, text)
            elif what != "frame" and (self.everything or self._notable(source, text)):
                self.console.line(f"[rank{source.rank}] {text}", err=source.kind == "stderr")

    def _write(self, log: TextIO, text: str) -> None:
        """Write to a readable log; a full disk is said once and the logs stop there."""
        if self.log_error is not None:
            return
        try:
            log.write(text)
            log.flush()
        except OSError as error:
            self.log_error = describe_os_error(error, Path(log.name))
            self.console.line(
                f"warning: {self.log_error}; the rank logs stop here "
                f"(the raw ones, if they could be written, are under {self.log_dir})",
                err=True,
            )

    def _show_rank0(self, source: Source, what: str, text: str) -> None:
        if source.kind == "stderr" and source.dump.skips(text):
            return  # a stack dump (the rank was stopped): in its log, not on the console
        if what == "frame":
            self.console.frame(text)
        elif what == "over":
            self.console.line(text, err=source.kind == "stderr", over=True)
        else:
            self.console.line(text, err=source.kind == "stderr")
            if source.kind == "stderr":
                source.highlights.keep(text)  # the other ranks' same warning is not repeated

    @staticmethod
    def _notable(source: Source, text: str) -> bool:
        return source.kind == "stderr" and source.highlights.keep(text)

    def _log(self, rank: int) -> TextIO:
        if rank not in self._logs:
            path = self.log_dir / f"rank{rank}.log"
            try:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                self._logs[rank] = open(path, "a")  # noqa: SIM115
            except OSError as error:
                self._logs[rank] = open(os.devnull, "w")  # noqa: SIM115
                self._write(_Failing(path, error), "")
        return self._logs[rank]


def attempt_name(restarts: int) -> str:
    """``attempt 1`` for the first start, ``attempt 2 (restart 1)`` after a restart."""
    return f"attempt {restarts + 1}" + (f" (restart {restarts})" if restarts else "")


class _Failing:
    """A log that could not be opened: writing it reports why."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.name, self.error = str(path), error

    def write(self, text: str) -> None:
        raise self.error

    def flush(self) -> None:
        pass
