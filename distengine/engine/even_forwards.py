"""Evaluating a sharded (FSDP) model on exact shards: every rank runs as many forwards.

Under FSDP every forward all-gathers each block's shards, a collective all
ranks must join. An exact evaluation shard (each sample on one rank) may give
a rank one batch fewer than another, or none; that rank would leave the
others waiting in their last forward. :class:`EvenForwards` learns every
rank's number of batches when the run starts (one small gather) and, when an
epoch completes, has a rank that ran fewer run the missing forwards on an
input it saw (or, with an empty shard, on its dataset's first sample),
discarding the outputs: metrics stay those of the exact shards. The padding
forwards call the model as the evaluation step does (its ``model_fn``, in eval
mode, under its autocast), so they run the same collectives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from distengine.distributed import all_gather

if TYPE_CHECKING:
    from distengine.engine.engine import Engine


class EvenForwards:
    """Counts an evaluator's forwards of ``model`` so every rank runs as many per epoch.

    Example::

        even = EvenForwards(fsdp_model, prepare_batch, device, non_blocking=False,
                            model_fn=lambda model, x: model(x["tokens"]))
        evaluator.add_event_handler(Events.STARTED, even.started)
        evaluator.add_event_handler(Events.EPOCH_STARTED, even.epoch_started)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, even.even_out)  # before metrics
        # in the evaluation step: even.seen(x); y_pred = model_fn(model, x)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        prepare_batch: Callable,
        device: torch.device | None,
        non_blocking: bool,
        model_fn: Callable[[torch.nn.Module, Any], Any] = lambda model, x: model(x),
        cast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.model, self.prepare_batch = model, prepare_batch
        self.device, self.non_blocking = device, non_blocking
        self.model_fn, self.cast = model_fn, cast
        self.most, self.count, self.sample = 0, 0, None

    def started(self, engine: Engine) -> None:
        """Learn the most batches any rank has (every rank must call it: one gather)."""
        mine = engine.state.epoch_length
        lengths = all_gather(-1 if mine is None else int(mine))
        if min(lengths) < 0:
            raise ValueError(
                "evaluating an FSDP model needs data with a len on every rank (each forward is "
                "a collective, so every rank must know how many the others run): give the "
                "evaluator a DataLoader over a map-style dataset, or run(..., epoch_length=n)"
            )
        self.most, self.count = max(lengths), 0
        self.sample = (
            self._first_input(engine.state.dataloader) if mine == 0 and self.most else None
        )

    def epoch_started(self) -> None:
        self.count = 0

    def seen(self, x: Any) -> None:
        """One forward on ``x`` is about to run on this rank."""
        self.count += 1
        self.sample = x

    def even_out(self) -> None:
        """Run the forwards this rank lacks, as the evaluation step runs them."""
        if self.count < self.most and self.model.training:
            self.model.eval()  # an empty shard's rank never ran the step that sets it
        with torch.no_grad(), self.cast():
            for _ in range(self.most - self.count):
                self.model_fn(self.model, self.sample)

    def _first_input(self, data: Any) -> Any:
        """An input for an empty shard's forwards: the dataset's first sample, as a batch."""
        dataset = getattr(data, "dataset", None)
        if not isinstance(data, DataLoader) or isinstance(dataset, IterableDataset):
            raise ValueError(
                "this rank's evaluation shard is empty and its data is no DataLoader over a "
                "map-style dataset, so it has no input to run the FSDP forwards the other ranks "
                "run: give every rank at least one batch"
            )
        batch = data.collate_fn([dataset[0]])
        x, _ = self.prepare_batch(batch, self.device, self.non_blocking)
        return x
