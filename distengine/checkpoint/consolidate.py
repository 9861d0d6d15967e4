"""One ``torch.save`` file of full tensors from a sharded checkpoint folder (for inference or
sharing), in one process, reading nothing from the folder that could run code."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch

from distengine.checkpoint.safe_dcp import (
    read_dcp_metadata,
    safe_reader_class,
    weights_only_rebuilding_planner,
)
from distengine.checkpoint.sharded import (
    PLAIN,
    ShardedCheckpoint,
    dcp_failures,
    one_line,
    read_manifest,
    single_process_is_intended,
    verify_files,
)


def consolidate(
    folder: str | os.PathLike, out_file: str | os.PathLike, entry: str | None = None
) -> Path:
    """Write the sharded checkpoint ``folder`` as one ``torch.save`` file with full tensors.

    The file holds every entry of the checkpoint (``{"model": ..., "optimizer":
    ..., "trainer": ...}``), or with ``entry`` that entry alone (e.g.
    ``entry="model"``: a state dict for ``model.load_state_dict``), and loads
    with ``torch.load(weights_only=True)``. The model entry is a plain state
    dict, the optimizer's is keyed by parameter name
    (``set_optimizer_state_dict``). One process, no process group (what
    torch's ``dcp_to_torch_save`` does); the folder is verified against its
    manifest first, and the output is written atomically. Nothing in the
    folder can run code: DCP's ``.metadata`` is read with
    :func:`~distengine.checkpoint.safe_dcp.read_dcp_metadata` (a crafted one
    raises :class:`~distengine.checkpoint.safe_dcp.ForgedMetadataError`, a
    ValueError) and the non-tensor leaves with ``weights_only=True``. From a
    shell:
    ``python -m launch.consolidate <folder> <out.pt> [--entry model]``.

    Example::

        consolidate("runs/exp1/checkpoints/checkpoint_100", "model_100.pt", entry="model")
    """
    folder, out = Path(folder), Path(out_file)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    entries = ShardedCheckpoint(folder).entries
    if entry is not None and entry not in entries:
        raise ValueError(f"entry={entry!r} is not in {folder}; it holds {entries}")
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:12]}")
    merged = tmp.with_name(tmp.name + "-merged")
    try:
        _dcp_to_torch_save(folder, tmp)
        if PLAIN in manifest["files"] or entry is not None:
            state = torch.load(tmp, weights_only=True, mmap=True)
            if PLAIN in manifest["files"]:
                state.update(torch.load(folder / PLAIN, weights_only=True))
            torch.save(state if entry is None else state[entry], merged)
            os.replace(merged, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        merged.unlink(missing_ok=True)
    return out


def _dcp_to_torch_save(folder: Path, out: Path) -> None:
    """torch's ``dcp_to_torch_save``, reading the folder with the safe reader and planner."""
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    read_dcp_metadata(folder)  # refused before DCP starts (it would retry with rank files)
    state: dict[str, Any] = {}
    reader, planner = safe_reader_class()(folder), weights_only_rebuilding_planner()()
    try:
        with single_process_is_intended():
            _load_state_dict(state, storage_reader=reader, planner=planner, no_dist=True)
    except dcp_failures()[1] as error:  # DCP gathers what its reads raised in one of these
        raise ValueError(
            f"sharded checkpoint {folder} could not be read: {one_line(error)}"
        ) from None
    torch.save(state, out)
