"""One checkpoint file per save, written atomically by rank 0, with a metadata sidecar.

``name.pt`` is written to a temporary file in the same folder, flushed,
fsynced and renamed over the final name; then its sidecar
``.name.pt.meta.json`` (also written atomically) records the file's CRC-32
and the caller's metadata (iteration, epoch, world size, ...), so a later
reader can both verify the file and order files without loading them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from distengine.checkpoint.waiting import (
    check_timeout,
    forget_group,
    from_rank0,
    long_wait_group,
    waits_for_others,
)
from distengine.distributed import broadcast, get_rank
from distengine.distributed.sharding import sharded_entry

SUFFIX = ".pt"


def meta_path(path: Path) -> Path:
    """The sidecar holding a checkpoint file's CRC-32 and metadata (a hidden file beside it)."""
    return path.with_name(f".{path.name}.meta.json")


def legacy_checksum_path(path: Path) -> Path:
    """Where versions before the metadata sidecar kept a file's CRC-32."""
    return path.with_name(f".{path.name}.crc32")


def read_meta(path: Path) -> dict[str, Any] | None:
    """The sidecar of ``path`` as a dict, or None when it has none (or it is unreadable)."""
    try:
        meta = json.loads(meta_path(path).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def file_checksum(path: Path, chunk: int = 1 << 20) -> str:
    """CRC-32 of a file, read through one small reused buffer (fast, and enough to catch
    corruption; a rank checking a large file holds no copy of it)."""
    crc = 0
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            crc = zlib.crc32(view[:count], crc)
    return f"{crc:08x}"


class _HashingWriter:
    """A file wrapper that checksums every byte written through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.crc = 0

    def hexdigest(self) -> str:
        return f"{self.crc:08x}"

    def write(self, data: bytes) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


#: Temporary files of a write cut short (``.<name>.<8 hex>.tmp``, ``.<name>.meta.json.tmp``).
_LEFTOVER = re.compile(r"^\..+\.(?:[0-9a-f]{8}|meta\.json)\.tmp$")


class DiskSaver:
    """Saves checkpoints to ``dirname`` on rank 0; a crash mid-write never leaves a bad file.

    Each save goes to a temporary file in the same folder (created with the
    process's umask, like any file it writes), is flushed and fsynced, then
    renamed over the final name; its sidecar ``.<name>.meta.json`` then records
    the CRC-32 (checked at load) and the ``metadata`` the caller passes
    (:class:`~distengine.handlers.Checkpoint` passes iteration, epoch and world
    size). Temporary files that a killed process left in ``dirname`` are
    removed when the saver is made. Only rank 0 touches the disk; every rank
    must make the saver and call it. Whatever goes wrong on rank 0 (a full
    disk, reported as ``[ENOSPC] ... <path>``; an object that cannot be
    pickled; an interrupt) reaches every rank: each raises, none waits for a
    rank that failed. So do the constructor's checks (``require_empty``, a
    folder that cannot be made), agreed in one tiny broadcast. The other
    ranks wait for a write up to ``timeout_s`` (its own timeout, not the
    process group's: a write may take longer than a collective may wait); a
    write longer than that fails on every rank, naming it. The hang watchdog
    is paused while it writes. State holding DTensor shards (FSDP) is refused
    on every rank, never written: one file by one rank would hold that rank's
    shard only (:class:`~distengine.handlers.Checkpoint` saves it as a folder).

    Example::

        saver = DiskSaver("runs/exp1/checkpoints", require_empty=False)
        Checkpoint({"model": model}, saver, n_saved=3)
    """

    def __init__(
        self,
        dirname: str | os.PathLike,
        atomic: bool = True,
        create_dir: bool = True,
        require_empty: bool = True,
        timeout_s: float = 1800.0,
    ) -> None:
        self.dirname = Path(dirname)
        self.atomic = atomic
        self.timeout_s = check_timeout(timeout_s, "DiskSaver")
        failure: BaseException | None = None
        if get_rank() == 0:
            try:
                self._prepare(create_dir, require_empty)
            except Exception as error:
                failure = error
        _agree_on(failure, broadcast, f"DiskSaver({str(self.dirname)!r}) could not be made")
        if failure is not None:
            raise failure

    def _prepare(self, create_dir: bool, require_empty: bool) -> None:
        """Rank 0: the folder exists (made if allowed), is empty if required, has no leftovers."""
        if not self.dirname.exists():
            if not create_dir:
                raise ValueError(
                    f"checkpoint folder {self.dirname} does not exist (create_dir=False)"
                )
            self.dirname.mkdir(parents=True, exist_ok=True)
        elif not self.dirname.is_dir():
            raise NotADirectoryError(f"checkpoint folder {self.dirname} is a file")
        if require_empty:
            found = sorted(p.name for p in self.dirname.glob(f"*{SUFFIX}"))
            if found:
                raise ValueError(
                    f"checkpoint folder {self.dirname} already holds {found[:3]}: pass "
                    "require_empty=False to write beside them, or choose another folder"
                )
        for leftover in self.dirname.iterdir():
            if _LEFTOVER.match(leftover.name) and leftover.is_file():
                leftover.unlink(missing_ok=True)  # a write cut short by a killed process

    def __call__(
        self, checkpoint: Mapping[str, Any], filename: str, metadata: Mapping | None = None
    ) -> None:
        """Write ``checkpoint`` as ``dirname/filename`` (rank 0), then wait for every rank."""
        from distengine.handlers.watchdog import suspended  # handlers/ imports this module

        path = self.dirname / filename
        _refuse_shards(checkpoint, path)
        failure: BaseException | None = None
        with suspended():
            if waits_for_others():
                long_wait_group(self.timeout_s)  # made (every rank) before rank 0 writes
            if get_rank() == 0:
                failure = self._write_in_time(checkpoint, path, dict(metadata or {}))
            if isinstance(failure, TimeoutError):  # past the timeout, no one is listening
                forget_group(self.timeout_s)
            else:
                self._tell_every_rank(failure, path)
        if failure is not None:
            raise failure

    def _tell_every_rank(self, failure: BaseException | None, path: Path) -> None:
        """Rank 0's outcome to every rank, waiting up to ``timeout_s``; the others raise it."""
        try:
            _agree_on(failure, lambda said: from_rank0(said, self.timeout_s), "")
        except RuntimeError as error:
            if get_rank() == 0:
                raise
            forget_group(self.timeout_s)
            lines = str(error).strip().splitlines()
            said = lines[-1] if lines else repr(error)
            if "timed out" not in str(error).lower():  # rank 0 is gone (killed, crashed)
                raise RuntimeError(
                    f"rank 0 stopped before saying whether it wrote the checkpoint {path} "
                    f"(the failure of rank 0): {said}"
                ) from None
            raise TimeoutError(
                f"rank 0 did not finish writing the checkpoint {path} within "
                f"DiskSaver(timeout_s={self.timeout_s:g}) (the failure of rank 0): {said}"
            ) from None
        except _RankZeroFailed as error:
            raise RuntimeError(
                f"rank 0 could not write the checkpoint {path} (the failure of rank 0): {error}"
            ) from None

    def _write_in_time(self, checkpoint: Mapping[str, Any], path: Path, metadata: dict):
        """Rank 0's write; what went wrong (any exception, or a write past ``timeout_s``)."""
        start = time.monotonic()
        try:
            self._write(checkpoint, path, metadata)
        except BaseException as error:  # every failure must reach the other ranks
            return explain_write_error(error, path)
        took = time.monotonic() - start
        if took > self.timeout_s:
            return TimeoutError(
                f"writing the checkpoint {path} took {took:.0f} s, longer than "
                f"DiskSaver(timeout_s={self.timeout_s:g}): the other ranks stopped waiting for "
                "it (the file itself is whole)"
            )
        return None

    def _write(self, checkpoint: Mapping[str, Any], path: Path, metadata: dict) -> None:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"checkpoint metadata must be JSON-serialisable (str, numbers, lists, dicts): "
                f"{metadata!r} is not ({error})"
            ) from None
        for stale in (meta_path(path), legacy_checksum_path(path)):
            stale.unlink(missing_ok=True)  # a crash below must not pair the new file with them
        if not self.atomic:
            with open(path, "wb") as handle:
                writer = _HashingWriter(handle)
                torch.save(checkpoint, writer)
        else:
            writer = self._write_atomic(checkpoint, path)
        _write_small(meta_path(path), json.dumps({"crc32": writer.hexdigest(), **metadata}))
        fsync_dir(self.dirname)

    def _write_atomic(self, checkpoint: Mapping[str, Any], path: Path) -> _HashingWriter:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        try:
            with os.fdopen(fd, "wb") as handle:
                writer = _HashingWriter(handle)
                torch.save(checkpoint, writer)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return writer

    def remove(self, filename: str) -> None:
        """Delete a file this saver wrote, with its sidecar (rank 0 only)."""
        if get_rank() == 0:
            path = self.dirname / filename
            path.unlink(missing_ok=True)
            meta_path(path).unlink(missing_ok=True)
            legacy_checksum_path(path).unlink(missing_ok=True)


class _RankZeroFailed(Exception):
    """What rank 0 said went wrong (raised on the other ranks)."""


def _agree_on(failure: BaseException | None, tell: Any, what: str) -> None:
    """Tell every rank rank 0's ``failure`` (``tell``: a broadcast of a list); the other ranks
    raise it (``what``: a RuntimeError naming it, or with "" a _RankZeroFailed)."""
    said = None if failure is None else f"{type(failure).__name__}: {failure}"
    message = tell([said])[0]  # the same kind of value on every rank: a list
    if failure is None and message is not None:
        if not what:
            raise _RankZeroFailed(message)
        raise RuntimeError(f"{what} (the failure of rank 0): {message}")


def _refuse_shards(checkpoint: Mapping[str, Any], path: Path) -> None:
    """Raise (on every rank, before any write) when ``checkpoint`` holds DTensor shards."""
    name = sharded_entry(checkpoint) if isinstance(checkpoint, Mapping) else None
    if name is not None:
        raise ValueError(
            f"checkpoint entry {name!r} holds DTensor shards (an FSDP model or its optimizer): "
            f"written to one file by rank 0, {path} would hold rank 0's shard only, so it was "
            "not written. Save it with Checkpoint(to_save, folder), which writes a sharded "
            "folder (every rank its shards), or save full tensors (get_model_state_dict(model, "
            "options=StateDictOptions(full_state_dict=True)))"
        )


def explain_write_error(error: BaseException, path: Path) -> BaseException:
    """A failed write as an error naming its cause and the file.

    ``torch.save`` reports a full disk as ``[enforce fail at inline_container.cc]
    unexpected pos``; the OSError behind it (``__context__``) has the errno, so
    the user reads ``[ENOSPC] No space left on device ... <path>`` instead.
    """
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno is not None:
        name = errno.errorcode.get(cause.errno, "error")
        explained = OSError(
            cause.errno, f"[{name}] {cause.strerror} while writing the checkpoint {path}"
        )
        return explained.with_traceback(error.__traceback__)
    if "unexpected pos" in str(error):
        free = shutil.disk_usage(path.parent).free
        return OSError(
            errno.EIO,
            f"torch.save could not write the checkpoint {path} ({free} bytes free on its disk)",
        )
    return error


def _write_small(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def fsync_dir(dirname: Path) -> None:
    """Make a rename or a new entry in ``dirname`` durable (fsync the folder itself)."""
    dir_fd = os.open(dirname, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
