"""The hit rate at k of a recommender's scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import NotComputableError

__all__ = ["HitRate"]


class HitRate(Metric):
    """For each ``k`` in ``top_k``: the share of rows (users) whose ``k`` highest-scored items
    in ``y_pred`` include one that is relevant in ``y`` (``y > 0``). ``y_pred`` and ``y`` have
    the same shape ``(N, items)``; rows without any relevant item are left out
    (``ignore_zero_hits=True``) or count as misses.

    Counts stay on the device and reduce across ranks with the engine's other metrics.

    Example::

        HitRate(top_k=[1, 5]).attach(evaluator, "hitrate")
        evaluator.run([(scores, relevance)])
        evaluator.state.metrics["hitrate"]   # [hit rate at 1, hit rate at 5]
    """

    def __init__(
        self,
        top_k: list[int] | int = 1,
        ignore_zero_hits: bool = True,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        if not isinstance(top_k, (int, list)):
            raise ValueError(f"top_k must be either int or a list[int], got {top_k!r}")
        top_k = [top_k] if isinstance(top_k, int) else top_k
        if len(top_k) == 0:
            raise ValueError("top_k must have at least one positive value")
        if any(not isinstance(k, int) or k <= 0 for k in top_k):
            raise ValueError(f"top_k must be list of positive integers only, got {top_k}")
        super().__init__(output_transform, device, skip_unrolling)
        self.top_k = sorted(top_k)
        self.ignore_zero_hits = ignore_zero_hits
        self.add_state("_hits_per_k", torch.zeros(len(self.top_k), dtype=torch.int64))
        self.add_state("_num_examples", torch.tensor(0))

    def update(self, output: Any) -> None:
        if isinstance(output, (tuple, list)) and len(output) != 2:
            raise ValueError(
                f"output should be in format `(y_pred,y)` but got tuple of {len(output)} tensors."
            )
        y_pred, y = pair(output, "HitRate")
        if y_pred.shape != y.shape:
            raise ValueError(
                f"y_pred and y must be in the same shape, got {y_pred.shape} != {y.shape}."
            )
        self._follow(y_pred)
        relevant = y > 0
        _, best = torch.topk(y_pred, k=self.top_k[-1], dim=-1)
        found = torch.gather(relevant, dim=-1, index=best)  # rows x max k
        hits = torch.stack([found[:, :k].any(dim=-1) for k in self.top_k])  # k x rows
        if self.ignore_zero_hits:  # masked, not indexed: no host sync
            counted = relevant.any(dim=-1)
            self._hits_per_k += (hits & counted).sum(dim=-1).to(self._hits_per_k.device)
            self._num_examples += counted.sum().to(self._num_examples.device)
        else:
            self._hits_per_k += hits.sum(dim=-1).to(self._hits_per_k.device)
            self.tally("_num_examples", y.shape[0])

    def compute(self) -> list[float]:
        if int(self._num_examples) == 0:
            raise NotComputableError("HitRate must have at least one example.")
        return (self._hits_per_k.double() / self._num_examples).tolist()
