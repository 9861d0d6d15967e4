"""PyTorch-Ignite's ``ReproducibleBatchSampler`` and ``update_dataloader``: a loader whose
pass can start at any batch.

distengine's engines resume a pass exactly without them (see
:mod:`distengine.engine.resume`); they are here for code that builds such a
loader itself, as Ignite's documentation shows.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from torch.utils.data import BatchSampler, DataLoader

__all__ = ["ReproducibleBatchSampler", "update_dataloader"]

#: DataLoader arguments that the batch sampler replaces (they may not be given with it).
_REPLACED = ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last")


class ReproducibleBatchSampler(BatchSampler):
    """Draws a pass's batches of indices up front, so the pass can start at any batch.

    Each pass asks ``batch_sampler`` for all its batches (one draw of the
    sampler's generator, as the plain sampler makes) and, when
    ``start_iteration`` is set, drops the first ``start_iteration`` of them,
    once: the next pass is whole again.

    Example::

        loader = update_dataloader(loader, ReproducibleBatchSampler(loader.batch_sampler))
        torch.manual_seed(epoch_seed)
        loader.batch_sampler.start_iteration = 40   # this pass starts at its 41st batch
        for batch in loader: ...
    """

    def __init__(self, batch_sampler: BatchSampler, start_iteration: int | None = None) -> None:
        if not isinstance(batch_sampler, BatchSampler):
            raise TypeError(
                "Argument batch_sampler should be torch.utils.data.sampler.BatchSampler "
                f"(a DataLoader's .batch_sampler), got {type(batch_sampler).__name__}"
            )
        self.batch_sampler = batch_sampler
        self.sampler = batch_sampler.sampler
        self.batch_size = batch_sampler.batch_size
        self.drop_last = batch_sampler.drop_last
        self.start_iteration = start_iteration
        self.batch_indices: list[list[int]] = []

    def setup_batch_indices(self) -> None:
        """Draw this pass's batches, less the first ``start_iteration`` (then cleared)."""
        self.batch_indices = list(self.batch_sampler)
        if self.start_iteration is not None:
            self.batch_indices = self.batch_indices[self.start_iteration :]
            self.start_iteration = None

    def __iter__(self) -> Iterator[list[int]]:
        # a generator, as a BatchSampler's: the draw happens at the first batch, after the
        # DataLoader drew its workers' base seed, so the order equals the plain loader's
        self.setup_batch_indices()
        yield from self.batch_indices

    def __len__(self) -> int:
        return len(self.batch_sampler)


def update_dataloader(dataloader: DataLoader, new_batch_sampler: BatchSampler) -> DataLoader:
    """A loader like ``dataloader`` (same class, dataset, workers, collate...) drawing its
    batches from ``new_batch_sampler``.

    Example::

        loader = update_dataloader(loader, ReproducibleBatchSampler(loader.batch_sampler))
    """
    if not isinstance(dataloader, DataLoader):
        raise TypeError(
            f"Argument dataloader should be a torch DataLoader, got {type(dataloader).__name__}"
        )
    names = inspect.signature(type(dataloader).__init__).parameters
    kwargs: dict[str, Any] = {
        name: getattr(dataloader, name)
        for name in names
        if name not in ("self", *_REPLACED) and hasattr(dataloader, name)
    }
    return type(dataloader)(batch_sampler=new_batch_sampler, **kwargs)
