"""Metrics that accumulate on the device and reduce across ranks in one collective.

Example::

    from distengine.metrics import Accuracy, Loss

    Accuracy().attach(evaluator, "accuracy")
    Loss(nn.CrossEntropyLoss()).attach(evaluator, "loss")
    evaluator.run(val_loader)
    evaluator.state.metrics     # {"accuracy": 0.97, "loss": 0.11}, the same on every rank
"""

from distengine.metrics import clustering  # noqa: F401 - ignite.metrics.clustering's place
from distengine.metrics.accumulation import GeometricAverage, VariableAccumulation
from distengine.metrics.accuracy import Accuracy
from distengine.metrics.average import Average
from distengine.metrics.average_precision import AveragePrecision
from distengine.metrics.classification_report import ClassificationReport
from distengine.metrics.cohen_kappa import CohenKappa
from distengine.metrics.confusion_matrix import (
    ConfusionMatrix,
    DiceCoefficient,
    IoU,
    JaccardIndex,
    cmAccuracy,
    cmPrecision,
    cmRecall,
    mIoU,
)
from distengine.metrics.divergences import Entropy, JSDivergence, KLDivergence, MutualInformation
from distengine.metrics.epoch_metric import EpochMetric
from distengine.metrics.frequency import Frequency
from distengine.metrics.gpu_info import GpuInfo
from distengine.metrics.hsic import HSIC
from distengine.metrics.loss import Loss
from distengine.metrics.matthews_corrcoef import MatthewsCorrCoef
from distengine.metrics.maximum_mean_discrepancy import MaximumMeanDiscrepancy
from distengine.metrics.metric import Metric
from distengine.metrics.metrics_lambda import MetricsLambda
from distengine.metrics.multilabel_confusion_matrix import MultiLabelConfusionMatrix
from distengine.metrics.nlp import CharacterErrorRate, Perplexity
from distengine.metrics.precision_recall import Fbeta, FbetaScore, Precision, Recall
from distengine.metrics.precision_recall_curve import PrecisionRecallCurve
from distengine.metrics.rec_sys import HitRate
from distengine.metrics.regression import (
    MeanAbsoluteError,
    MeanSquaredError,
    RootMeanSquaredError,
)
from distengine.metrics.roc_auc import ROC_AUC, RocCurve
from distengine.metrics.running_average import RunningAverage
from distengine.metrics.similarity import CosineSimilarity, MeanPairwiseDistance
from distengine.metrics.state import NotComputableError
from distengine.metrics.top_k import TopKCategoricalAccuracy
from distengine.metrics.usage import (
    BatchFiltered,
    BatchWise,
    EpochWise,
    MetricUsage,
    RunningBatchWise,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
)

__all__ = [
    "GpuInfo",
    "Accuracy",
    "Average",
    "AveragePrecision",
    "BatchFiltered",
    "BatchWise",
    "CharacterErrorRate",
    "ClassificationReport",
    "CohenKappa",
    "ConfusionMatrix",
    "CosineSimilarity",
    "DiceCoefficient",
    "Entropy",
    "EpochMetric",
    "EpochWise",
    "Fbeta",
    "FbetaScore",
    "Frequency",
    "GeometricAverage",
    "HSIC",
    "HitRate",
    "IoU",
    "JSDivergence",
    "JaccardIndex",
    "KLDivergence",
    "Loss",
    "MatthewsCorrCoef",
    "MaximumMeanDiscrepancy",
    "MeanAbsoluteError",
    "MeanPairwiseDistance",
    "MeanSquaredError",
    "Metric",
    "MetricUsage",
    "MetricsLambda",
    "MultiLabelConfusionMatrix",
    "MutualInformation",
    "NotComputableError",
    "Perplexity",
    "Precision",
    "PrecisionRecallCurve",
    "ROC_AUC",
    "Recall",
    "RocCurve",
    "RootMeanSquaredError",
    "RunningAverage",
    "RunningBatchWise",
    "RunningEpochWise",
    "SingleEpochRunningBatchWise",
    "TopKCategoricalAccuracy",
    "VariableAccumulation",
    "cmAccuracy",
    "cmPrecision",
    "cmRecall",
    "mIoU",
]
