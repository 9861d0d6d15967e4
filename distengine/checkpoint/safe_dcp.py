"""Reading torch.distributed.checkpoint (DCP) folders without running code from them.

DCP stores its index of the shards, ``.metadata``, as a plain pickle, and
reads it back with ``pickle.load``: whoever can write a checkpoint folder can
make any program that loads it run their code. Here ``.metadata`` is read
through an unpickler that resolves only DCP's own metadata types (the
dataclasses of ``torch.distributed.checkpoint.metadata``, its file-system
storage record, ``torch.Size``, dtypes, layouts and paths); any other name
in the pickle refuses the file before anything is built. torch's own
``weights_only`` unpickler would be the natural tool, but it reads pickle
protocol 2 only and DCP writes protocol 4 (``FRAME``, ``STACK_GLOBAL``,
``MEMOIZE``), so the allowlist is applied the way Python's documentation
shows (``Unpickler.find_class``), which every name in a pickle goes through.
The non-tensor leaves of a DCP checkpoint (an optimizer's hyperparameters),
which DCP loads with ``torch.load(weights_only=False)``, are loaded with
``weights_only=True``.

Example::

    metadata = read_dcp_metadata("runs/exp1/checkpoints/checkpoint_100")  # or ForgedMetadataError
    dcp.load(state, storage_reader=SafeFileSystemReader(folder), planner=weights_only_planner())
"""

from __future__ import annotations

import os
import pickle
from functools import cache
from pathlib import Path
from typing import Any

import torch

METADATA_FILE = ".metadata"


class ForgedMetadataError(pickle.UnpicklingError, ValueError):
    """A DCP ``.metadata`` that names something other than DCP's own metadata types."""


class DamagedMetadataError(ValueError):
    """A DCP ``.metadata`` that is not a whole pickle of DCP's metadata (cut short, garbled)."""


@cache
def _allowed() -> dict[tuple[str, str], Any]:
    """Every (module, name) a DCP ``.metadata`` may name, and what it resolves to."""
    import pathlib

    import torch.distributed.checkpoint.filesystem as filesystem
    import torch.distributed.checkpoint.metadata as metadata
    from torch.serialization import _get_layout

    found: dict[tuple[str, str], Any] = {}
    for module, names in (
        (
            metadata,
            (
                "Metadata",
                "TensorStorageMetadata",
                "BytesStorageMetadata",
                "ChunkStorageMetadata",
                "TensorProperties",
                "MetadataIndex",
                "StorageMeta",
                "_MEM_FORMAT_ENCODING",
            ),
        ),
        (filesystem, ("_StorageInfo",)),
        (pathlib, ("Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath")),
    ):
        for name in names:
            if hasattr(module, name):  # names differ a little between torch versions
                found[(module.__name__, name)] = getattr(module, name)
    found[("torch", "Size")] = torch.Size
    found[("torch.serialization", "_get_layout")] = _get_layout
    found[("collections", "OrderedDict")] = __import__("collections").OrderedDict
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            found[("torch", name)] = value
    return found


@cache
def _allowed_types() -> frozenset[type]:
    """The allowed names that are classes: the only objects whose state a pickle may set."""
    return frozenset(value for value in _allowed().values() if isinstance(value, type))


class _MetadataUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """A pickle unpickler that resolves only the names in :func:`_allowed` and sets state
    (``BUILD``) only on instances of those classes.

    Python's pure unpickler, because the C one's ``BUILD`` cannot be checked: it would set
    attributes on whatever object it is given, an allowed class included (a forged file
    could replace a method of ``pathlib.Path`` for the whole process).
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed().get((module, name))
        if found is None:
            raise ForgedMetadataError(
                f"names {module}.{name}, which is not one of torch.distributed.checkpoint's "
                "metadata types (a crafted file?)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise ForgedMetadataError(
            f"names a persistent id ({pid!r}), which is not one of torch.distributed."
            "checkpoint's metadata types (a crafted file?)"
        )

    def load_build(self) -> None:
        target = self.stack[-2]  # BUILD pops the state, then sets it on the object below
        if isinstance(target, type):
            raise ForgedMetadataError(
                f"sets state on the class {target.__module__}.{target.__qualname__} itself, "
                "which DCP's metadata never does (a crafted file?)"
            )
        if type(target) not in _allowed_types():
            raise ForgedMetadataError(
                f"sets state on a {type(target).__name__}, which is not one of "
                "torch.distributed.checkpoint's metadata types (a crafted file?)"
            )
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch[pickle.BUILD[0]] = load_build


def read_dcp_metadata(location: str | os.PathLike) -> Any:
    """DCP's ``Metadata`` of a checkpoint folder (or of a ``.metadata`` file), read safely.

    Raises :class:`ForgedMetadataError` (an ``UnpicklingError`` and a ValueError) naming the
    first name outside DCP's metadata types (nothing it names is loaded or
    run); a pickle that is cut short or garbled raises
    :class:`DamagedMetadataError` (a ValueError); reading errors propagate
    as OSError.

    Example::

        read_dcp_metadata("runs/exp1/checkpoints/checkpoint_100").state_dict_metadata.keys()
    """
    from torch.distributed.checkpoint.metadata import Metadata

    path = Path(location)
    if path.is_dir():
        path = path / METADATA_FILE
    with open(path, "rb") as handle:
        try:
            found = _MetadataUnpickler(handle).load()
        except ForgedMetadataError as error:
            raise ForgedMetadataError(
                f"{path} {error}: it was refused, and nothing it names was loaded or run"
            ) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
        ) as error:
            raise DamagedMetadataError(
                f"{path} is not a whole pickle of DCP's metadata ({type(error).__name__}: {error})"
            ) from None
    if not isinstance(found, Metadata):
        raise ForgedMetadataError(
            f"{path} holds a {type(found).__name__}, not torch.distributed.checkpoint's Metadata"
        )
    _check_files_inside(path, found)
    return found


def _check_files_inside(path: Path, metadata: Any) -> None:
    """Refuse an index that names a file outside its folder (DCP would read it)."""
    for info in (getattr(metadata, "storage_data", None) or {}).values():
        name = getattr(info, "relative_path", None)
        inside = isinstance(name, str) and name not in ("", ".", "..")
        if not inside or "/" in name or "\\" in name:
            raise ForgedMetadataError(
                f"{path} names the file {name!r}, which is not a file of its folder: it was "
                "refused, and nothing outside the folder was read"
            )


@cache
def safe_reader_class() -> type:
    """DCP's ``FileSystemReader``, reading ``.metadata`` through :func:`read_dcp_metadata`."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeFileSystemReader(FileSystemReader):
        """A ``FileSystemReader`` that never unpickles more than DCP's metadata types."""

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            rank = kwargs.get("rank")
            name = METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"
            metadata = read_dcp_metadata(Path(self.path) / name)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeFileSystemReader


def _load_bytes_weights_only(planner: Any, read_item: Any, value: Any) -> None:
    """``DefaultLoadPlanner.load_bytes`` with ``torch.load(weights_only=True)``."""
    from torch.distributed.checkpoint.default_planner import set_element

    loaded = torch.load(value, weights_only=True)
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[read_item.dest_index.fqn], loaded)
    else:
        planner.state_dict[read_item.dest_index.fqn] = loaded


@cache
def weights_only_planner() -> type:
    """DCP's ``DefaultLoadPlanner``, loading non-tensor leaves with ``weights_only=True``."""
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
        load_bytes = _load_bytes_weights_only

    return WeightsOnlyLoadPlanner


@cache
def weights_only_rebuilding_planner() -> type:
    """The planner of torch's ``dcp_to_torch_save`` (rebuilds the whole state from the
    metadata), loading non-tensor leaves with ``weights_only=True``."""
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner

    class WeightsOnlyRebuildingPlanner(_EmptyStateDictLoadPlanner):
        load_bytes = _load_bytes_weights_only

    return WeightsOnlyRebuildingPlanner
