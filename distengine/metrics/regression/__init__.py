"""Regression metrics, with PyTorch-Ignite's names and numbers (``ignite.metrics.regression``).

Example::

    from distengine.metrics.regression import R2Score, PearsonCorrelation

    R2Score().attach(evaluator, "r2")
"""

from distengine.metrics.regression.gathered import (
    GeometricMeanRelativeAbsoluteError,
    KendallRankCorrelation,
    MedianAbsoluteError,
    MedianAbsolutePercentageError,
    MedianRelativeAbsoluteError,
    SpearmanRankCorrelation,
)
from distengine.metrics.regression.pointwise import (
    MeanAbsoluteError,
    MeanSquaredError,
    RootMeanSquaredError,
)
from distengine.metrics.regression.sums import (
    CanberraMetric,
    FractionalAbsoluteError,
    FractionalBias,
    GeometricMeanAbsoluteError,
    ManhattanDistance,
    MaximumAbsoluteError,
    MeanAbsoluteRelativeError,
    MeanError,
    MeanNormalizedBias,
    PearsonCorrelation,
    R2Score,
    WaveHedgesDistance,
)

__all__ = [
    "CanberraMetric",
    "FractionalAbsoluteError",
    "FractionalBias",
    "GeometricMeanAbsoluteError",
    "GeometricMeanRelativeAbsoluteError",
    "KendallRankCorrelation",
    "ManhattanDistance",
    "MaximumAbsoluteError",
    "MeanAbsoluteError",
    "MeanAbsoluteRelativeError",
    "MeanError",
    "MeanNormalizedBias",
    "MeanSquaredError",
    "MedianAbsoluteError",
    "MedianAbsolutePercentageError",
    "MedianRelativeAbsoluteError",
    "PearsonCorrelation",
    "R2Score",
    "RootMeanSquaredError",
    "SpearmanRankCorrelation",
    "WaveHedgesDistance",
]
