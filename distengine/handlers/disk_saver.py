"""Writing checkpoint files atomically on rank 0 (kept here for imports; see
:mod:`distengine.checkpoint.disk`)."""

from distengine.checkpoint.disk import SUFFIX, DiskSaver, file_checksum, meta_path, read_meta

__all__ = ["SUFFIX", "DiskSaver", "file_checksum", "meta_path", "read_meta"]
