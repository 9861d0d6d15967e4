"""The silhouette, Calinski-Harabasz and Davies-Bouldin scores of a clustering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.clustering._base import ClusteringMetric

__all__ = ["CalinskiHarabaszScore", "DaviesBouldinScore", "SilhouetteScore"]


class SilhouetteScore(ClusteringMetric):
    """The mean silhouette coefficient (-1 to 1; higher: better separated clusters), by
    ``sklearn.metrics.silhouette_score`` with ``silhouette_kwargs``, of every rank's rows.

    Example::

        SilhouetteScore().attach(evaluator, "silhouette")
        evaluator.run([{"features": x, "labels": cluster_ids}])
    """

    sklearn_name = "silhouette_score"

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = True,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
        silhouette_kwargs: dict[str, Any] | None = None,
    ) -> None:
        kwargs = dict(silhouette_kwargs or {})
        super().__init__(output_transform, check_compute_fn, device, skip_unrolling, **kwargs)


class CalinskiHarabaszScore(ClusteringMetric):
    """The Calinski-Harabasz index (higher: denser, better separated clusters), by
    ``sklearn.metrics.calinski_harabasz_score``, of every rank's rows.

    Example::

        CalinskiHarabaszScore().attach(evaluator, "ch")
    """

    sklearn_name = "calinski_harabasz_score"


class DaviesBouldinScore(ClusteringMetric):
    """The Davies-Bouldin index (lower: better separated clusters; 0 at best), by
    ``sklearn.metrics.davies_bouldin_score``, of every rank's rows.

    Example::

        DaviesBouldinScore().attach(evaluator, "db")
    """

    sklearn_name = "davies_bouldin_score"
