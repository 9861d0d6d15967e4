"""The base class of checkpoint save handlers (PyTorch-Ignite's ``BaseSaveHandler``)."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from typing import Any

from distengine.checkpoint.disk import DiskSaver

__all__ = ["BaseSaveHandler"]


class BaseSaveHandler(metaclass=ABCMeta):
    """Where :class:`~distengine.handlers.Checkpoint` stores its files: subclass it to plug in
    your own storage.

    Override ``__call__(checkpoint, filename, metadata=None)`` (write the dict
    ``checkpoint`` under ``filename``) and ``remove(filename)`` (delete a file
    the handler wrote, once it is no longer among the ``n_saved`` kept).
    ``Checkpoint`` calls both on every rank, as PyTorch-Ignite does: write
    on rank 0 (``idist.get_rank() == 0``: only its ``checkpoint`` is whole,
    per-rank entries being gathered there; the other ranks' hold
    ``{"__per_rank__": None}`` for them) and, if the others must wait for
    the write, end with a collective every rank runs. ``metadata`` holds
    Ignite's ``basename``, ``score_name`` and ``priority``, and distengine's
    ``iteration``, ``epoch``, ``world_size`` and ``step`` plus the
    checkpoint's own ``metadata=``. :class:`DiskSaver` counts as one.

    Example::

        class ToBucket(BaseSaveHandler):
            def __call__(self, checkpoint, filename, metadata=None):
                if idist.get_rank() == 0:
                    upload(filename, checkpoint)

            def remove(self, filename):
                if idist.get_rank() == 0:
                    delete(filename)

        trainer.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint(to_save, ToBucket()))
    """

    @abstractmethod
    def __call__(
        self,
        checkpoint: Mapping[str, Any],
        filename: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Save ``checkpoint`` as ``filename``."""

    @abstractmethod
    def remove(self, filename: str) -> None:
        """Remove the file saved as ``filename``."""


BaseSaveHandler.register(DiskSaver)
