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

from distengine.checkpoint.damage import find_damage
from distengine.checkpoint.disk import SUFFIX, file_checksum, legacy_checksum_path, read_meta
from distengine.checkpoint.safe_dcp import METADATA_FILE, ForgedMetadataError, read_dcp_metadata
from distengine.checkpoint.sharded import (
    MANIFEST,
    PLAIN,
    ShardedCheckpoint,
    read_manifest,
    verify_files,
)
from distengine.checkpoint.stateful import _LEGACY_PER_RANK, PER_RANK


class CorruptCheckpointError(ValueError):
    """A checkpoint file is damaged: its CRC-32 differs, or its archive cannot be read."""


class CheckpointLoadError(RuntimeError):
    """An intact checkpoint file that ``torch.load(weights_only=True)`` refuses to load."""


class CheckpointEnvironmentError(RuntimeError):
    """An intact checkpoint file that this process could not load (memory, permissions, a
    module missing): the file is not to blame, and is left where it is."""


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
    copies straight from the mapping. When loading fails, the file itself is
    examined (:func:`~distengine.checkpoint.damage.find_damage`) to say why:

    - a damaged file (its CRC-32 differs from its sidecar's, its archive is
      cut short or a member's CRC-32 differs, it is not a checkpoint at all)
      raises :class:`CorruptCheckpointError` (a ValueError) naming it;
    - an intact file holding objects ``weights_only`` loading refuses raises
      :class:`CheckpointLoadError` (it is not corrupt, and is never skipped as
      if it were);
    - an intact file that this process cannot load (MemoryError, a mapping
      refused for lack of address space, a PermissionError, a module missing)
      raises :class:`CheckpointEnvironmentError`: fix the cause and load again.

    Example::

        state = load_checkpoint_file("runs/exp1/checkpoints/checkpoint_300.pt")
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    expected = None
    try:
        expected, source = _expected_crc(path)
        if expected is not None and file_checksum(path) != expected:
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: its CRC-32 differs from the one in {source}"
            )
        return _torch_load(path, map_location, mmap)
    except CorruptCheckpointError:
        raise
    except Exception as error:
        raise _classify(path, error, expected is not None) from error


def _classify(path: Path, error: Exception, crc_matched: bool) -> Exception:
    """What a failed load of ``path`` means: damage, a refusal, or this process's trouble."""
    matched = " (its CRC-32 matches its sidecar)" if crc_matched else ""
    try:
        damage = find_damage(path)
    except OSError as reading:
        return _environment(path, reading, matched)
    if damage is not None:
        return CorruptCheckpointError(f"checkpoint {path} is corrupt: {damage}")
    missing = _missing_module(error)
    if missing is not None:
        return CheckpointEnvironmentError(
            f"checkpoint {path} is intact{matched} but needs the module {missing!r}, which is "
            "not installed here; it was left where it is: install it, then load again"
        )
    if isinstance(error, pickle.UnpicklingError):
        return CheckpointLoadError(
            f"checkpoint {path} is intact{matched} but torch.load(weights_only=True) refuses "
            "it: it holds objects other than tensors and plain values. Save only state_dict()s "
            "of tensors, numbers, strings, lists and dicts; or, if you trust the file, load it "
            f"yourself with torch.load(weights_only=False). Refused: {_first_line(error)}"
        )
    return _environment(path, error, matched)


def _environment(path: Path, error: BaseException, matched: str) -> CheckpointEnvironmentError:
    if isinstance(error, PermissionError):
        fix = "fix its permissions"
    elif isinstance(error, MemoryError) or "mmap" in str(error) or "memory" in str(error):
        fix = "free memory or address space (ulimit -v)"
    else:
        fix = "remove the cause"
    return CheckpointEnvironmentError(
        f"checkpoint {path} is intact{matched} but this process could not load it "
        f"({type(error).__name__}: {_first_line(error)}); it was left where it is: {fix}, "
        "then load it again"
    )


def _missing_module(error: Exception) -> str | None:
    """The module a load tried to import and this interpreter lacks, or None."""
    if isinstance(error, ImportError):
        return error.name or _first_line(error)
    return None


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


def _first_line(error: BaseException) -> str:
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


def _record_in(state: Mapping[str, Any]) -> dict[str, Any]:
    """The plain values (strings, numbers) at the top of a checkpoint's entries, first kept.

    What a file without a sidecar says of itself beyond its progress: a record
    saved with it, such as the launcher's ``{"run_id": ..., "world_size": ...}``.

    Example::

        _record_in({"run": {"run_id": "ab12", "config": {}}})   # {"run_id": "ab12"}
    """
    found: dict[str, Any] = {}
    for entry in state.values():
        if isinstance(entry, Mapping) and PER_RANK not in entry:
            for key, value in entry.items():
                if isinstance(key, str) and isinstance(value, (str, int, float, bool)):
                    found.setdefault(key, value)
    return found


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
    folder's manifest (for a file without a usable sidecar, in the file
    itself: see :func:`list_checkpoints`), then the latest modification; the
    number in the name does not count (``checkpoint_6.pt`` from iteration 6
    never beats ``checkpoint_3.pt`` from iteration 30). ``where(meta)`` keeps
    only checkpoints whose metadata it accepts (e.g. the same run). A
    truncated or corrupt file or folder (every file of a folder is checked
    against its manifest), and a folder of shards without its
    ``manifest.json``, is skipped and reported to ``on_corrupt(path,
    reason)`` (default: a RuntimeWarning naming it). An intact file that
    refuses ``weights_only`` loading raises :class:`CheckpointLoadError`.

    Example::

        found = find_latest_checkpoint("runs/exp1/checkpoints",
                                       where=lambda meta: meta.get("run") == run_id)
        if found:
            path, state = found
            Checkpoint.load_objects(to_load, state)
    """
    report = on_corrupt or _warn_corrupt
    candidates = []
    for path, meta, stamp in _candidates(Path(dirname), map_location, report):
        if where is not None and not where(meta):
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


def list_checkpoints(
    dirname: str | os.PathLike,
    map_location: Any = "cpu",
    on_corrupt: Callable[[Path, str], Any] | None = None,
) -> list[tuple[Path, dict[str, Any]]]:
    """Every checkpoint file and sharded folder in ``dirname`` with its metadata, by name.

    The metadata is the file's sidecar or the folder's manifest. A file
    whose sidecar is missing or unreadable is loaded to say what it holds:
    its engine's ``iteration`` and ``epoch`` and the plain values (strings,
    numbers) at the top of its entries, such as a ``run_id`` saved with it.
    An intact file that ``weights_only`` loading refuses (a user's pickled
    objects) is listed with empty metadata: nothing is known of it. What
    cannot be read (a corrupt file, a folder of shards without
    ``manifest.json``) is left out and reported to ``on_corrupt(path,
    reason)`` (default: a RuntimeWarning naming it).

    Example::

        for path, meta in list_checkpoints("runs/exp1/checkpoints"):
            print(path.name, meta.get("iteration"), meta.get("run_id"))
    """
    report = on_corrupt or _warn_corrupt
    found = _candidates(Path(dirname), map_location, report, list_refused=True)
    return [(path, meta) for path, meta, _ in sorted(found, key=lambda c: c[0].name)]


def _candidates(folder: Path, map_location: Any, report: Callable, list_refused: bool = False):
    """(path, metadata, modification time) of every readable checkpoint file and folder.

    A file that ``weights_only`` loading refuses raises CheckpointLoadError, or with
    ``list_refused`` comes with empty metadata.
    """
    if not folder.is_dir():
        return
    for path in folder.glob(f"*{SUFFIX}"):
        if not path.name.startswith(".") and path.is_file():
            try:
                meta = _usable_sidecar(path) or _meta_from_file(path, map_location, report)
            except CheckpointLoadError:
                if not list_refused:
                    raise
                meta = {}
            if meta is not None:
                yield path, meta, path.stat().st_mtime
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not path.name.startswith("."):
            found = _folder_meta(path, report)
            if found is not None:
                yield path, found, (path / MANIFEST).stat().st_mtime


def _usable_sidecar(path: Path) -> dict[str, Any] | None:
    """A file's sidecar when it is one DiskSaver wrote (a JSON object with a CRC-32), else None."""
    meta = read_meta(path)
    return meta if meta is not None and "crc32" in meta else None


def _folder_meta(path: Path, report: Callable) -> dict[str, Any] | None:
    """A sharded folder's manifest; None (reported when it holds shards) when unreadable."""
    if not (path / MANIFEST).is_file():
        if _holds_shards(path):
            report(
                path,
                f"sharded checkpoint {path} has no {MANIFEST}: Checkpoint writes it before the "
                "folder takes its name, so the folder is damaged (or not written by Checkpoint)",
            )
        return None
    try:
        return ShardedCheckpoint(path).metadata
    except ValueError as error:
        report(path, f"sharded checkpoint {path}: {error}")
        return None


def _holds_shards(path: Path) -> bool:
    """Whether a folder holds files of a sharded checkpoint (DCP's index or shards, plain.pt)."""
    return any(p.name in (".metadata", PLAIN) or p.suffix == ".distcp" for p in path.iterdir())


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CorruptCheckpointError` when ``path`` differs from what was written.

    A file is checked against its sidecar's CRC-32 (a file without one is not
    checked), a sharded folder's files against its manifest; nothing is
    loaded. Reading errors propagate as OSError.

    Example::

        verify_checkpoint("runs/exp1/checkpoints/checkpoint_44.pt")   # or CorruptCheckpointError
    """
    path = Path(path)
    if path.is_dir():
        try:
            verify_files(path, read_manifest(path))
        except ValueError as error:
            raise CorruptCheckpointError(str(error)) from None
        return
    expected, source = _expected_crc(path)
    if expected is not None and file_checksum(path) != expected:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt: its CRC-32 differs from the one in {source}"
        )


def _load_verified(path: Path, map_location: Any) -> Any:
    """A file's contents, or a folder's handle once every file matches its manifest and DCP's
    ``.metadata`` holds only DCP's own types (read safely: nothing in it runs)."""
    if not path.is_dir():
        return load_checkpoint_file(path, map_location)
    found = ShardedCheckpoint(path)
    try:
        verify_files(path, found.manifest)
        if (path / METADATA_FILE).exists():
            read_dcp_metadata(path)
    except ForgedMetadataError as error:
        raise CheckpointLoadError(f"sharded checkpoint {path} is refused: {error}") from None
    except ValueError as error:  # a file that differs from the manifest, a garbled .metadata
        raise CorruptCheckpointError(str(error)) from None
    except OSError as error:
        raise CheckpointEnvironmentError(
            f"sharded checkpoint {path} could not be read by this process "
            f"({type(error).__name__}: {error}); it was left where it is"
        ) from None
    return found


def _meta_from_file(path: Path, map_location: Any, report: Callable) -> dict[str, Any] | None:
    """What a file without a usable sidecar says of itself (it is loaded once to find out)."""
    try:
        state = load_checkpoint_file(path, map_location)
    except CorruptCheckpointError as error:
        report(path, str(error))
        return None
    if not isinstance(state, Mapping):
        return {}
    return {**_record_in(state), **_progress_in(state)}
