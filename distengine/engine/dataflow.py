"""Batches for an engine from any iterable, with exact repositioning on resume.

The flow remembers where its current iterator started (epoch, iteration and
random generator states). To resume at iteration ``i`` it rebuilds that
iterator from the same generator states and skips the batches already used.
For a map-style ``DataLoader`` the skip happens in the batch sampler, so
skipped batches are never loaded; any other iterable is fast-forwarded by
drawing and dropping batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DataLoader, IterableDataset

from distengine.engine import rng


class _SkipBatches:
    """A batch sampler that leaves out the first ``skip`` batches of another."""

    def __init__(self, batch_sampler: Iterable[list[int]], skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.sampler = getattr(batch_sampler, "sampler", None)
        self.skip = skip

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)  # type: ignore[arg-type]


def _loader_skipping(loader: DataLoader, skip: int) -> DataLoader | None:
    """A copy of ``loader`` that starts ``skip`` batches in, or None if it cannot be made."""
    if isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
        return None
    extra: dict[str, Any] = {}
    if loader.num_workers > 0:
        extra = dict(prefetch_factor=loader.prefetch_factor, persistent_workers=False)
    return DataLoader(
        loader.dataset,
        batch_sampler=_SkipBatches(loader.batch_sampler, skip),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        pin_memory_device=loader.pin_memory_device,
        **extra,
    )


def data_length(data: Any) -> int | None:
    """``len(data)`` where the data has one, else None."""
    try:
        return len(data)
    except TypeError:
        return None


def set_sampler_epoch(data: Any, epoch: int) -> None:
    """Call ``set_epoch`` on the data's sampler (e.g. a DistributedSampler), if it has one."""
    for owner in (getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        for sampler in (owner, getattr(owner, "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
                return


class DataFlow:
    """Hands out an engine's batches and can put itself back at any position.

    Example::

        flow = DataFlow(loader)
        batch = flow.next_batch(epoch=1, iteration=0)
    """

    def __init__(self, data: Iterable[Any]) -> None:
        self.data = data
        self.length = data_length(data)
        self._it: Iterator[Any] | None = None
        self._drawn = 0
        self._start: dict[str, Any] | None = None
        self._pending: list[Any] = []

    def next_batch(self, epoch: int, iteration: int) -> Any:
        """The next batch; raises StopIteration when the data ends (the flow then restarts)."""
        if self._it is None:
            self._open(epoch, iteration)
        if self._pending:
            batch = self._pending.pop()
        else:
            try:
                batch = next(self._it)  # type: ignore[arg-type]
            except StopIteration:
                self.close()
                raise
        self._drawn += 1
        if self._drawn == self.length:
            self.close()
        return batch

    def close(self) -> None:
        """Drop the current iterator; the next batch comes from a new pass over the data."""
        self._it = None
        self._pending.clear()

    def _open(self, epoch: int, iteration: int) -> None:
        set_sampler_epoch(self.data, epoch - 1)
        self._start = {"epoch": epoch, "iteration": iteration, "rng": rng.snapshot(self.data)}
        self._it = iter(self.data)
        self._drawn = 0

    def position(self) -> dict[str, Any] | None:
        """Where the current iterator started, for a state dict (None: no iterator open)."""
        return None if self._it is None else self._start

    def restore(self, position: dict[str, Any] | None, iteration: int) -> None:
        """Reopen the iterator of ``position`` and skip to ``iteration`` (exact resume)."""
        self.close()
        if position is None:
            return
        skip = iteration - position["iteration"]
        now = rng.snapshot(self.data)
        set_sampler_epoch(self.data, position["epoch"] - 1)
        rng.restore(position["rng"], self.data)
        try:
            self._it = self._iterator_skipping(skip)
            self._pending = [next(self._it)]  # the sampler draws its order now, from the old state
        except StopIteration:
            self.close()
        finally:
            rng.restore(now, self.data)
        self._start = position
        self._drawn = skip

    def _iterator_skipping(self, skip: int) -> Iterator[Any]:
        if isinstance(self.data, DataLoader):
            loader = _loader_skipping(self.data, skip)
            if loader is not None:
                return iter(loader)
        return itertools.islice(iter(self.data), skip, None)
