"""Every metric Ignite 0.5.5 and distengine both have gives Ignite's number on random inputs
of several shapes (multi-output regression, segmentation-shaped classification, (N, 1)
columns), or both raise: never a silently different value. A metric of Ignite's that
distengine lacks is an ImportError, which is loud."""

import warnings

import pytest
import torch
from torch.nn import functional as F

ignite = pytest.importorskip("ignite")

import ignite.engine as ie  # noqa: E402
import ignite.metrics as im  # noqa: E402

import distengine.engine as de  # noqa: E402
import distengine.metrics as dm  # noqa: E402

_G = torch.Generator().manual_seed(7)


def _r(*shape):
    return torch.randn(*shape, generator=_G)


def _i(high, *shape):
    return torch.randint(0, high, shape, generator=_G)


_S = (4, 2, 3, 5)


def _batches(make, n=3):
    return [make() for _ in range(n)]


CASES = {
    "mse (N,)": ("MeanSquaredError", {}, _batches(lambda: (_r(8), _r(8)))),
    "mse (N, 3)": ("MeanSquaredError", {}, _batches(lambda: (_r(8, 3), _r(8, 3)))),
    "mse (N, 2, 3, 5)": ("MeanSquaredError", {}, _batches(lambda: (_r(*_S), _r(*_S)))),
    "mse (N, 1) vs (N,)": ("MeanSquaredError", {}, _batches(lambda: (_r(8, 1), _r(8)))),
    "mae (N, 3)": ("MeanAbsoluteError", {}, _batches(lambda: (_r(8, 3), _r(8, 3)))),
    "mae (N, 4, 2)": ("MeanAbsoluteError", {}, _batches(lambda: (_r(5, 4, 2), _r(5, 4, 2)))),
    "rmse (N, 3, 2)": ("RootMeanSquaredError", {}, _batches(lambda: (_r(8, 3, 2), _r(8, 3, 2)))),
    "top2 (N, C)": ("TopKCategoricalAccuracy", {"k": 2}, _batches(lambda: (_r(8, 5), _i(5, 8)))),
    "accuracy (N, C, H)": ("Accuracy", {}, _batches(lambda: (_r(8, 5, 3), _i(5, 8, 3)))),
    "accuracy binary (N, H)": ("Accuracy", {}, _batches(lambda: (_i(2, 8, 3), _i(2, 8, 3)))),
    "accuracy binary (N, 1) vs (N,)": ("Accuracy", {}, _batches(lambda: (_i(2, 8, 1), _i(2, 8)))),
    "accuracy multilabel (N, C, H)": (
        "Accuracy",
        {"is_multilabel": True},
        _batches(lambda: (_i(2, 8, 4, 3), _i(2, 8, 4, 3))),
    ),
    "accuracy float labels (N, C)": (
        "Accuracy",
        {},
        _batches(lambda: (_r(8, 5), _i(5, 8).float())),
    ),
    "precision float labels (N, C)": (
        "Precision",
        {"average": "macro"},
        _batches(lambda: (_r(8, 5), _i(5, 8).float())),
    ),
    "precision per class (N, C, H)": (
        "Precision",
        {"average": False},
        _batches(lambda: (_r(8, 5, 3), _i(5, 8, 3))),
    ),
    "precision binary (N, H, W)": (
        "Precision",
        {"average": False},
        _batches(lambda: (_i(2, 8, 3, 2), _i(2, 8, 3, 2))),
    ),
    "precision multilabel macro (N, C, H)": (
        "Precision",
        {"average": True, "is_multilabel": True},
        _batches(lambda: (_i(2, 8, 4, 3), _i(2, 8, 4, 3))),
    ),
    "recall multilabel samples (N, C, H)": (
        "Recall",
        {"average": "samples", "is_multilabel": True},
        _batches(lambda: (_i(2, 8, 4, 3), _i(2, 8, 4, 3))),
    ),
    "recall weighted (N, C, H)": (
        "Recall",
        {"average": "weighted"},
        _batches(lambda: (_r(8, 5, 3), _i(5, 8, 3))),
    ),
    "fbeta (N, C, H)": ("Fbeta", {"beta": 2.0}, _batches(lambda: (_r(8, 5, 3), _i(5, 8, 3)))),
    "fbeta per class (N, C)": (
        "Fbeta",
        {"beta": 0.5, "average": False},
        _batches(lambda: (_r(8, 4), _i(4, 8))),
    ),
    "loss mse (N, 3)": ("Loss", {"loss_fn": F.mse_loss}, _batches(lambda: (_r(8, 3), _r(8, 3)))),
    "loss cross entropy (N, C, H)": (
        "Loss",
        {"loss_fn": F.cross_entropy},
        _batches(lambda: (_r(8, 5, 3), _i(5, 8, 3))),
    ),
    "roc auc (N,)": ("ROC_AUC", {}, _batches(lambda: (_r(8), _i(2, 8)))),
    "roc auc (N, 1)": ("ROC_AUC", {}, _batches(lambda: (_r(8, 1), _i(2, 8, 1)))),
    "roc auc multilabel (N, 3)": ("ROC_AUC", {}, _batches(lambda: (_r(8, 3), _i(2, 8, 3)))),
    "average precision (N,)": ("AveragePrecision", {}, _batches(lambda: (_r(8), _i(2, 8)))),
    "average precision multilabel (N, 3)": (
        "AveragePrecision",
        {},
        _batches(lambda: (_r(8, 3), _i(2, 8, 3))),
    ),
    "roc curve (N,)": ("RocCurve", {}, _batches(lambda: (_r(8), _i(2, 8)))),
    "precision recall curve (N, 1)": (
        "PrecisionRecallCurve",
        {},
        _batches(lambda: (_r(8, 1), _i(2, 8, 1))),
    ),
    "cohen kappa (N,)": ("CohenKappa", {}, _batches(lambda: (_i(3, 8), _i(3, 8)))),
    "cohen kappa (N, 1) quadratic": (
        "CohenKappa",
        {"weights": "quadratic"},
        _batches(lambda: (_i(4, 8, 1), _i(4, 8, 1))),
    ),
    "cohen kappa num_classes linear": (
        "CohenKappa",
        {"weights": "linear", "num_classes": 4},
        _batches(lambda: (_i(4, 8), _i(4, 8))),
    ),
    "cohen kappa label beyond num_classes": (
        "CohenKappa",
        {"num_classes": 3},
        _batches(lambda: (_i(4, 8) + 0 * _i(1, 8) + 1, _i(3, 8))),
    ),
    "cosine similarity (N, 3, 2)": (
        "CosineSimilarity",
        {},
        _batches(lambda: (_r(8, 3, 2), _r(8, 3, 2))),
    ),
    "mean pairwise distance p=1": (
        "MeanPairwiseDistance",
        {"p": 1},
        _batches(lambda: (_r(8, 3), _r(8, 3))),
    ),
    "entropy (N, C, H)": ("Entropy", {}, _batches(lambda: (_r(8, 4, 3), _i(4, 8, 3)))),
    "mutual information (N, C)": ("MutualInformation", {}, _batches(lambda: (_r(8, 4), _i(4, 8)))),
    "kl divergence (N, C, H)": ("KLDivergence", {}, _batches(lambda: (_r(8, 4, 3), _r(8, 4, 3)))),
    "js divergence (N, C)": ("JSDivergence", {}, _batches(lambda: (_r(8, 4), _r(8, 4)))),
    "geometric average (N, 3)": ("GeometricAverage", {}, _batches(lambda: _r(8, 3).abs() + 0.1)),
    "geometric average numbers": ("GeometricAverage", {}, [1.5, 2.0, 4.0]),
    "variable accumulation": (
        "VariableAccumulation",
        {"op": lambda a, x: a + x.sum() if isinstance(x, torch.Tensor) else a + x},
        _batches(lambda: _r(8, 3)),
    ),
    "matthews (N,)": ("MatthewsCorrCoef", {}, _batches(lambda: (_i(3, 8), _i(3, 8)))),
    "matthews scores (N, C)": ("MatthewsCorrCoef", {}, _batches(lambda: (_r(8, 3), _i(3, 8)))),
    "confusion matrix (N, C, H)": (
        "ConfusionMatrix",
        {"num_classes": 5},
        _batches(lambda: (_r(8, 5, 3), _i(5, 8, 3))),
    ),
    "confusion matrix recall (N, C, H)": (
        "ConfusionMatrix",
        {"num_classes": 5, "average": "recall"},
        _batches(lambda: (_r(8, 5, 3), _i(5, 8, 3))),
    ),
    "hsic (N, 3, 2) median bandwidth": ("HSIC", {}, _batches(lambda: (_r(8, 3, 2), _r(8, 4)))),
    "hsic sigmas, a batch of 3 skipped": (
        "HSIC",
        {"sigma_x": 2.0, "sigma_y": 0.5},
        [(_r(8, 3), _r(8, 3)), (_r(3, 3), _r(3, 3)), (_r(6, 3), _r(6, 3))],
    ),
    "mmd (N, 3, 2)": (
        "MaximumMeanDiscrepancy",
        {"var": 2.0},
        _batches(lambda: (_r(8, 3, 2), _r(8, 3, 2))),
    ),
    "perplexity (N, C, L), ignored tokens": (
        "Perplexity",
        {"ignore_index": 0},
        _batches(lambda: (_r(4, 5, 6), _i(5, 4, 6))),
    ),
    "hit rate, rows without hits left out": (
        "HitRate",
        {"top_k": [1, 3]},
        _batches(lambda: (_r(6, 5), _i(2, 6, 5) * _i(2, 6, 1))),
    ),
    "hit rate, rows without hits count": (
        "HitRate",
        {"top_k": 2, "ignore_zero_hits": False},
        _batches(lambda: (_r(6, 5), _i(2, 6, 5) * _i(2, 6, 1))),
    ),
    "multilabel confusion matrix (N, C, H)": (
        "MultiLabelConfusionMatrix",
        {"num_classes": 4},
        _batches(lambda: (_i(2, 6, 4, 3), _i(2, 6, 4, 3))),
    ),
    "multilabel confusion matrix normalized": (
        "MultiLabelConfusionMatrix",
        {"num_classes": 3, "normalized": True},
        _batches(lambda: (_i(2, 6, 3), _i(2, 6, 3))),
    ),
    "character error rate": (
        "CharacterErrorRate",
        {},
        [(["helo", "cat"], ["hello", "bat"]), ("", "abc"), (["café wörld"], ["cafe world"])],
    ),
    "average (N, 3)": ("Average", {}, _batches(lambda: _r(8, 3))),
    "average (N,) is one example": ("Average", {}, _batches(lambda: _r(8))),
    "average 0-d": ("Average", {}, _batches(lambda: _r(()))),
    "average numbers": ("Average", {}, [1.5, 2.0, 4.0]),
    "epoch metric (N, 1) columns": (
        "EpochMetric",
        {"compute_fn": lambda p, t: (p * t).sum().item()},
        _batches(lambda: (_r(8, 1), _i(2, 8))),
    ),
    "epoch metric (N, C)": (
        "EpochMetric",
        {"compute_fn": lambda p, t: (p.argmax(1) == t.argmax(1)).double().mean().item()},
        _batches(lambda: (_r(8, 3), _i(2, 8, 3))),
    ),
}
# built from a ConfusionMatrix (a Metric argument): below, and in test_against_ignite.py
FROM_CONFUSION_MATRIX = {"IoU", "mIoU", "JaccardIndex", "DiceCoefficient"}
# built from other metrics (checked on an engine below) or the base class
COMPOSED = {"MetricsLambda", "RunningAverage", "Metric", "ClassificationReport"}


def _computed(module, name, kwargs, batches):
    metric = getattr(module, name)(**kwargs)
    try:
        for batch in batches:
            metric.update(batch)
        return metric.compute()
    except Exception as error:  # noqa: BLE001 - compared below: both raise, or neither
        return error


def _assert_same(mine, theirs, case, same_type=True):
    if isinstance(theirs, Exception) or isinstance(mine, Exception):
        assert isinstance(theirs, Exception) and isinstance(mine, Exception), (case, mine, theirs)
        return
    if isinstance(theirs, tuple):  # curves: (x, y, thresholds)
        assert isinstance(mine, tuple) and len(mine) == len(theirs), (case, mine)
        for a, b in zip(mine, theirs):
            _assert_same(a, b, case, same_type)
        return
    if same_type:
        assert isinstance(mine, torch.Tensor) == isinstance(theirs, torch.Tensor), (case, mine)
    torch.testing.assert_close(
        torch.as_tensor(mine).double(), torch.as_tensor(theirs).double(), rtol=1e-5, atol=1e-8
    )


@pytest.mark.parametrize("case", list(CASES))
def test_metric_gives_ignites_number(case):
    name, kwargs, batches = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ignite warns about dtypes in binary cases
        theirs = _computed(im, name, kwargs, batches)
    mine = _computed(dm, name, kwargs, batches)
    _assert_same(mine, theirs, case)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("IoU", {}),
        ("mIoU", {"ignore_index": 1}),
        ("JaccardIndex", {}),
        ("DiceCoefficient", {}),
        ("cmAccuracy", {}),
        ("cmPrecision", {}),
        ("cmRecall", {"average": False}),
    ],
)
def test_confusion_matrix_functions_give_ignites_values_and_types(name, kwargs):
    import ignite.metrics.confusion_matrix as icm

    batches = _batches(lambda: (_r(8, 4, 3), _i(4, 8, 3)))
    values = []
    for module, functions in ((dm, dm), (im, icm)):
        cm = module.ConfusionMatrix(4)
        made = getattr(functions, name)(cm, **kwargs)  # before the updates: Ignite resets cm
        for batch in batches:
            cm.update(batch)
        values.append(made.compute())
    _assert_same(*values, name)


@pytest.mark.parametrize(
    "kwargs, make",
    [
        ({"output_dict": True, "labels": ["a", "b", "c", "d"]}, lambda: (_r(8, 4, 3), _i(4, 8, 3))),
        ({"beta": 2, "is_multilabel": True}, lambda: (_i(2, 8, 3), _i(2, 8, 3))),
    ],
)
def test_classification_report_gives_ignites_report(kwargs, make):
    import json

    batches, reports = _batches(make), []
    for engines, metrics in ((de, dm), (ie, im)):
        engine = engines.Engine(lambda e, batch: batch)
        metrics.ClassificationReport(**kwargs).attach(engine, "cr")
        reports.append(engine.run(batches).metrics["cr"])
    mine, theirs = (r if isinstance(r, dict) else json.loads(r) for r in reports)
    assert list(mine) == list(theirs)
    for key, row in theirs.items():
        assert list(mine[key]) == list(row)
        _assert_same(list(mine[key].values()), list(row.values()), key)


@pytest.mark.parametrize("name", ["SilhouetteScore", "CalinskiHarabaszScore", "DaviesBouldinScore"])
def test_clustering_scores_give_ignites_values(name):
    batches = [(_r(8, 3) + 2 * labels[:, None], labels) for labels in _batches(lambda: _i(3, 8))]
    scores = []
    for module in (dm, im):
        metric = getattr(module.clustering, name)()
        for batch in batches:
            metric.update(batch)
        scores.append(metric.compute())
    _assert_same(*scores, name)


def test_every_metric_both_have_is_compared():
    shared = set(im.__all__) & set(dm.__all__)
    compared = {name for name, _, _ in CASES.values()} | FROM_CONFUSION_MATRIX | COMPOSED
    compared |= {"GpuInfo"}  # needs a GPU; without one both raise (test_ignite_names.py)
    compared |= {"Frequency"}  # a rate over wall time: tests/metrics/test_ignite_names.py
    assert shared - compared == set(), "a metric both libraries have is not compared with Ignite"


def test_a_metric_distengine_lacks_fails_loudly():
    missing = sorted(set(im.__all__) - set(dm.__all__) - {"clustering", "fairness", "regression"})
    assert missing, "Ignite has metrics distengine does not"
    for name in missing:
        with pytest.raises(ImportError):
            exec(f"from distengine.metrics import {name}", {})


def _log(engines, metrics, usages):
    g = torch.Generator().manual_seed(3)
    data = [
        (
            torch.randn(6, 4, generator=g),
            torch.randint(0, 4, (6,), generator=g),
            torch.rand((), generator=g),
        )
        for _ in range(7)
    ]
    engine = engines.Engine(lambda e, batch: batch)
    pair = lambda out: out[:2]  # noqa: E731
    made = {
        "running_loss": metrics.RunningAverage(output_transform=lambda out: out[2]),
        "running_float": metrics.RunningAverage(output_transform=lambda o: o[2].item(), alpha=0.5),
        "running_acc": metrics.RunningAverage(metrics.Accuracy(pair)),
        "running_acc_epoch": metrics.RunningAverage(metrics.Accuracy(pair), epoch_bound=True),
        "lambda": metrics.MetricsLambda(
            lambda a, b: a * 2 + b, metrics.Accuracy(pair), metrics.Loss(F.cross_entropy, pair)
        ),
        "arithmetic": metrics.Precision(pair, average=False).mean() * 3,
    }
    for name, metric in made.items():
        metric.attach(engine, name)
    per_epoch = usages.SingleEpochRunningBatchWise()
    metrics.RunningAverage(output_transform=lambda out: out[2]).attach(
        engine, "epoch_loss", usage=per_epoch
    )
    metrics.RunningAverage(metrics.Accuracy(pair)).attach(engine, "epoch_acc", usage=per_epoch)
    log = []
    for event in (engines.Events.ITERATION_COMPLETED, engines.Events.EPOCH_COMPLETED):
        engine.add_event_handler(
            event, lambda e, ev=event: log.append((ev.name, dict(e.state.metrics)))
        )
    engine.run(data, max_epochs=2)
    return log


def test_composed_metrics_publish_ignites_numbers_on_an_engine():
    """Values alike at every event. Types alike at the epoch's end, except a running average
    of tensor outputs: it stays a 0-d tensor (no host sync per batch: a listed difference)."""
    import ignite.metrics.metric as ignite_usages

    mine, theirs = _log(de, dm, dm), _log(ie, im, ignite_usages)
    assert [event for event, _ in mine] == [event for event, _ in theirs]
    for step, ((event, a), (_, b)) in enumerate(zip(mine, theirs)):
        assert set(a) == set(b), step
        for name in b:
            same_type = event == "EPOCH_COMPLETED" and name not in ("running_loss", "epoch_loss")
            _assert_same(a[name], b[name], (step, name), same_type)


def test_running_average_usages_distengine_lacks_raise():
    engine = de.Engine(lambda e, batch: batch)
    for usage in (dm.RunningEpochWise(), "epoch_wise", dm.BatchWise()):
        with pytest.raises(ValueError, match="RunningAverage takes usage=RunningBatchWise"):
            dm.RunningAverage(output_transform=lambda out: out).attach(engine, "avg", usage=usage)


REGRESSION = [
    ("CanberraMetric", {}),
    ("FractionalAbsoluteError", {}),
    ("FractionalBias", {}),
    ("GeometricMeanAbsoluteError", {}),
    ("GeometricMeanRelativeAbsoluteError", {}),
    ("KendallRankCorrelation", {}),
    ("KendallRankCorrelation", {"variant": "c"}),
    ("ManhattanDistance", {}),
    ("MaximumAbsoluteError", {}),
    ("MeanAbsoluteRelativeError", {}),
    ("MeanError", {}),
    ("MeanNormalizedBias", {}),
    ("MedianAbsoluteError", {}),
    ("MedianAbsolutePercentageError", {}),
    ("MedianRelativeAbsoluteError", {}),
    ("PearsonCorrelation", {}),
    ("R2Score", {}),
    ("SpearmanRankCorrelation", {}),
    ("WaveHedgesDistance", {}),
]
REGRESSION_DATA = {
    "(N,)": _batches(lambda: (_r(9).abs() + 0.1, _r(9).abs() + 0.1)),
    "(N, 1) of another sign": _batches(lambda: (_r(8, 1), _r(8, 1))),
    "a y of 0": [(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]))],
    "(N, 3)": _batches(lambda: (_r(8, 3), _r(8, 3))),
    "integers": _batches(lambda: (_i(5, 8), _i(5, 8))),
}


@pytest.mark.parametrize("data", list(REGRESSION_DATA))
@pytest.mark.parametrize("name, kwargs", REGRESSION, ids=lambda v: str(v) if v else "")
def test_regression_metrics_give_ignites_numbers(name, kwargs, data):
    import ignite.metrics.regression as ir

    import distengine.metrics.regression as dr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn where compute_fn fails on a first batch
        theirs = _computed(ir, name, kwargs, REGRESSION_DATA[data])
        mine = _computed(dr, name, kwargs, REGRESSION_DATA[data])
    _assert_same(mine, theirs, (name, data))


def test_every_regression_metric_of_ignite_is_compared():
    import ignite.metrics.regression as ir

    compared = {name for name, _ in REGRESSION} | {
        "MeanAbsoluteError",
        "MeanSquaredError",
        "RootMeanSquaredError",
    }
    public = {name for name in dir(ir) if name[0].isupper()}
    assert len(public) >= 18 and public - compared == set()
