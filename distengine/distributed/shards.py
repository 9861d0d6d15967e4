"""How a dataset is split among ranks: evenly (training) or exactly (evaluation).

An *even* split gives every rank the same number of samples, as DDP
training needs (a rank that stops early leaves the others waiting in a
gradient all-reduce): torch's DistributedSampler pads by repeating samples or,
with ``drop_last``, drops the remainder. An *exact* split puts every sample
on exactly one rank (rank ``r`` of ``w`` takes samples ``r, r + w, ...``), as
evaluation needs: ranks may then hold one sample more than others, or none.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, Sampler

SPLITS = ("even", "exact")


def global_batch_problem(batch_size: int, world: int) -> str | None:
    """Why ``world`` ranks cannot share the global batch ``batch_size`` evenly, or None.

    Each rank takes ``batch_size // world`` samples; a remainder would make
    every step smaller than asked (64 on 3 ranks: 63) and tie the run's
    sample sequence to that number of ranks. The answer names the global
    batches that work on ``world`` ranks and the numbers of ranks that work
    with ``batch_size``.

    Example::

        global_batch_problem(64, 3)
        # 'cannot be split evenly among 3 ranks (21 each, 63 in all): use a multiple
        #  of 3 (63 or 66), or a number of ranks that divides 64 (1, 2, 4, 8, 16, 32, 64)'
    """
    if batch_size % world == 0:
        return None
    share = batch_size // world
    multiples = [m for m in (share * world, (share + 1) * world) if m > 0]
    return (
        f"cannot be split evenly among {world} ranks ({share} each, {share * world} in all): "
        f"use a multiple of {world} ({' or '.join(map(str, multiples))}), or a number of "
        f"ranks that divides {batch_size} ({divisors_text(batch_size)})"
    )


def divisors_text(n: int, most: int = 8) -> str:
    """``n``'s divisors, listed (``1, 2, 3, 4, 6, 8, 12, ..., 96`` when there are many)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    found = [str(d) for d in sorted({*small, *(n // d for d in small)})]
    return ", ".join(found if len(found) <= most else [*found[: most - 1], "...", found[-1]])


class ExactShardSampler(Sampler[int]):
    """Rank ``rank`` of ``num_replicas`` takes samples ``rank, rank + num_replicas, ...``.

    Every sample of the (optionally shuffled: ``seed + epoch``) dataset goes
    to exactly one rank; shards differ by at most one sample and may be empty.

    Example::

        sampler = ExactShardSampler(val_set, num_replicas=4, rank=1)
        loader = DataLoader(val_set, batch_size=32, sampler=sampler)
    """

    def __init__(
        self, dataset: Any, num_replicas: int, rank: int, shuffle: bool = False, seed: int = 0
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        self.size = len(dataset)
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (with ``shuffle=True``); engines call it each epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.rank, self.size, self.num_replicas))
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=gen)
        return iter(order[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.num_replicas))

    def rank_lengths(self) -> list[int]:
        """How many samples each rank holds (known on every rank, without a collective)."""
        return [len(range(r, self.size, self.num_replicas)) for r in range(self.num_replicas)]


class RankShard(IterableDataset):
    """This rank's part of an iterable dataset: every ``world``-th item of the stream.

    In each DataLoader worker the stream is what the dataset yields there (as
    with any IterableDataset, the dataset itself gives each worker its part).
    ``even=True`` drops the last incomplete round of ``world`` items, so every
    rank yields as many items; ``even=False`` keeps every item exactly once.
    """

    def __init__(self, dataset: IterableDataset, rank: int, world: int, even: bool) -> None:
        self.dataset, self.rank, self.world, self.even = dataset, rank, world, even

    def __iter__(self) -> Iterator[Any]:
        items = iter(self.dataset)
        if not self.even:
            return itertools.islice(items, self.rank, None, self.world)
        return self._complete_rounds(items)

    def _complete_rounds(self, items: Iterator[Any]) -> Iterator[Any]:
        while True:
            round_ = list(itertools.islice(items, self.world))
            if len(round_) < self.world:
                return
            yield round_[self.rank]


class SizedRankShard(RankShard):
    """A :class:`RankShard` of a dataset with ``len`` read in one process (no workers)."""

    def __len__(self) -> int:
        total = len(self.dataset)  # type: ignore[arg-type]
        if self.even:
            return total // self.world
        return len(range(self.rank, total, self.world))


def rank_batch_counts(data: Any) -> list[int] | None:
    """Batches per rank of a DataLoader over an exact shard (None when not one)."""
    sampler = getattr(data, "sampler", None)
    if not isinstance(sampler, ExactShardSampler) or data.batch_size is None:
        return None
    size = data.batch_size
    rounding = math.floor if data.drop_last else math.ceil
    return [rounding(n / size) for n in sampler.rank_lengths()]


def check_training_shards(data: Any) -> None:
    """Refuse data whose ranks may run different numbers of DDP training iterations."""
    counts = rank_batch_counts(data)
    if counts is not None and len(set(counts)) > 1:
        reason = f"gives the ranks {counts} batches"
    elif isinstance(getattr(data, "dataset", None), RankShard) and not data.dataset.even:
        reason = "gives each rank every world-th item of an iterable dataset, whatever is left"
    else:
        return
    raise ValueError(
        f"this loader splits the data exactly for evaluation and {reason}: DDP training "
        "would hang when one rank runs out first. Make training loaders with "
        "auto_dataloader(..., split='even') (the default with shuffle=True or drop_last=True)"
    )
