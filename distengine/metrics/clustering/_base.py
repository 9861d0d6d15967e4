"""What the clustering metrics share: ``(features, labels)`` of every rank, scored by sklearn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.epoch_metric import EpochMetric, as_numpy
from distengine.metrics.inputs import pair


def _sklearn(name: str) -> Callable[..., float]:
    try:
        import sklearn.metrics
    except ImportError as error:
        raise ModuleNotFoundError("This module requires scikit-learn to be installed.") from error
    return getattr(sklearn.metrics, name)


class ClusteringMetric(EpochMetric):
    """A score of ``features`` (B, D) clustered by ``labels`` (B,), over every batch of every
    rank (their rows are gathered at ``compute``, as :class:`EpochMetric` does). Fewer than 2
    clusters, or as many clusters as samples, give ``nan`` (the score is undefined).

    The engine's output is ``(features, labels)`` or a mapping with those keys.
    """

    required_output_keys = ("features", "labels")
    #: The scikit-learn function (``sklearn.metrics.<name>``).
    sklearn_name = ""

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = True,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
        **sklearn_kwargs: Any,
    ) -> None:
        self._score = _sklearn(self.sklearn_name)
        self._sklearn_kwargs = sklearn_kwargs
        super().__init__(self._scored, output_transform, check_compute_fn, device, skip_unrolling)

    def _scored(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        clusters, samples = len(torch.unique(labels)), labels.shape[0]
        if clusters < 2 or clusters >= samples:
            return float("nan")
        if features.dim() == 1:  # (B, 1) features are kept as (B,)
            features = features.unsqueeze(1)
        return float(self._score(as_numpy(features), as_numpy(labels), **self._sklearn_kwargs))

    def update(self, output: Any) -> None:
        features, labels = pair(output, type(self).__name__)
        if features.dim() != 2:
            raise ValueError(
                "Features should be of shape (batch_size, n_targets): "
                f"{type(self).__name__} got {tuple(features.shape)}"
            )
        if labels.dim() != 1:
            raise ValueError(
                f"Labels should be of shape (batch_size, ): {type(self).__name__} got "
                f"{tuple(labels.shape)}"
            )
        for what, kept, t in (
            ("features", self.predictions, features),
            ("labels", self.targets, labels),
        ):
            if kept and kept[-1].dtype != t.dtype:
                raise ValueError(
                    f"Incoherent types between input {what} and stored {what}: "
                    f"{kept[-1].dtype} vs {t.dtype} ({type(self).__name__}: give every batch "
                    "the same dtype)"
                )
        super().update((features, labels))
