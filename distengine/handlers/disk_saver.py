"""Writing checkpoint files atomically, on rank 0 only."""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import torch

from distengine.distributed import barrier, get_rank

SUFFIX = ".pt"


def checksum_path(path: Path) -> Path:
    """Where the CRC-32 of a checkpoint file is kept (a hidden file beside it)."""
    return path.with_name(f".{path.name}.crc32")


def file_checksum(path: Path, chunk: int = 1 << 24) -> str:
    """CRC-32 of a file, read in chunks (fast, and enough to catch corruption)."""
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            crc = zlib.crc32(block, crc)
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


class DiskSaver:
    """Saves objects to ``dirname`` on rank 0; a crash mid-write never leaves a bad file.

    Each save goes to a temporary file in the same folder, is flushed and
    fsynced, then renamed over the final name; its CRC-32 goes to a hidden
    ``.<name>.crc32`` file, so later corruption is caught at load. Every rank calls it (it ends
    with a barrier, so no rank reads a file not yet written); only rank 0
    touches the disk.

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
    ) -> None:
        self.dirname = Path(dirname)
        self.atomic = atomic
        if get_rank() != 0:
            return
        if not self.dirname.exists():
            if not create_dir:
                raise ValueError(
                    f"checkpoint folder {self.dirname} does not exist (create_dir=False)"
                )
            self.dirname.mkdir(parents=True, exist_ok=True)
        if require_empty:
            found = sorted(p.name for p in self.dirname.glob(f"*{SUFFIX}"))
            if found:
                raise ValueError(
                    f"checkpoint folder {self.dirname} already holds {found[:3]}: pass "
                    "require_empty=False to write beside them, or choose another folder"
                )

    def __call__(self, checkpoint: dict[str, Any], filename: str) -> None:
        """Write ``checkpoint`` as ``dirname/filename`` (rank 0), then wait for every rank."""
        if get_rank() == 0:
            self._write(checkpoint, self.dirname / filename)
        barrier()

    def _write(self, checkpoint: dict[str, Any], path: Path) -> None:
        if not self.atomic:
            with open(path, "wb") as handle:
                writer = _HashingWriter(handle)
                torch.save(checkpoint, writer)
            _write_small(checksum_path(path), writer.hexdigest())
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.dirname)
        try:
            with os.fdopen(fd, "wb") as handle:
                writer = _HashingWriter(handle)
                torch.save(checkpoint, writer)
                handle.flush()
                os.fsync(handle.fileno())
            # the checkpoint first: a crash before the checksum leaves a good, unverified file
            os.replace(tmp, path)
            _write_small(checksum_path(path), writer.hexdigest())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.dirname)

    def remove(self, filename: str) -> None:
        """Delete a file this saver wrote (rank 0 only)."""
        if get_rank() == 0:
            (self.dirname / filename).unlink(missing_ok=True)
            checksum_path(self.dirname / filename).unlink(missing_ok=True)


def _write_small(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(dirname: Path) -> None:
    dir_fd = os.open(dirname, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
