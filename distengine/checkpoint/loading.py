"""Loading checkpoints: files verified against their sidecar, and finding the newest one.

A checkpoint is one file (``name.pt``, plain state) or a folder with a
``manifest.json`` (sharded state, :mod:`distengine.checkpoint.sharded`);
:func:`find_latest_checkpoint` and :func:`open_checkpoint` take both.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from distengine.checkpoint.disk import SUFFIX, file_checksum, legacy_checksum_path, read_meta
from distengine.checkpoint.sharded import MANIFEST, ShardedCheckpoint, verify_files
from distengine.checkpoint.stateful import _LEGACY_PER_RANK, PER_RANK


class CorruptCheckpointError(ValueError):
    """A checkpoint file is truncated or damaged (its CRC-32 differs, or it cannot be read)."""


class CheckpointLoadError(RuntimeError):
    """An intact checkpoint file that ``torch.load(weights_only=True)`` refuses to load."""


def _expected_crc(path: Path) -> tuple[str | None, str]:
    meta = read_meta(path)
    if meta is not None and "crc32" in meta:
        return str(meta["crc32"]), f".{path.name}.meta.json"
    legacy = legacy_checksum_path(path)
    if legacy.is_file():
        return legacy.read_text().strip(), legacy.name
    return None, ""


def load_checkpoint_file(
    path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = True
) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``, checked against its CRC-32 where one was kept.

    With ``mmap`` (the default) the tensors are memory-mapped from the file
    rather than read into this process's memory: ranks of one node share the
    page cache instead of holding a full copy each, and ``load_state_dict``
    copies straight from the mapping. A truncated or damaged file raises
    :class:`CorruptCheckpointError` (a ValueError) naming it. An intact file
    that holds objects ``weights_only`` loading refuses raises
    :class:`CheckpointLoadError` (it is not corrupt, and is never skipped as
    if it were).

    Example::

        state = load_checkpoint_file("runs/exp1/checkpoints/checkpoint_300.pt")
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    expected, source = _expected_crc(path)
    if expected is not None and file_checksum(path) != expected:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt: its CRC-32 differs from the one in {source}"
        )
    try:
        return _torch_load(path, map_location, mmap)
    except pickle.UnpicklingError as error:
        if expected is not None or "Unsupported global" in str(error):
            raise CheckpointLoadError(
                f"checkpoint {path} is intact"
                + (" (its CRC-32 matches)" if expected is not None else "")
                + " but torch.load(weights_only=True) refuses it: it holds objects other than "
                "tensors and plain values. Save only state_dict()s of tensors, numbers, strings, "
                "lists and dicts; or, if you trust the file, load it yourself with "
                f"torch.load(weights_only=False). Refused: {_first_line(error)}"
            ) from error
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt or truncated ({_first_line(error)})"
        ) from error
    except Exception as error:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt or truncated ({_first_line(error)})"
        ) from error


def _torch_load(path: Path, map_location: Any, mmap: bool) -> Any:
    """``torch.load`` memory-mapped where the file allows it (zip format, not legacy)."""
    if mmap:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap can only be used" not in str(error):
                raise
    return torch.load(path, map_location=map_location, weights_only=True)


def open_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """A checkpoint in either form: a file's contents, or a folder's :class:`ShardedCheckpoint`.

    Both are what :meth:`~distengine.handlers.Checkpoint.load_objects` takes.

    Example::

        state = open_checkpoint(path)       # path from find_latest_checkpoint on rank 0
        Checkpoint.load_objects(to_load, state)
    """
    path = Path(path)
    if path.is_dir():
        return ShardedCheckpoint(path)
    return load_checkpoint_file(path, map_location)


def _first_line(error: Exception) -> str:
    text = str(error)
    found = re.search(r"Unsupported (global: [^\n]*?(?= was not)|[^\n]*)", text)
    if found:
        return found.group(0)
    return text.strip().splitlines()[0] if text.strip() else repr(error)


def _progress_in(state: Mapping[str, Any]) -> dict[str, int]:
    """Iteration and epoch of the first engine-like entry of a checkpoint without a sidecar."""
    for entry in state.values():
        if isinstance(entry, Mapping) and PER_RANK in entry and entry[PER_RANK]:
            entry = entry[PER_RANK][0]
        if isinstance(entry, Mapping) and isinstance(entry.get("iteration"), int):
            if _LEGACY_PER_RANK in entry or "epoch" in entry:
                return {"iteration": entry["iteration"], "epoch": int(entry.get("epoch") or 0)}
    return {}


def _step_in_name(path: Path) -> int:
    numbers = re.findall(r"_(\d+)(?:_|\.pt$)", path.name)
    return int(numbers[-1]) if numbers else -1


def _warn_corrupt(path: Path, reason: str) -> None:
    warnings.warn(f"skipping {reason}", RuntimeWarning, stacklevel=3)


def find_latest_checkpoint(
    dirname: str | os.PathLike,
    map_location: Any = "cpu",
    where: Callable[[dict[str, Any]], bool] | None = None,
    on_corrupt: Callable[[Path, str], Any] | None = None,
) -> tuple[Path, Any] | None:
    """The newest checkpoint in ``dirname`` that loads, with its contents, or None.

    Files (``name.pt``) come with their contents (a dict); sharded folders
    (``name/`` with a ``manifest.json``) with a :class:`ShardedCheckpoint`
    (their shards load into sharded objects, on any number of ranks);
    :meth:`~distengine.handlers.Checkpoint.load_objects` takes either.
    Newest means the highest iteration stored in the file's sidecar or the
    folder's manifest (for a file without a sidecar, in the file itself), then
    the latest modification; the number in the name does not count
    (``checkpoint_6.pt`` from iteration 6 never beats ``checkpoint_3.pt`` from
    iteration 30). ``where(meta)`` keeps only checkpoints whose metadata it
    accepts (e.g. the same run). A truncated or corrupt file or folder (every
    file of a folder is checked against its manifest) is skipped and reported
    to ``on_corrupt(path, reason)`` (default: a RuntimeWarning naming it). An
    intact file that refuses ``weights_only`` loading raises
    :class:`CheckpointLoadError`.

    Example::

        found = find_latest_checkpoint("runs/exp1/checkpoints",
                                       where=lambda meta: meta.get("run") == run_id)
        if found:
            path, state = found
            Checkpoint.load_objects(to_load, state)
    """
    folder = Path(dirname)
    if not folder.is_dir():
        return None
    report = on_corrupt or _warn_corrupt
    candidates = []
    for path, meta, stamp in _candidates(folder, map_location, report):
        if meta is None or (where is not None and not where(meta)):
            continue
        iteration = meta.get("iteration")
        order = iteration if isinstance(iteration, int) else _step_in_name(path)
        candidates.append((order, stamp, path))
    for _, _, path in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
        try:
            return path, _load_verified(path, map_location)
        except CorruptCheckpointError as error:
            report(path, str(error))
    return None


def _candidates(folder: Path, map_location: Any, report: Callable):
    """(path, metadata or None, modification time) of every checkpoint file and folder."""
    for path in folder.glob(f"*{SUFFIX}"):
        if not path.name.startswith(".") and path.is_file():
            meta = read_meta(path) or _meta_from_file(path, map_location, report)
            yield path, meta, path.stat().st_mtime
    for manifest in folder.glob(f"*/{MANIFEST}"):
        path = manifest.parent
        if path.name.startswith("."):
            continue
        try:
            meta = ShardedCheckpoint(path).metadata
        except ValueError as error:
            report(path, f"sharded checkpoint {path}: {error}")
            continue
        yield path, meta, manifest.stat().st_mtime


def _load_verified(path: Path, map_location: Any) -> Any:
    """A file's contents, or a folder's handle once every file matches its manifest."""
    if not path.is_dir():
        return load_checkpoint_file(path, map_location)
    found = ShardedCheckpoint(path)
    try:
        verify_files(path, found.manifest)
    except (ValueError, OSError) as error:
        raise CorruptCheckpointError(str(error)) from None
    return found


def _meta_from_file(path: Path, map_location: Any, report: Callable) -> dict[str, Any] | None:
    """What a file without a sidecar says of itself (it is loaded once to find out)."""
    try:
        state = load_checkpoint_file(path, map_location)
    except CorruptCheckpointError as error:
        report(path, str(error))
        return None
    return _progress_in(state) if isinstance(state, Mapping) else {}
