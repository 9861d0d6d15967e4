"""A user's function over all predictions and targets of an epoch, from every rank."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import NotComputableError, no_examples

__all__ = ["CurveMetric", "EpochMetric", "EpochMetricWarning", "NotComputableError"]


class EpochMetricWarning(UserWarning):
    """Warned when ``compute_fn`` fails on the first batch (``check_compute_fn=True``)."""


class EpochMetric(Metric):
    """``compute_fn(y_pred, y)`` on the concatenation of every batch of every rank.

    ``y_pred`` and ``y`` are (N,) or (N, C) tensors; (N, 1) ones are
    squeezed to (N,), as in PyTorch-Ignite. Ranks may hold
    different numbers of examples, none included; every rank gets the same
    value. ``check_compute_fn=True`` (the default, as in PyTorch-Ignite) runs
    ``compute_fn`` on the metric's first batch and warns
    (:class:`EpochMetricWarning`) if it raises: once per metric, where Ignite
    checks every epoch's first batch (``compute_fn`` usually reads values on
    the host: a sync in an update). Batches of another dtype than the first
    raise ValueError.

    Example::

        def spearman(y_pred, y): ...
        EpochMetric(spearman).attach(evaluator, "spearman")
    """

    def __init__(
        self,
        compute_fn: Callable[[torch.Tensor, torch.Tensor], Any],
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = True,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        if not callable(compute_fn):
            raise TypeError(f"Argument compute_fn should be callable, got {compute_fn!r}")
        super().__init__(output_transform, device, skip_unrolling)
        self.compute_fn = compute_fn
        self._check_compute_fn = check_compute_fn
        self.add_state("predictions", reduce="cat")
        self.add_state("targets", reduce="cat")

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, type(self).__name__)
        for what, t in (("Predictions", y_pred), ("Targets", y)):
            if t.dim() not in (1, 2):
                raise ValueError(  # Ignite's words
                    f"{what} should be of shape (batch_size, n_targets) or (batch_size, ): "
                    f"{type(self).__name__} got {tuple(t.shape)}"
                )
        if y_pred.shape[0] != y.shape[0]:
            raise ValueError(f"y_pred has {y_pred.shape[0]} rows, y has {y.shape[0]}")
        y_pred = y_pred.squeeze(-1) if y_pred.dim() == 2 and y_pred.shape[1] == 1 else y_pred
        y = y.squeeze(-1) if y.dim() == 2 and y.shape[1] == 1 else y
        for name, kept, t in (("y_pred", self.predictions, y_pred), ("y", self.targets, y)):
            if kept and kept[-1].dtype != t.dtype:
                stored = "predictions" if name == "y_pred" else "targets"
                raise ValueError(  # Ignite's words
                    f"Incoherent types between input {name} and stored {stored}: "
                    f"{kept[-1].dtype} vs {t.dtype} ({type(self).__name__}: give every batch "
                    "the same dtype)"
                )
        self.predictions.append(y_pred.clone())
        self.targets.append(y.clone())
        if self._check_compute_fn:
            self._check_compute_fn = False
            try:
                self.compute_fn(self.predictions[0], self.targets[0])
            except Exception as error:  # noqa: BLE001 - any failure is worth a warning
                warnings.warn(  # Ignite's words, and ours
                    f"Probably, there can be a problem with `compute_fn`:\n {error}. "
                    f"({type(self).__name__}: compute_fn failed on the first batch)",
                    EpochMetricWarning,
                    stacklevel=2,
                )

    def compute(self) -> Any:
        if self.predictions is None or len(self.predictions) == 0:
            raise no_examples(type(self).__name__)
        return self.compute_fn(self.predictions, self.targets)


class CurveMetric(EpochMetric):
    """An :class:`EpochMetric` whose ``compute_fn`` returns arrays (a curve): ``compute``
    gives them as float64 tensors on the predictions' device, as Ignite's curves do."""

    def compute(self) -> tuple[torch.Tensor, ...]:
        arrays = super().compute()  # on every rank's examples
        device = self.predictions.device  # concatenated by now
        return tuple(
            torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, device=device)
            for a in arrays
        )


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as scikit-learn takes it."""
    return t.detach().cpu().numpy()
