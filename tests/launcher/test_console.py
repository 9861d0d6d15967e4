"""What a user sees on the console under ``python -m launch``: a terminal, a pipe, other ranks.

The launcher follows the rank logs itself (``launch/job/streams.py``) and
draws (``launch/job/console.py``): the unit tests feed those text as ranks
write it; the end-to-end tests run the default job under a pseudo-terminal
and through pipes and read what came out.
"""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from launch.job import console as console_module
from launch.job.console import Console
from launch.job.streams import Highlights, Segments, StackDump
from tests.launcher.launching import ROOT, clean_env, kill_group, launch

#: A bar as ProgressBar draws it (Ignite's format): nothing before or after it on its line.
BAR = re.compile(r"(Epoch \[\d+/\d+\]|Iteration): \[\d+/\d+\]\s+\d+%\|[^\[\]]*\[[\d:<?]+\]")
ANY_BAR = re.compile(r"\[\d+/\d+\]\s+\d+%\||\d+it/s|\|\s*\d+/\d+ \[")


class Screen:
    """A terminal's lines after ``text`` (``\\r``, ``\\n`` and erase-to-end-of-line)."""

    def __init__(self, text: str) -> None:
        self.lines: list[str] = []
        line: list[str] = []
        col = 0
        for token in re.findall(r"\x1b\[K|\r|\n|\x1b|[^\r\n\x1b]+", text):
            if token == "\n":
                self.lines.append("".join(line))
                line, col = [], 0
            elif token == "\r":
                col = 0
            elif token == "\x1b[K":
                del line[col:]
            else:
                for char in token:
                    line[col : col + 1] = [char]
                    col += 1
        if line:
            self.lines.append("".join(line))


# ------------------------------------------------------------------ units


@pytest.mark.parametrize(
    "chunks, pieces",
    [
        (
            ["fr", "ame1\rfra", "me2\rhello\n"],
            [("frame", "frame1"), ("frame", "frame2"), ("over", "hello")],
        ),
        (["a\nb\n", "c"], [("line", "a"), ("line", "b")]),
        (["\rA\rB", "\n"], [("frame", "A"), ("over", "B")]),  # tqdm: "\r" before each redraw
        (["bar 100%\r\n"], [("frame", "bar 100%"), ("over", "bar 100%")]),  # the frame stays
        (["x\r", "\r", "\n"], [("frame", "x"), ("over", "x")]),
    ],
)
def test_segments_cut_text_into_lines_and_frames(chunks, pieces):
    segments = Segments()
    found = [p for chunk in chunks for p in segments.feed(chunk)]
    assert found == pieces


def test_highlights_keep_warnings_and_errors_of_other_ranks_once():
    seen = set()
    rank1, rank2 = Highlights(seen), Highlights(seen)
    stderr = [
        "/x/train.py:3: UserWarning: the same on every rank",
        "  warnings.warn('the same on every rank')",
        "step 4 done",
        "Traceback (most recent call last):",
        '  File "/x/train.py", line 9, in <module>',
        "    boom()",
        "",
        "During handling of the above exception, another exception occurred:",
        "RuntimeError: boom",
        "step 5 done",
        "2026-11-25 12:00:00 [rank 1] train ERROR: disk full",
        "INFO: fine",
    ]
    kept = [line for line in stderr if rank1.keep(line)]
    assert kept == stderr[:2] + stderr[3:9] + [stderr[10]]
    assert [line for line in stderr[:3] if rank2.keep(line)] == []  # the warning: shown once


def test_a_stack_dump_of_a_stopped_rank_stays_off_the_console():
    dump = StackDump()
    lines = [
        "epoch 1 done",
        "Current thread 0x00007fa7e46a3b80 (most recent call first):",
        '  File "/usr/lib/python3.11/linecache.py", line 137 in updatecache',
        '  File "<frozen runpy>", line 198 in _run_module_as_main',
        "",
        "Thread 0x00007fa7e46a3b81 (most recent call first):",
        '  File "/x.py", line 1 in f',
        "RuntimeError: after the dump",
    ]
    assert [line for line in lines if not dump.skips(line)] == [
        "epoch 1 done",
        "RuntimeError: after the dump",
    ]


def test_console_on_a_terminal_keeps_one_live_line_under_the_lines():
    out = FakeTerminal()
    console = Console(out, out, live=True)
    console.frame("Epoch [1/2]: [1/9]  11%|#  [00:00<?]")
    console.line("a print while the bar is shown")
    console.frame("Epoch [1/2]: [5/9]  55%|#####  [00:01<00:01]")
    console.line("restart 1 of 1: ...", err=True)
    console.line("Epoch [1/2]: [9/9] 100%|######## [00:02<00:00]", over=True)
    console.line("epoch 1  validation  accuracy=0.9")
    console.frame("Epoch [2/2]: [3/9]  33%|###  [00:00<00:01]")
    console.close()
    assert Screen(out.getvalue()).lines == [
        "a print while the bar is shown",
        "restart 1 of 1: ...",
        "Epoch [1/2]: [9/9] 100%|######## [00:02<00:00]",
        "epoch 1  validation  accuracy=0.9",
        "Epoch [2/2]: [3/9]  33%|###  [00:00<00:01]",  # left where it was
    ]


def test_console_without_a_terminal_prints_a_redrawing_bar_now_and_then(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(console_module.time, "monotonic", lambda: clock[0])
    out = FakeTerminal()
    console = Console(out, out, live=False)
    for second in range(100):
        clock[0] = float(second)
        console.frame(f"tqdm {second}")
    console.line("done")
    console.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == ["tqdm 30", "tqdm 60", "tqdm 90", "done", "tqdm 99"]


class FakeTerminal:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def isatty(self):
        return True

    def getvalue(self):
        return "".join(self.parts)


# ------------------------------------------------------------------ end to end


def run_in_a_terminal(*overrides, columns=100, timeout=120):
    """``python -m launch`` with stdout and stderr on a pseudo-terminal: (exit code, text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch", *overrides],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**clean_env(), "TERM": "xterm"},
        start_new_session=True,
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: every writer is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None and not ready:
                break
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
        os.close(master)
    text = b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n")
    return proc.returncode, text


def assert_reads_like_one_process(lines):
    for line in lines:
        assert line.strip(), "an empty line in:\n" + "\n".join(lines)
        assert not re.fullmatch(r"\s*\[rank\d+\]\s*", line), line
        if ANY_BAR.search(line):
            assert BAR.fullmatch(line.strip()), f"a bar with other text: {line!r}"


def test_a_terminal_shows_one_live_bar_and_lines_of_their_own(tmp_path):
    code, text = run_in_a_terminal(f"hydra.run.dir={tmp_path}")
    assert code == 0, text
    lines = Screen(text).lines
    assert_reads_like_one_process(lines)
    assert len(lines) < 40, "\n".join(lines)
    assert lines[0] == "model: 9,610 parameters, 9,610 of them on rank 0 (ddp over 2 rank(s))"
    assert (
        lines[1] == f"no checkpoint of this run in {tmp_path}/checkpoints: starting at iteration 0"
    )
    finals = [line for line in lines if BAR.fullmatch(line)]
    assert [f[:25] for f in finals] == [f"Epoch [{k}/8]: [22/22] 100%" for k in range(1, 9)]
    assert len([line for line in lines if "validation  accuracy=" in line]) == 8
    assert lines[-1] == f"  rank logs:   {tmp_path}/logs (rank<N>.log)"
    # the bar was live: redrawn in place (several frames per epoch reach the terminal)
    for segment in re.split(r"[\r\n]", text):
        segment = segment.replace("\x1b[K", "")
        assert not ANY_BAR.search(segment) or BAR.fullmatch(segment.strip()), segment
    print(f"\n{len(lines)} console lines on a terminal; {text.count(chr(13))} redraws")


def test_without_a_terminal_the_console_gets_progress_lines_not_redraws(default_job):
    run_dir, run = default_job
    out = run.stdout
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert_reads_like_one_process(lines)
    assert len(lines) < 40, out
    finals = [line for line in lines if BAR.fullmatch(line)]
    assert [f[:25] for f in finals] == [f"Epoch [{k}/8]: [22/22] 100%" for k in range(1, 9)]
    assert run.stderr == ""
    readable = (run_dir / "logs" / "rank0.log").read_text()
    assert "\r" not in readable and readable.count("validation  accuracy=") == 8
    assert readable.startswith("=== attempt 1 (")  # counted as the console counts
    assert not (run_dir / "cli.log").exists()
    print(f"\n{len(lines)} console lines through a pipe")


def test_metrics_json_keeps_every_validation(default_job):
    run_dir, _ = default_job
    summary = json.loads((run_dir / "metrics.json").read_text())
    history = summary["history"]
    assert [(e["epoch"], e["iteration"]) for e in history] == [(k, 22 * k) for k in range(1, 9)]
    assert history[-1]["validation"] == summary["validation"]
    assert all(set(e["validation"]) == {"accuracy", "loss", "f1"} for e in history)
    assert history[0]["train"]["loss"] > history[-1]["train"]["loss"]


@pytest.mark.parametrize("console", ["rank0", "all"])
def test_other_ranks_show_their_warnings_and_errors_with_their_rank(tmp_path, console):
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "task.entrypoint=tests.launcher.entry_points:warn_and_print",
        f"dist.console={console}",
        check=True,
    )
    assert "hello from rank 0\n" in run.stdout and "[rank0]" not in run.stdout + run.stderr
    warned = run.stderr.count("UserWarning: the same on every rank")
    assert warned == (1 if console == "rank0" else 2)  # rank 0's; rank 1's only with "all"
    assert "[rank1] rank 1 ERROR: the disk is full\n" in run.stderr
    assert "[rank1] Traceback (most recent call last):" in run.stderr
    assert "[rank1] KeyError: 'caught'" in run.stderr
    assert ("[rank1] hello from rank 1\n" in run.stdout) == (console == "all")
    assert "hello from rank 1" in (tmp_path / "logs" / "rank1.log").read_text()
