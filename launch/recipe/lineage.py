"""Checkpoints in the run folder that are not this run's: moved aside, never overwritten.

The recipe names checkpoints by iteration, so an older run's
``checkpoint_44.pt`` would be replaced by this run's. Before this run reads
or writes a checkpoint, rank 0 moves every checkpoint of another run into
``checkpoints/previous/<its run id>/``, and one whose run cannot be told (its
sidecar names no run; without a usable sidecar, no run id could be read from
the file) into ``checkpoints/previous/unknown-run/``,
and says so in one line per folder (naming the run's history, ``config.yaml``,
``metrics.json``, ``run.json`` and ``tb/``, when the launcher moved it there
as the new run started).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from distengine.checkpoint import list_checkpoints
from launch.job.folder import HISTORY
from launch.recipe.aside import move_aside

PREVIOUS_FOLDER = "previous"
UNKNOWN_RUN = "unknown-run"


def owner_folder(folder: Path, run_id: Any) -> Path:
    """Where the checkpoints of run ``run_id`` (None: a run that cannot be told) are moved.

    Example::

        owner_folder(Path("run/checkpoints"), "ab12")   # run/checkpoints/previous/ab12
    """
    name = str(run_id).replace("/", "_").lstrip(".") if run_id else UNKNOWN_RUN
    return folder / PREVIOUS_FOLDER / (name or UNKNOWN_RUN)


def set_aside_others(
    folder: Path, run_id: str, on_corrupt: Callable[[Path, str], Any]
) -> dict[Path, list[Path]]:
    """Move every checkpoint in ``folder`` not of ``run_id`` aside (rank 0); what went where.

    Corrupt ones met on the way go to ``on_corrupt(path, reason)``.

    Example::

        set_aside_others(Path("run/checkpoints"), cfg.run_id, on_corrupt=print)
    """
    moved: dict[Path, list[Path]] = {}
    try:
        for path, meta in list_checkpoints(folder, on_corrupt=on_corrupt):
            owner = meta.get("run_id")
            if owner != run_id:
                into = owner_folder(folder, owner)
                moved.setdefault(into, []).append(move_aside(path, into))
    finally:  # what was moved is said even when a later move fails
        for into, paths in moved.items():
            print(_moved_line(into, paths), flush=True)
    return moved


def _moved_line(into: Path, paths: list[Path]) -> str:
    names = ", ".join(p.name for p in paths)
    kept = [name for name in HISTORY if (into / name).exists()]  # moved there by the launcher
    if kept:
        names += f"; its history is there too: {', '.join(kept)}"
    if into.name == UNKNOWN_RUN:
        whose = (
            "checkpoints whose run cannot be told (no run id in their sidecar, "
            "or in the file where it has no usable sidecar)"
        )
    else:
        whose = f"checkpoints of another run (run id {into.name})"
    return f"{whose} moved to {into}, so that this run does not overwrite them: {names}"
