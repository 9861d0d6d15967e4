"""Keeping the latest or best checkpoints of a run, and loading them back.

Plain state (one process, DDP) goes to one atomic file per save
(:class:`DiskSaver`); sharded state (an FSDP2 model and its optimizer) to one
folder per save written by every rank (:class:`ShardedStorage`, DCP). The
handler chooses by looking at what it saves; naming, retention, scores and
metadata work the same for both.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from distengine.checkpoint.disk import SUFFIX, DiskSaver
from distengine.checkpoint.full_state import load_full_into
from distengine.checkpoint.loading import find_latest_checkpoint, load_checkpoint_file
from distengine.checkpoint.sharded import DEFAULT_TIMEOUT_S, ShardedCheckpoint, ShardedStorage
from distengine.checkpoint.sharded import RESERVED as MANIFEST_KEYS
from distengine.checkpoint.sharded_state import gather_state, is_shardable
from distengine.checkpoint.stateful import check_stateful, gather_states, load_state, unwrap
from distengine.distributed import get_world_size
from distengine.distributed.consensus import decide
from distengine.distributed.sharding import is_sharded
from distengine.engine import Engine, EventEnum, Events
from distengine.handlers.checkpoint_naming import get_default_score_fn, setup_filename_pattern
from distengine.handlers.save_handler import BaseSaveHandler
from distengine.handlers.watchdog import suspended

__all__ = [
    "BaseSaveHandler",
    "Checkpoint",
    "CheckpointEvents",
    "find_latest_checkpoint",
    "load_checkpoint_file",
]

#: Metadata keys Checkpoint computes itself (the sidecar's or manifest's own among them).
_COMPUTED = (
    "iteration",
    "epoch",
    "world_size",
    "step",
    "score",
    "basename",
    "score_name",
    "priority",
)
_RESERVED = tuple(dict.fromkeys(("crc32", *_COMPUTED, *MANIFEST_KEYS)))

Metadata = Mapping[str, Any] | Callable[[Engine], Mapping[str, Any]]


class CheckpointEvents(EventEnum):
    """Events a :class:`Checkpoint` fires on the engine it is called with.

    ``SAVED_CHECKPOINT``: a checkpoint was written (every rank fires it, after
    the save the ranks agreed on). Also ``Checkpoint.SAVED_CHECKPOINT``. The
    first save registers the events on the engine; to add a handler before
    it, register them yourself.

    Example::

        trainer.register_events(*CheckpointEvents)

        @trainer.on(Checkpoint.SAVED_CHECKPOINT)
        def announce(engine):
            print("saved", checkpoint.last_checkpoint)
    """

    SAVED_CHECKPOINT = "saved_checkpoint"


def _as_score(value: Any) -> float:
    """A score_function's output as a float (a number or a one-element tensor)."""
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"Output of score_function should be a number, got {value!r}") from None


def _accepts_metadata(save_handler: Callable[..., Any]) -> bool:
    """Whether ``save_handler(checkpoint, filename, metadata)`` fits its signature."""
    try:
        inspect.signature(save_handler).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature: assume the two-argument form
        return False
    return True


class Checkpoint:
    """A handler that saves ``to_save`` and keeps the ``n_saved`` best or latest checkpoints.

    Checkpoints are named ``{prefix}_{name}_{step}[_{score_name}={score}].pt``,
    where ``name`` is ``checkpoint`` (or the only key of ``to_save``) and
    ``step`` is the engine's **iteration**, as in PyTorch-Ignite
    (``global_step_transform(engine, event)`` chooses another). With
    ``score_function`` the best scores are kept, else the latest steps;
    ``score_name`` alone scores by ``engine.state.metrics[score_name]``.
    Attached to ``EXCEPTION_RAISED`` it saves the state at the failure (on
    one process: with several ranks the others may not be failing, and a
    save needs them all, so it warns and saves nothing).
    Rank 0's score and step decide for every rank (one tiny
    broadcast), so ranks never disagree on whether to save. Only checkpoints
    this handler wrote are ever removed. Objects that declare
    ``checkpoint_per_rank = True`` (the engine, metrics) are saved as every
    rank's state (gathered to rank 0, which writes) and loaded back per
    rank. Every rank must make it and call it.

    Plain state is one file written by rank 0 (``save_handler``: a folder or
    a :class:`DiskSaver`), with a sidecar holding its CRC-32, iteration,
    epoch, world size and ``metadata`` (a dict, or a function of the engine
    returning one), which :func:`find_latest_checkpoint` orders and filters
    by; ``metadata`` naming a key Checkpoint records itself (``iteration``,
    ``epoch``, ``world_size``, ``step``, ``score``, ``basename``,
    ``score_name``, ``priority``, ``crc32``, the manifest's) is refused by
    name. **Sharded state** (an FSDP2 model, its optimizer: DTensor shards) is
    one folder per save, named as above without ``.pt``: every rank writes
    its shards with torch.distributed.checkpoint into a temporary folder and
    rank 0 commits it with a ``manifest.json`` (file sizes and CRC-32s, the
    same metadata); the other entries travel in its ``plain.pt``. With
    ``async_save=True`` a sharded save returns once the shards are copied to
    host memory and is written in the background; the next save (or
    :meth:`wait`, or the engine's ``TERMINATE``/``COMPLETED``/``INTERRUPT``)
    waits for it and commits it. Sharded state is never written to one file.

    Example::

        checkpoint = Checkpoint({"model": model, "optimizer": optimizer, "trainer": trainer},
                                "runs/exp1/checkpoints", n_saved=2,
                                metadata={"run": "exp1"})
        trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
        checkpoint.last_checkpoint    # Path("runs/exp1/checkpoints/checkpoint_<iteration>.pt")
    """

    #: Fired on the engine after each save (see :class:`CheckpointEvents`).
    SAVED_CHECKPOINT = CheckpointEvents.SAVED_CHECKPOINT
    get_default_score_fn = staticmethod(get_default_score_fn)
    setup_filename_pattern = staticmethod(setup_filename_pattern)

    def __init__(
        self,
        to_save: Mapping[str, Any],
        save_handler: str | os.PathLike | DiskSaver | Callable[..., None],
        filename_prefix: str = "",
        score_function: Callable[[Engine], float] | None = None,
        score_name: str | None = None,
        n_saved: int | None = 1,
        global_step_transform: Callable[[Engine, Any], int] | None = None,
        filename_pattern: str | None = None,
        include_self: bool = False,
        greater_or_equal: bool = False,
        metadata: Metadata | None = None,
        async_save: bool = False,
    ) -> None:
        check_stateful(to_save, "to_save")
        if include_self and "checkpointer" in to_save:
            raise ValueError("to_save cannot hold 'checkpointer' when include_self=True")
        if n_saved is not None and (not isinstance(n_saved, int) or n_saved < 1):
            raise ValueError(f"n_saved must be a positive int or None (keep all), got {n_saved!r}")
        if score_name is not None and score_function is None:  # Ignite 0.5.5: the metric's value
            score_function = get_default_score_fn(score_name)
        if isinstance(save_handler, (str, os.PathLike)):
            save_handler = DiskSaver(save_handler, require_empty=False)
        if not callable(save_handler):
            raise TypeError(f"save_handler must be a folder or a callable, got {save_handler!r}")
        if metadata is not None and not (isinstance(metadata, Mapping) or callable(metadata)):
            raise TypeError(
                f"metadata must be a dict or a function of the engine, got {metadata!r}"
            )
        if not isinstance(async_save, bool):
            raise TypeError(f"async_save must be True or False, got {async_save!r}")
        if isinstance(metadata, Mapping):
            _check_metadata(metadata)
        self.to_save = dict(to_save)
        self.save_handler = save_handler
        self.filename_prefix = filename_prefix
        self.score_function = score_function
        self.score_name = score_name
        self.n_saved = n_saved
        self.global_step_transform = global_step_transform
        self.filename_pattern = filename_pattern
        self.include_self = include_self
        self.greater_or_equal = greater_or_equal
        self.metadata = metadata
        self.async_save = async_save
        self.saved: list[tuple[float, str]] = []  # (priority, filename), worst first
        self._last: str | None = None
        self._with_metadata = _accepts_metadata(save_handler)
        self._storage: ShardedStorage | None = None
        self._waits_on: list[Engine] = []
        self._warned_async = False

    @property
    def last_checkpoint(self) -> Path | str | None:
        """The path of the most recent save (under the saver's folder), or None before one.

        A sharded checkpoint's is its folder (with ``async_save``, committed
        by the next save or :meth:`wait`). A save handler without a folder
        (your own storage) gets the file name, a str, as in PyTorch-Ignite.
        """
        if self._last is None:
            return None
        folder = getattr(self.save_handler, "dirname", None)
        return Path(folder) / self._last if folder is not None else self._last

    def __call__(self, engine: Engine, *event_args: Any) -> None:
        if event_args and isinstance(event_args[0], BaseException):  # on EXCEPTION_RAISED
            if get_world_size() > 1:
                warnings.warn(
                    f"Checkpoint on EXCEPTION_RAISED ({type(event_args[0]).__name__}) saves "
                    f"nothing with {get_world_size()} ranks: a save needs every rank and the "
                    "others may not be failing; resume from the last checkpoint saved",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return
        step, score = self._agreed_step_and_score(engine)
        priority = score if score is not None else float(step)
        if not self._worth_keeping(priority):
            return
        sharded = self._holds_shards()
        filename = self._filename(step, score)
        if sharded and filename.endswith(SUFFIX):
            filename = filename[: -len(SUFFIX)]  # a folder
        if any(name == filename for _, name in self.saved):
            return
        kept = sorted([*self.saved, (priority, filename)], key=lambda item: item[0])
        dropped = []
        if self.n_saved is not None and len(kept) > self.n_saved:
            dropped, kept = kept[: -self.n_saved], kept[-self.n_saved :]
        metadata = self._metadata_for(engine, step, score)
        myself = {"saved": [list(i) for i in kept], "last": filename}
        with suspended():
            if sharded:
                self._store_sharded(engine, filename, metadata, myself)
            else:
                checkpoint = gather_states(self.to_save)
                if self.include_self:
                    checkpoint["checkpointer"] = myself
                self._store(checkpoint, filename, metadata)
        self.saved, self._last = kept, filename
        for _, old in dropped:
            self._remove(old)
        self._announce(engine)

    @staticmethod
    def _announce(engine: Engine) -> None:
        """Fire SAVED_CHECKPOINT on ``engine`` (registered at its first save there); the
        handlers after this one still see the event they were called for."""
        if not isinstance(engine, Engine):
            return
        if not engine.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT):
            engine.register_events(*CheckpointEvents)
        current = engine.last_event_name
        engine.fire_event(CheckpointEvents.SAVED_CHECKPOINT)
        engine.last_event_name = current

    def _holds_shards(self) -> bool:
        """Whether a module or optimizer to save is sharded (the same answer on every rank)."""
        return any(is_sharded(unwrap(obj)) for obj in self.to_save.values() if is_shardable(obj))

    def _sharded_storage(self) -> ShardedStorage:
        if self._storage is None:
            folder = getattr(self.save_handler, "dirname", None)
            if folder is None:
                raise ValueError(
                    "to_save holds sharded (DTensor) state, which is saved as a folder of "
                    f"shards: give Checkpoint a folder or a DiskSaver, not {self.save_handler!r}"
                )
            timeout_s = getattr(self.save_handler, "timeout_s", DEFAULT_TIMEOUT_S)
            self._storage = ShardedStorage(folder, async_save=self.async_save, timeout_s=timeout_s)
        return self._storage

    def _store_sharded(self, engine: Engine, name: str, metadata: dict, myself: dict) -> None:
        storage = self._sharded_storage()
        sharded, plain = gather_state(self.to_save)
        if self.include_self:
            plain["checkpointer"] = myself
        metadata = {k: v for k, v in metadata.items() if k != "world_size"}  # the manifest's own
        storage.save(name, sharded, plain, metadata)
        if self.async_save and all(engine is not e for e in self._waits_on):
            self._waits_on.append(engine)  # its last save is committed when it stops
            for stop in (Events.TERMINATE, Events.COMPLETED, Events.INTERRUPT):
                engine.add_event_handler(stop, self.wait)

    def _remove(self, name: str) -> None:
        if not name.endswith(SUFFIX) and self._storage is not None:
            self._storage.remove(name)  # after the save in flight is committed
            return
        remove = getattr(self.save_handler, "remove", None)
        if remove is not None:
            remove(name)

    def wait(self) -> None:
        """Commit the asynchronous sharded save in flight, if any (every rank must call it).

        Called on the engine's ``TERMINATE``, ``COMPLETED`` and ``INTERRUPT``; call it yourself
        before reading :attr:`last_checkpoint` mid-run or before the process ends.
        """
        if self._storage is not None:
            with suspended():
                self._storage.wait()

    def _agreed_step_and_score(self, engine: Engine) -> tuple[int, float | None]:
        """This rank's step and score, then rank 0's for every rank (one tiny broadcast)."""
        step = self._global_step(engine)
        score = _as_score(self.score_function(engine)) if self.score_function else None
        if get_world_size() > 1:
            step, score = decide((step, math.nan if score is None else score))
            score = None if self.score_function is None else score
        return int(step), score

    def _worth_keeping(self, priority: float) -> bool:
        if self.n_saved is None or len(self.saved) < self.n_saved:
            return True
        worst = self.saved[0][0]
        return priority >= worst if self.greater_or_equal else priority > worst

    def _global_step(self, engine: Engine) -> int:
        if self.global_step_transform is not None:
            return int(self.global_step_transform(engine, engine.last_event_name))
        return int(engine.state.iteration)

    def _filename(self, step: int, score: float | None) -> str:
        name = "checkpoint" if len(self.to_save) > 1 else next(iter(self.to_save))
        fields = dict(
            filename_prefix=self.filename_prefix,
            name=name,
            global_step=step,
            score_name=self.score_name,
            score=score,
            ext=SUFFIX.lstrip("."),
        )
        if self.filename_pattern is not None:
            return self.filename_pattern.format(**fields)
        parts = [p for p in (self.filename_prefix, name, str(step)) if p]
        if score is not None:
            parts.append(f"{self.score_name}={score:.4f}" if self.score_name else f"{score:.4f}")
        return "_".join(parts) + SUFFIX

    def _metadata_for(self, engine: Engine, step: int, score: float | None) -> dict[str, Any]:
        extra = self.metadata(engine) if callable(self.metadata) else self.metadata or {}
        _check_metadata(extra)
        name = "checkpoint" if len(self.to_save) > 1 else next(iter(self.to_save))
        meta: dict[str, Any] = {
            "iteration": int(engine.state.iteration),
            "epoch": int(engine.state.epoch),
            "world_size": get_world_size(),
            "step": step,
            # what PyTorch-Ignite gives a BaseSaveHandler:
            "basename": "_".join(p for p in (self.filename_prefix, name) if p),
            "score_name": self.score_name,
            "priority": score if score is not None else step,
        }
        if score is not None:
            meta["score"] = score
        return {**meta, **extra}

    def _store(self, checkpoint: dict[str, Any], filename: str, metadata: dict) -> None:
        if self.async_save and not self._warned_async:
            self._warned_async = True
            warnings.warn(
                "Checkpoint(async_save=True) applies to sharded (FSDP) state; this plain state "
                "is written synchronously to one file",
                RuntimeWarning,
                stacklevel=3,
            )
        if self._with_metadata:
            self.save_handler(checkpoint, filename, metadata)
        else:
            self.save_handler(checkpoint, filename)

    def state_dict(self) -> dict[str, Any]:
        """The kept checkpoints and their priorities (so a resumed run keeps pruning them)."""
        return {"saved": [[priority, name] for priority, name in self.saved], "last": self._last}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`: the kept checkpoints and the last one saved."""
        self.saved = [(float(p), str(n)) for p, n in state_dict["saved"]]
        self._last = state_dict.get("last", self.saved[-1][1] if self.saved else None)

    @staticmethod
    def load_objects(
        to_load: Mapping[str, Any],
        checkpoint: str | os.PathLike | Mapping[str, Any] | ShardedCheckpoint,
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
    ) -> None:
        """Load a checkpoint into ``to_load``; call it on every rank.

        ``checkpoint`` is a file path, a sharded checkpoint folder, a
        :class:`ShardedCheckpoint` or a loaded dict (what
        :func:`find_latest_checkpoint` returns). Files load with
        ``torch.load(weights_only=True, mmap=True)``: memory-mapped, not a
        private copy per rank. A folder loads onto any number of ranks (DCP
        reshards models and optimizers). A file loaded into sharded (FSDP)
        objects is read by rank 0 alone and sent to each rank as its shards.
        Every key of ``to_load`` must be in the checkpoint; errors name the
        missing ones. Per-rank entries give each rank its own state; one
        saved with another world size goes to the object's
        ``load_per_rank_state_dicts`` or is refused by name.

        Example::

            Checkpoint.load_objects({"model": model, "trainer": trainer},
                                    "ckpt/checkpoint_300.pt")
        """
        check_stateful(to_load, "to_load")
        if isinstance(checkpoint, (str, os.PathLike)) and Path(checkpoint).is_dir():
            checkpoint = ShardedCheckpoint(checkpoint)
        if isinstance(checkpoint, ShardedCheckpoint):
            checkpoint.load(dict(to_load), strict=strict)
            return
        if any(is_sharded(obj) for obj in to_load.values() if is_shardable(obj)):
            load_full_into(to_load, checkpoint, map_location, strict)  # rank 0 reads
            return
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = load_checkpoint_file(Path(checkpoint), map_location)
        if not isinstance(checkpoint, Mapping):
            raise TypeError(f"checkpoint must be a path or a dict, got {type(checkpoint).__name__}")
        missing = [name for name in to_load if name not in checkpoint]
        if missing:
            raise KeyError(
                f"checkpoint lacks {missing}; it holds {sorted(checkpoint)} "
                "(load only those, or save them too)"
            )
        for name, obj in to_load.items():
            load_state(name, obj, checkpoint[name], strict=strict)


def _check_metadata(extra: Any) -> None:
    """On every rank, before anything is gathered or written (so no rank waits for another)."""
    if not isinstance(extra, Mapping):
        raise TypeError(f"metadata must be a dict, got {extra!r}")
    try:
        json.dumps(dict(extra))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"checkpoint metadata must be JSON-serialisable (str, numbers, lists, dicts): "
            f"{dict(extra)!r} is not ({error})"
        ) from None
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(
            f"metadata keys {clash} are recorded by Checkpoint itself; use other names "
            f"(reserved: {list(_RESERVED)})"
        )
