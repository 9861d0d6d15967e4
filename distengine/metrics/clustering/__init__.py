"""Scores of a clustering: ``(features, labels)`` of every rank, as PyTorch-Ignite's
``ignite.metrics.clustering``.

Example::

    from distengine.metrics.clustering import SilhouetteScore

    SilhouetteScore().attach(evaluator, "silhouette")
"""

from distengine.metrics.clustering.scores import (
    CalinskiHarabaszScore,
    DaviesBouldinScore,
    SilhouetteScore,
)

__all__ = ["CalinskiHarabaszScore", "DaviesBouldinScore", "SilhouetteScore"]
