"""Telling a damaged checkpoint file from an intact one, without loading it.

When ``torch.load`` fails, the reason may be the file (truncated, bytes
changed, not a checkpoint at all) or this process (no memory or address
space for the mapping, no permission, a module missing). Only a damaged file
should be set aside; an intact one must stay where it is. :func:`find_damage`
looks at the file's structure alone: a zip archive (what ``torch.save``
writes) must open and every member must match the CRC-32 the archive records;
any other file must at least be one whole pickle stream (the legacy
``torch.save`` format, or someone's pickle). Pickles are parsed with
:mod:`pickletools`, which reads opcodes and runs nothing.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path


def _pickle_problem(stream: io.BufferedIOBase | io.BytesIO) -> str | None:
    """Why ``stream`` does not start with a whole pickle, or None when it does (nothing runs)."""
    try:
        for _ in pickletools.genops(stream):
            pass
    except (ValueError, UnicodeDecodeError, EOFError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def find_damage(path: str | Path) -> str | None:
    """Why the checkpoint file ``path`` is damaged, or None when its structure is intact.

    Reading errors (permissions, I/O) propagate as OSError: they say nothing
    about the file.

    Example::

        find_damage("ckpt/checkpoint_44.pt")   # None, or "its zip archive is cut short ..."
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            if handle.read(4) == b"PK\x03\x04":
                return "its zip archive is incomplete: it has no central directory (cut short?)"
            handle.seek(0)
            problem = _pickle_problem(handle)
        if problem is None:
            return None
        return f"it is neither a zip archive as torch.save writes nor a pickle ({problem})"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member against its recorded CRC-32
            if bad is not None:
                return f"its member {bad} does not match the CRC-32 its zip archive records"
            pickles = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
            if not pickles:
                return "its zip archive holds no data.pkl (it is not a torch.save file)"
            problem = _pickle_problem(io.BytesIO(archive.read(pickles[0])))
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as error:
        return f"its zip archive cannot be read ({type(error).__name__}: {error})"
    if problem is not None:
        return f"its data.pkl is not a whole pickle ({problem})"
    return None
