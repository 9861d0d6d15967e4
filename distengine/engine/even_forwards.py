"""Evaluating a sharded (FSDP) model on exact shards: every rank runs as many forwards.

Under FSDP every forward all-gathers each block's shards, a collective all
ranks must join. An exact evaluation shard (each sample on one rank) may give
a rank one batch fewer than another, or none; that rank would leave the
others waiting in their last forward. :class:`EvenForwards` counts each
rank's forwards and, when the epoch completes, has the ranks that ran fewer
run the missing ones on an input they saw (or one sent by a rank that has
one), discarding the outputs, so the metrics are those of the exact shards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from distengine.distributed import all_gather, broadcast, get_rank

if TYPE_CHECKING:
    from distengine.engine.engine import Engine


def _moved(value: Any, device: torch.device | None) -> Any:
    """``value`` with its tensors on ``device`` (None: the CPU), through tuples, lists, dicts."""
    if isinstance(value, torch.Tensor):
        return value.to(device or "cpu")
    if isinstance(value, (tuple, list)):
        return type(value)(_moved(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    return value


class EvenForwards:
    """Counts an evaluator's forwards of ``model``; :meth:`even_out` makes every rank's equal.

    Example::

        even = EvenForwards(fsdp_model, device)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, even.even_out)  # before metrics
        # in the evaluation step: even.seen(x); y_pred = model(x)
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | None) -> None:
        self.model, self.device = model, device
        self.count, self.sample = 0, None

    def seen(self, x: Any) -> None:
        """One forward on ``x`` is about to run on this rank."""
        self.count += 1
        self.sample = x

    def reset(self) -> None:
        self.count, self.sample = 0, None

    def even_out(self, engine: Engine | None = None) -> None:
        """Run the forwards this rank lacks (every rank must call it: one gather, maybe two)."""
        counts = all_gather((self.count, self.sample is not None))
        most = max(count for count, _ in counts)
        missing, sample = most - self.count, self.sample
        if any(count < most and not has for count, has in counts):
            donor = next(rank for rank, (_, has) in enumerate(counts) if has)
            shared = broadcast(_moved(sample, None) if get_rank() == donor else None, src=donor)
            sample = sample if sample is not None else _moved(shared, self.device)
        with torch.no_grad():
            for _ in range(missing):
                self.model(sample)
        self.reset()
