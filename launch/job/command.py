"""The exact command that resumes a run, printed when a job stops with a checkpoint."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path


def python() -> str:
    """``python`` when that is this interpreter on the PATH, else its full path."""
    found = shutil.which("python")
    if found and os.path.realpath(found) == os.path.realpath(sys.executable):
        return "python"
    return shlex.quote(sys.executable)


def resume_command(overrides: Sequence[str], run_dir: Path, resume: str = "auto") -> str:
    """``python -m launch <the job's overrides> hydra.run.dir=<run_dir>``, resuming.

    The run folder is named (absolute) whatever chose it before, and
    ``checkpoint.resume=never`` is dropped: it would start afresh.
    """

    def key(override: str) -> str:
        return override.lstrip("+~").split("=", 1)[0]

    kept = [o for o in overrides if key(o) not in ("hydra.run.dir", "checkpoint.resume")]
    kept.append(f"hydra.run.dir={hydra_value(str(Path(run_dir).resolve()))}")
    if resume != "auto":
        kept.append("checkpoint.resume=auto")
    return " ".join([python(), "-m", "launch", *map(shlex.quote, kept)])


#: What Hydra reads as one plain string without quotes.
_PLAIN = re.compile(r"[A-Za-z0-9_./@%+:-]+")


def hydra_value(text: str) -> str:
    """``text`` as a Hydra override value that means exactly it (quoted when needed).

    A comma would make a sweep, ``=`` or a space a parse error, ``${`` an
    interpolation: such a value is single-quoted, with Hydra's escapes
    (a backslash before a quote or at the end doubled, ``\\'``, ``\\${``).

    Example::

        hydra_value("/runs/a,b")    # "'/runs/a,b'"
    """
    if _PLAIN.fullmatch(text):
        return text
    escaped = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", text)
    escaped = re.sub(r"(\\+)$", lambda m: m[1] * 2, escaped)
    escaped = escaped.replace("${", "\\${")
    return f"'{escaped}'"
