"""Many ``python -m launch`` command lines refused in one process: ``main()`` once per line.

The launcher's checks run before it writes anything or starts a rank, so a
refused command line costs its checks only; running each through ``main()``
in one interpreter (as ``python -m launch`` runs it, in a subprocess of the
test) shows its exit code and what it printed, without an interpreter and
imports per line.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

from tests.launcher.launching import ROOT, clean_env


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``python -m launch *argv`` in this process: (exit code, stdout, stderr)."""
    from launch.cli import main

    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["launch", *argv]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def refusals(lines: list[list[str]], timeout: float = 120) -> list[tuple[int, str, str]]:
    """Each command line's (exit code, stdout, stderr), from one subprocess."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.launcher.refusals"],
        input=json.dumps(lines),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env(),
        timeout=timeout,
        check=True,
    )
    return [tuple(found) for found in json.loads(done.stdout)]


if __name__ == "__main__":
    results = [run_main(argv) for argv in json.load(sys.stdin)]
    sys.stdout.write(json.dumps(results))
