"""Keeping the latest or best checkpoints of a run, and loading them back."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from distengine.engine import Engine
from distengine.handlers.disk_saver import SUFFIX, DiskSaver, checksum_path, file_checksum
from distengine.handlers.rank_states import for_this_rank, with_every_rank


def _unwrap(obj: Any) -> Any:
    """The module inside DistributedDataParallel/DataParallel, so checkpoints load anywhere."""
    return getattr(obj, "module", obj) if isinstance(obj, torch.nn.Module) else obj


def _check_stateful(objects: Mapping[str, Any], what: str) -> None:
    if not isinstance(objects, Mapping) or not objects:
        raise TypeError(f"{what} must be a non-empty dict of name -> object, got {objects!r}")
    for name, obj in objects.items():
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(
                f"{what}[{name!r}] is a {type(obj).__name__}, which has no "
                "state_dict/load_state_dict"
            )


class Checkpoint:
    """A handler that saves ``to_save`` and keeps the ``n_saved`` best or latest files.

    Files are named ``{prefix}_{name}_{step}[_{score_name}={score}].pt``, where
    ``name`` is ``checkpoint`` (or the only key of ``to_save``) and ``step``
    comes from ``global_step_transform(engine, event)`` or the engine's counter
    for the event. With ``score_function`` the best scores are kept, else
    the latest steps. Only files this handler wrote are ever removed.
    Every rank must call it (saving ends with a barrier); rank 0 writes.

    Example::

        checkpoint = Checkpoint({"model": model, "optimizer": optimizer, "trainer": trainer},
                                "runs/exp1/checkpoints", n_saved=2)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    """

    def __init__(
        self,
        to_save: Mapping[str, Any],
        save_handler: str | os.PathLike | DiskSaver | Callable[[dict, str], None],
        filename_prefix: str = "",
        score_function: Callable[[Engine], float] | None = None,
        score_name: str | None = None,
        n_saved: int | None = 1,
        global_step_transform: Callable[[Engine, Any], int] | None = None,
        filename_pattern: str | None = None,
        include_self: bool = False,
        greater_or_equal: bool = False,
    ) -> None:
        _check_stateful(to_save, "to_save")
        if include_self and "checkpointer" in to_save:
            raise ValueError("to_save cannot hold 'checkpointer' when include_self=True")
        if n_saved is not None and (not isinstance(n_saved, int) or n_saved < 1):
            raise ValueError(f"n_saved must be a positive int or None (keep all), got {n_saved!r}")
        if score_name is not None and score_function is None:
            raise ValueError("score_name needs a score_function")
        if isinstance(save_handler, (str, os.PathLike)):
            save_handler = DiskSaver(save_handler, require_empty=False)
        if not callable(save_handler):
            raise TypeError(f"save_handler must be a folder or a callable, got {save_handler!r}")
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
        self.saved: list[tuple[float, str]] = []  # (priority, filename), worst first
        self._last: str | None = None

    @property
    def last_checkpoint(self) -> str | None:
        """The file name of the most recent save that was kept."""
        return self._last

    def __call__(self, engine: Engine) -> None:
        step = self._global_step(engine)
        score = float(self.score_function(engine)) if self.score_function else None
        priority = score if score is not None else float(step)
        if not self._worth_keeping(priority):
            return
        filename = self._filename(step, score)
        if any(name == filename for _, name in self.saved):
            return
        self.saved.append((priority, filename))
        self.saved.sort(key=lambda item: item[0])
        dropped = []
        if self.n_saved is not None and len(self.saved) > self.n_saved:
            dropped, self.saved = self.saved[: -self.n_saved], self.saved[-self.n_saved :]
        self.save_handler(self._gather(), filename)
        self._last = filename
        remove = getattr(self.save_handler, "remove", None)
        for _, old in dropped:
            if remove is not None:
                remove(old)

    def _worth_keeping(self, priority: float) -> bool:
        if self.n_saved is None or len(self.saved) < self.n_saved:
            return True
        worst = self.saved[0][0]
        return priority >= worst if self.greater_or_equal else priority > worst

    def _global_step(self, engine: Engine) -> int:
        event = engine.last_event_name
        if self.global_step_transform is not None:
            return int(self.global_step_transform(engine, event))
        attr = engine.state.counter_for(event) if event is not None else None
        return int(getattr(engine.state, attr or "iteration"))

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

    def _gather(self) -> dict[str, Any]:
        checkpoint = {name: _unwrap(obj).state_dict() for name, obj in self.to_save.items()}
        for name, obj in self.to_save.items():
            if isinstance(obj, Engine):
                checkpoint[name] = with_every_rank(checkpoint[name])
        if self.include_self:
            checkpoint["checkpointer"] = self.state_dict()
        return checkpoint

    def state_dict(self) -> dict[str, Any]:
        """The kept files and their priorities (so a resumed run keeps pruning them)."""
        return {"saved": [[priority, name] for priority, name in self.saved]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.saved = [(float(p), str(n)) for p, n in state_dict["saved"]]

    @staticmethod
    def load_objects(
        to_load: Mapping[str, Any],
        checkpoint: str | os.PathLike | Mapping[str, Any],
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
    ) -> None:
        """Load a checkpoint (a path or a loaded dict) into ``to_load``; call it on every rank.

        Files load with ``torch.load(weights_only=True)``. Every key of
        ``to_load`` must be in the checkpoint; errors name the missing ones.

        Example::

            Checkpoint.load_objects({"model": model, "trainer": trainer}, "ckpt/checkpoint_3.pt")
        """
        _check_stateful(to_load, "to_load")
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
            target = _unwrap(obj)
            if isinstance(target, torch.nn.Module):
                target.load_state_dict(checkpoint[name], strict=strict)
            elif isinstance(target, Engine):
                target.load_state_dict(for_this_rank(checkpoint[name]))
            else:
                target.load_state_dict(checkpoint[name])


def load_checkpoint_file(path: Path, map_location: str | torch.device | None = "cpu") -> dict:
    """``torch.load(path, weights_only=True)``, checked against its CRC-32 where one was kept.

    A truncated or corrupt file raises ValueError naming the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    expected = checksum_path(path)
    if expected.is_file() and file_checksum(path) != expected.read_text().strip():
        raise ValueError(f"checkpoint {path} is corrupt: its CRC-32 differs from {expected.name}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint {path} is corrupt or truncated ({error})") from error


def _step_of(path: Path) -> int:
    numbers = re.findall(r"_(\d+)(?:_|\.pt$)", path.name)
    return int(numbers[-1]) if numbers else -1


def find_latest_checkpoint(
    dirname: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``dirname`` that loads, with its contents, or None.

    Newest means the highest step in the name, then the latest modification.
    Files that fail to load (truncated, corrupt) are skipped with a warning
    naming them.

    Example::

        found = find_latest_checkpoint("runs/exp1/checkpoints")
        if found:
            Checkpoint.load_objects(to_load, found[1])
    """
    folder = Path(dirname)
    if not folder.is_dir():
        return None
    candidates = sorted(
        (p for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith(".")),
        key=lambda p: (_step_of(p), p.stat().st_mtime),
        reverse=True,
    )
    for path in candidates:
        try:
            return path, load_checkpoint_file(path, map_location)
        except ValueError as error:
            warnings.warn(f"skipping {error}", RuntimeWarning, stacklevel=2)
    return None
