"""Durable checkpoints: what a checkpoint holds, and how it is stored and found again.

- :mod:`~distengine.checkpoint.stateful`: the :class:`Stateful` contract and
  per-rank states (gathering what to save is kept apart from storing it).
- :mod:`~distengine.checkpoint.disk`: one atomic file per save, written by
  rank 0, with a sidecar holding its CRC-32 and metadata (plain state: DDP,
  one process).
- :mod:`~distengine.checkpoint.sharded`: one folder per save written with
  torch.distributed.checkpoint (sharded state: FSDP2): every rank writes its
  shards, rank 0 commits; :mod:`~distengine.checkpoint.consolidate` makes
  one file of it.
- :mod:`~distengine.checkpoint.waiting`: the other ranks wait for a write by
  the save's own timeout, not the process group's.
- :mod:`~distengine.checkpoint.sharded_state`: which objects go to the
  shards (modules, optimizers) and which to the plain part.
- :mod:`~distengine.checkpoint.loading`: verified loading of both forms and
  :func:`find_latest_checkpoint`, :func:`list_checkpoints`; a failed load is
  told apart as damage (:class:`CorruptCheckpointError`), a refusal
  (:class:`CheckpointLoadError`) or this process's trouble
  (:class:`CheckpointEnvironmentError`) by :mod:`~distengine.checkpoint.damage`.
- :mod:`~distengine.checkpoint.safe_dcp`: DCP's ``.metadata`` read without
  running code from it (:func:`read_dcp_metadata`).

The :class:`~distengine.handlers.Checkpoint` handler (naming, retention,
agreement across ranks) lives in :mod:`distengine.handlers`, which also
re-exports :class:`DiskSaver` and :func:`find_latest_checkpoint`, :func:`list_checkpoints`.

Example::

    from distengine.checkpoint import find_latest_checkpoint, read_meta

    path, state = find_latest_checkpoint("runs/exp1/checkpoints")
    read_meta(path)   # {"crc32": "...", "iteration": 300, "epoch": 3, "world_size": 2, ...}
"""

from distengine.checkpoint.consolidate import consolidate
from distengine.checkpoint.disk import DiskSaver, meta_path, read_meta
from distengine.checkpoint.loading import (
    CheckpointEnvironmentError,
    CheckpointLoadError,
    CorruptCheckpointError,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint_file,
    open_checkpoint,
    verify_checkpoint,
)
from distengine.checkpoint.safe_dcp import ForgedMetadataError, read_dcp_metadata
from distengine.checkpoint.sharded import (
    ShardedCheckpoint,
    ShardedStorage,
    read_manifest,
)
from distengine.checkpoint.sharded_state import gather_state, restore_state
from distengine.checkpoint.stateful import PER_RANK, Stateful, gather_states, load_state

__all__ = [
    "PER_RANK",
    "CheckpointEnvironmentError",
    "CheckpointLoadError",
    "CorruptCheckpointError",
    "DiskSaver",
    "ForgedMetadataError",
    "ShardedCheckpoint",
    "ShardedStorage",
    "Stateful",
    "consolidate",
    "find_latest_checkpoint",
    "gather_state",
    "gather_states",
    "list_checkpoints",
    "load_checkpoint_file",
    "load_state",
    "meta_path",
    "open_checkpoint",
    "read_manifest",
    "read_dcp_metadata",
    "read_meta",
    "restore_state",
    "verify_checkpoint",
]
