"""``ModelCheckpoint``: a :class:`Checkpoint` to a folder, given the objects when it is called
(PyTorch-Ignite's)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from distengine.checkpoint.disk import DiskSaver
from distengine.checkpoint.stateful import check_stateful
from distengine.engine import Engine
from distengine.handlers.checkpoint import Checkpoint

__all__ = ["ModelCheckpoint"]


class _NotGivenYet:
    """Stands for the objects a ModelCheckpoint receives when it is called."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        pass


class ModelCheckpoint(Checkpoint):
    """Saves the objects it is given at each call into ``dirname``; keeps ``n_saved`` files.

    PyTorch-Ignite's signature: the handler is added with the objects as its
    argument (``add_event_handler(event, handler, {"model": model})``) and
    writes through a :class:`DiskSaver` (atomic, rank 0). Naming, retention,
    scores and ``last_checkpoint`` are :class:`Checkpoint`'s. Differences
    that raise: ``save_on_rank`` other than 0 (rank 0 writes) and ``torch.save``
    keyword arguments (files are written with torch.save's defaults).

    Example::

        handler = ModelCheckpoint("/tmp/models", "myprefix", n_saved=2, require_empty=False)
        trainer.add_event_handler(Events.EPOCH_COMPLETED(every=2), handler, {"mymodel": model})
        trainer.run(data, max_epochs=6)
        handler.last_checkpoint   # Path("/tmp/models/myprefix_mymodel_<iteration>.pt")
    """

    def __init__(
        self,
        dirname: str | os.PathLike,
        filename_prefix: str = "",
        score_function: Callable[[Engine], float] | None = None,
        score_name: str | None = None,
        n_saved: int | None = 1,
        atomic: bool = True,
        require_empty: bool = True,
        create_dir: bool = True,
        global_step_transform: Callable[[Engine, Any], int] | None = None,
        filename_pattern: str | None = None,
        include_self: bool = False,
        greater_or_equal: bool = False,
        save_on_rank: int = 0,
        **kwargs: Any,
    ) -> None:
        if save_on_rank != 0:
            raise ValueError(
                f"save_on_rank={save_on_rank!r}: distengine writes checkpoints on rank 0 only"
            )
        if kwargs:
            raise TypeError(
                f"ModelCheckpoint got torch.save options {sorted(kwargs)}: distengine writes "
                "checkpoints with torch.save's defaults (they load with weights_only=True)"
            )
        saver = DiskSaver(
            dirname, atomic=atomic, create_dir=create_dir, require_empty=require_empty
        )
        super().__init__(
            {"objects": _NotGivenYet()},
            saver,
            filename_prefix=filename_prefix,
            score_function=score_function,
            score_name=score_name,
            n_saved=n_saved,
            global_step_transform=global_step_transform,
            filename_pattern=filename_pattern,
            include_self=include_self,
            greater_or_equal=greater_or_equal,
        )
        self.to_save = {}

    def __call__(self, engine: Engine, to_save: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Save ``to_save`` (name -> object with ``state_dict``) as the engine stands now."""
        if not to_save:
            raise RuntimeError(
                "No objects to checkpoint found: pass a dict such as {'model': model}"
            )
        check_stateful(to_save, "to_save")
        if self.include_self and "checkpointer" in to_save:
            raise ValueError("to_save cannot hold 'checkpointer' when include_self=True")
        self.to_save = dict(to_save)
        super().__call__(engine)
