"""Sharded checkpoints as folders written with torch.distributed.checkpoint (DCP).

Every rank writes its shards into a temporary folder ``.<name>.tmp-<id>/``;
when all have finished, rank 0 records every file's size and CRC-32 (plus
the caller's metadata) in ``manifest.json`` and renames the folder to
``<name>/``. A crash at any point leaves no folder under a final name and the
earlier checkpoints as they were. Loading checks the manifest (each file read
by one rank), then lets DCP read the shards, resharding to any number of ranks.

Layout of a committed checkpoint::

    <name>/__0_0.distcp ...   one shard file per rank (DCP)
    <name>/.metadata          DCP's index of the shards
    <name>/plain.pt           the small, unsharded state (torch.save, rank 0)
    <name>/manifest.json      {"format", "world_size", "files": {file: {size, crc32}},
                               "entries": {"sharded": [...], "plain": [...]}, ...metadata}

:class:`ShardedCheckpoint` is a committed folder as a whole (what
:func:`~distengine.checkpoint.find_latest_checkpoint` returns for one, and
what :meth:`~distengine.handlers.Checkpoint.load_objects` loads);
:func:`~distengine.checkpoint.consolidate.consolidate` makes one file of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from distengine.checkpoint.disk import file_checksum, fsync_dir
from distengine.checkpoint.safe_dcp import (
    read_dcp_metadata,
    safe_reader_class,
    weights_only_planner,
)
from distengine.checkpoint.sharded_state import restore_state, sharded_template
from distengine.checkpoint.waiting import (
    check_timeout,
    gather_on_every_rank,
    long_wait_group,
    waits_for_others,
)
from distengine.distributed import broadcast, get_rank, get_world_size
from distengine.distributed.env import is_distributed

FORMAT = "distengine-dcp/1"
MANIFEST = "manifest.json"
PLAIN = "plain.pt"
#: How long ranks wait for each other's part of a save or a load (not the process group's).
DEFAULT_TIMEOUT_S = 1800.0
#: Manifest keys the storage writes itself; metadata may not use them.
RESERVED = ("format", "world_size", "files", "entries")


def _dcp() -> Any:
    """``torch.distributed.checkpoint``, imported on first use (it takes half a second)."""
    import torch.distributed.checkpoint as dcp

    return dcp


def dcp_failures() -> tuple[type[BaseException], ...]:
    """What a DCP call may raise: any Exception, and its CheckpointException (a BaseException)."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)


def _describe(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "crc32": file_checksum(path)}


def one_line(error: BaseException) -> str:
    """``Type: message`` of ``error``; a CheckpointException (all ranks' tracebacks) unwrapped;
    for a refusal of ``weights_only`` loading, what was refused."""
    failures = getattr(error, "failures", None)  # a CheckpointException: every rank's errors
    if isinstance(failures, dict) and failures:
        error = next(iter(error.failures.values()))[0]
    text = str(error).strip()
    refused = re.search(r"Unsupported (global: [^\n]*?(?= was not)|[^\n]*)", text)
    lines = [refused.group(0)] if refused else text.splitlines()
    return f"{type(error).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _agree(
    what: str, fn: Callable[[], Any], share: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Any:
    """``fn()`` on every rank; a RuntimeError on every rank if it raised on any.

    Returns this rank's result, or with ``share`` every rank's (a list). The
    ranks wait for the slowest up to ``timeout_s`` (a save's or a check's
    own time, not the process group's). ``fn`` must not perform collectives
    (a rank that raised would skip them).
    """
    error = result = None
    try:
        result = fn()
    except dcp_failures() as exc:  # every rank must learn of it
        error = one_line(exc)
    gathered = gather_on_every_rank((error, result if share else None), timeout_s)
    failed = [(rank, e) for rank, (e, _) in enumerate(gathered) if e is not None]
    if failed:
        rank, message = failed[0]
        raise RuntimeError(f"{what}: rank {rank}: {message}")
    return [r for _, r in gathered] if share else result


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a committed sharded checkpoint folder (ValueError if it has none).

    Example::

        read_manifest("runs/exp1/checkpoints/checkpoint_100")["iteration"]
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{folder} is not a sharded checkpoint: it has no {MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is corrupt: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any], rank: int = 0, world: int = 1) -> None:
    """Check this rank's share of the files against ``manifest``; ValueError naming a bad one.

    Files are split over ranks (every ``world``-th from ``rank``), so each is read once.
    """
    expected = manifest["files"]
    if rank == 0:
        found = {p.name for p in folder.iterdir()} - {MANIFEST}
        if found != set(expected):
            missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
            raise ValueError(
                f"{folder} does not match its manifest: missing {missing}, extra {extra}"
            )
    for name in sorted(expected)[rank::world]:
        actual = _describe(folder / name)
        if actual != expected[name]:
            raise ValueError(
                f"{folder / name} is corrupt: {actual}, manifest says {expected[name]}"
            )


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(
            f"checkpoint name must be a non-empty folder name without '/' that does not start "
            f"with '.', got {name!r}"
        )
    return name


class _Pending:
    """An asynchronous save still being written: its name, temporary folder and future."""

    def __init__(self, name: str, tmp: Path, future: Future, metadata: dict[str, Any]) -> None:
        self.name, self.tmp, self.future, self.metadata = name, tmp, future, metadata


class ShardedStorage:
    """Sharded checkpoints in ``dirname``, one folder each: every rank writes, rank 0 commits.

    ``save(name, sharded, plain, metadata)`` writes the DCP state ``sharded``
    (from ``gather_state``), the small ``plain`` state and ``metadata`` (e.g. the
    iteration) as ``dirname/name/``. With ``async_save=True`` it returns once the
    shards are staged in host memory; the writing goes on in a thread (on its
    own gloo group) and is committed by the next ``save``, ``load``, ``wait()``
    or ``close()``. Every rank must make the same calls in the same order.
    Temporary folders left by an earlier, killed job are removed at construction.

    Example::

        storage = ShardedStorage("runs/exp1/checkpoints")
        sharded, plain = gather_state({"model": model, "optimizer": optimizer, "trainer": trainer})
        storage.save("checkpoint_100", sharded, plain, {"iteration": 100})
        ...
        sharded, _ = gather_state(objects)          # the template to load into
        plain = storage.load("checkpoint_100", sharded)
        restore_state(objects, sharded, plain)
    """

    def __init__(
        self,
        dirname: str | os.PathLike,
        async_save: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not isinstance(async_save, bool):
            raise TypeError(f"async_save must be True or False, got {async_save!r}")
        self.dirname = Path(dirname)
        self.async_save = async_save
        self.timeout_s = check_timeout(timeout_s, "ShardedStorage")
        self._pending: _Pending | None = None
        self._removals: list[str] = []
        self._group: Any = None
        if get_rank() == 0:
            self.dirname.mkdir(parents=True, exist_ok=True)
            for leftover in self.dirname.glob(".*.tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)

    def save(
        self,
        name: str,
        sharded: dict[str, Any],
        plain: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Write ``dirname/name/`` (see the class); raises on every rank if any rank failed."""
        _check_name(name)
        metadata = dict(metadata or {})
        clash = sorted(set(metadata) & set(RESERVED))
        if clash:
            raise ValueError(f"metadata keys {clash} are reserved for the manifest")
        self.wait()
        metadata["entries"] = {"sharded": sorted(sharded), "plain": sorted(plain or {})}
        tmp = self.dirname / broadcast(f".{name}.tmp-{uuid.uuid4().hex[:12]}")
        _agree(
            f"sharded checkpoint {name!r} was not saved",
            lambda: self._start(tmp, plain),
            timeout_s=self.timeout_s,
        )
        if self.async_save:
            start = _dcp().async_save
            future = self._run_dcp(lambda: start(sharded, checkpoint_id=tmp, **self._pg()))
            self._pending = _Pending(name, tmp, future, metadata)
        else:
            self._finish(_Pending(name, tmp, self._sync_save(sharded, tmp), metadata))

    def _start(self, tmp: Path, plain: dict[str, Any] | None) -> None:
        if get_rank() == 0:
            tmp.mkdir()
            if plain is not None:
                torch.save(plain, tmp / PLAIN)

    def _sync_save(self, sharded: dict[str, Any], tmp: Path) -> Future:
        group = self._waiting_group()
        return self._run_dcp(lambda: _dcp().save(sharded, checkpoint_id=tmp, **group))

    def _waiting_group(self) -> dict[str, Any]:
        """DCP's collectives in the group that waits ``timeout_s`` (a rank's shards may take
        longer to write than the process group lets a collective wait)."""
        return {"process_group": long_wait_group(self.timeout_s)} if waits_for_others() else {}

    @staticmethod
    def _run_dcp(call: Callable[[], Any]) -> Future:
        """The future of ``call()``: its own future (async), or one holding its result or error."""
        try:
            with single_process_is_intended():
                result = call()
        except dcp_failures() as exc:
            future: Future = Future()
            future.set_exception(exc)
            return future
        if isinstance(result, Future):
            return result
        future = Future()
        future.set_result(result)
        return future

    def _pg(self) -> dict[str, Any]:
        """A gloo group for asynchronous saves, so their collectives never mix with training's."""
        if not is_distributed():
            return {}
        if self._group is None:
            self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.timeout_s))
        return {"process_group": self._group}

    def wait(self) -> None:
        """Finish and commit the asynchronous save in flight, if any (every rank)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._finish(pending)

    def _finish(self, pending: _Pending) -> None:
        what = f"sharded checkpoint {pending.name!r} was not saved (earlier checkpoints are intact)"
        try:
            described = _agree(
                what, lambda: self._written(pending), share=True, timeout_s=self.timeout_s
            )
            _agree(what, lambda: self._commit(pending, described), timeout_s=self.timeout_s)
        except RuntimeError:
            self._removals.clear()  # keep the older checkpoints: the new one is not there
            if get_rank() == 0:
                shutil.rmtree(pending.tmp, ignore_errors=True)
            raise
        removals, self._removals = self._removals, []
        for name in removals:
            self.remove(name)

    @staticmethod
    def _written(pending: _Pending) -> dict[str, Any]:
        """Wait for this rank's shards, then describe the files it wrote."""
        pending.future.result()
        return {p.name: _describe(p) for p in pending.tmp.glob(f"__{get_rank()}_*.distcp")}

    def _commit(self, pending: _Pending, described: list[dict[str, Any]]) -> None:
        """Rank 0 writes the manifest and renames the folder to its final name."""
        if get_rank() != 0:
            return
        files = {k: v for part in described for k, v in part.items()}
        for extra in (".metadata", PLAIN):
            if (pending.tmp / extra).exists():
                files[extra] = _describe(pending.tmp / extra)
        manifest = {"format": FORMAT, "world_size": get_world_size(), "files": files}
        _write_json(pending.tmp / MANIFEST, {**manifest, **pending.metadata})
        _replace_folder(pending.tmp, self.dirname / pending.name)

    def load(
        self, name: str, sharded: dict[str, Any], verify: bool = True, strict: bool = True
    ) -> dict[str, Any]:
        """Fill ``sharded`` in place from ``dirname/name/``; returns the plain state ({} if none).

        ``sharded`` is the template from ``gather_state`` of the objects to
        restore, on any number of ranks (DCP reshards). With ``verify`` the
        files are checked against the manifest first; a mismatch raises on
        every rank, naming the file. ``strict=False`` leaves keys the
        checkpoint lacks as they are.
        """
        _check_name(name)
        self.wait()
        return load_folder(self.dirname / name, sharded, verify, strict, self.timeout_s)

    def remove(self, name: str) -> None:
        """Delete ``dirname/name/`` (rank 0), after the save in flight is committed.

        It refuses (ValueError) a folder that is not a sharded checkpoint.
        """
        _check_name(name)
        if self._pending is not None:
            self._removals.append(name)
            return
        folder = self.dirname / name
        if get_rank() != 0 or not folder.exists():
            return
        read_manifest(folder)
        shutil.rmtree(folder)

    def names(self) -> list[str]:
        """The committed checkpoints in ``dirname`` (folders with a manifest), sorted."""
        found = (p.parent.name for p in self.dirname.glob(f"*/{MANIFEST}"))
        return sorted(name for name in found if not name.startswith("."))

    def close(self) -> None:
        """Commit the save in flight and release the asynchronous saves' group (every rank)."""
        self.wait()
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None


def load_folder(
    folder: str | os.PathLike,
    sharded: dict[str, Any],
    verify: bool = True,
    strict: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Fill ``sharded`` in place from the committed checkpoint ``folder``; its plain state.

    Every rank must call it. The files are verified first (each by one rank)
    when ``verify``; an empty ``sharded`` reads only the plain state. DCP's
    ``.metadata`` is read with :mod:`~distengine.checkpoint.safe_dcp` (only
    DCP's own types; a crafted one is refused on every rank, unrun).
    """
    folder = Path(folder)
    what = f"sharded checkpoint {folder} was not loaded"
    plain = _agree(what, lambda: _read_plain(folder, verify), timeout_s=timeout_s)
    if not sharded:
        return plain
    _agree(what, lambda: read_dcp_metadata(folder), timeout_s=timeout_s)  # refused everywhere
    dcp = _dcp()
    planner = weights_only_planner()(allow_partial_load=not strict)
    reader = safe_reader_class()(folder)
    group = {"process_group": long_wait_group(timeout_s)} if waits_for_others() else {}
    try:
        with single_process_is_intended():
            dcp.load(sharded, storage_reader=reader, planner=planner, **group)
    except dcp_failures()[1] as exc:
        raise RuntimeError(f"{what}: {one_line(exc)}") from None
    return plain


def _read_plain(folder: Path, verify: bool) -> dict[str, Any]:
    manifest = read_manifest(folder)
    if verify:
        verify_files(folder, manifest, get_rank(), get_world_size())
    if PLAIN not in manifest["files"]:
        return {}
    return torch.load(folder / PLAIN, map_location="cpu", weights_only=True)


class ShardedCheckpoint:
    """A committed sharded checkpoint folder: its metadata now, its contents on ``load``.

    What :func:`~distengine.checkpoint.find_latest_checkpoint` returns for a
    folder, and one of the forms
    :meth:`~distengine.handlers.Checkpoint.load_objects` takes. Loading
    restores modules and optimizers on any number of ranks (DCP reshards) and
    the plain entries as saved (per-rank ones through contract C1). The first
    load checks every file against the manifest (each file read by one rank).

    Example::

        found = ShardedCheckpoint("runs/exp1/checkpoints/checkpoint_300")
        found.metadata["iteration"]            # 300
        found.load({"model": model, "optimizer": optimizer, "trainer": trainer})
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder)
        self.manifest = read_manifest(self.path)
        self._verified = False

    @property
    def metadata(self) -> dict[str, Any]:
        """The manifest without its file list: iteration, epoch, world size, user metadata."""
        return {k: v for k, v in self.manifest.items() if k != "files"}

    @property
    def entries(self) -> list[str]:
        """The names of the checkpoint's entries (``to_save``'s keys)."""
        entries = self.manifest.get("entries") or {}
        return sorted([*entries.get("sharded", []), *entries.get("plain", [])])

    def load(self, objects: dict[str, Any], strict: bool = True) -> None:
        """Load the entries named by ``objects``' keys into them (every rank must call it)."""
        missing = [name for name in objects if name not in self.entries]
        if missing:
            raise KeyError(
                f"checkpoint {self.path} lacks {missing}; it holds {self.entries} "
                "(load only those, or save them too)"
            )
        sharded_names = (self.manifest.get("entries") or {}).get("sharded", [])
        template = sharded_template(objects, names=sharded_names)
        plain = load_folder(self.path, template, verify=not self._verified, strict=strict)
        self._verified = True
        restore_state(objects, template, plain, strict=strict)

    def __repr__(self) -> str:
        return f"ShardedCheckpoint({str(self.path)!r})"


@contextlib.contextmanager
def single_process_is_intended() -> Iterator[None]:
    """Without a process group DCP warns that it assumes one process: here that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable")
        yield


def _write_json(path: Path, value: dict[str, Any]) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_folder(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first, then deleted."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.tmp-old-{uuid.uuid4().hex[:12]}")
        final.rename(old)
    tmp.rename(final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
