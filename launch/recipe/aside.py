"""Moving a checkpoint out of the way without losing it: a file with its sidecars, or a folder."""

from __future__ import annotations

import shutil
from pathlib import Path


def sidecars(path: Path) -> list[Path]:
    """The small files written beside a checkpoint file (CRC-32, metadata).

    Example::

        sidecars(Path("ckpt/checkpoint_44.pt"))[1]   # ckpt/.checkpoint_44.pt.meta.json
    """
    return [path.with_name(f".{path.name}.crc32"), path.with_name(f".{path.name}.meta.json")]


def free_name(into: Path, name: str) -> str:
    """``name``, or ``<stem>-N<suffix>`` when ``into`` already holds it (never replaced).

    Example::

        free_name(Path("ckpt/corrupt"), "checkpoint_44.pt")   # "checkpoint_44-1.pt" if taken
    """
    stem, suffix = (name[: -len(".pt")], ".pt") if name.endswith(".pt") else (name, "")
    taken = {p.name for p in into.iterdir()} if into.is_dir() else set()
    count, chosen = 0, name
    while chosen in taken or f".{chosen}.meta.json" in taken:
        count += 1
        chosen = f"{stem}-{count}{suffix}"
    return chosen


def move_aside(path: Path, into: Path) -> Path:
    """Move a checkpoint file (with its sidecars) or folder into ``into``; where it now is.

    Nothing already in ``into`` is replaced: a name taken there gets ``-1``, ``-2``, ...

    Example::

        move_aside(Path("ckpt/checkpoint_44.pt"), Path("ckpt/corrupt"))
    """
    into.mkdir(parents=True, exist_ok=True)
    target = into / free_name(into, path.name)
    for source, dest in [(path, target), *zip(sidecars(path), sidecars(target))]:
        if source.exists():
            shutil.move(str(source), str(dest))
    return target
