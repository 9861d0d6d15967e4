"""Metric behaviour PyTorch-Ignite documents, checked against scikit-learn or a formula
(no Ignite needed): averages, degenerate batches, ignore labels, state, arithmetic."""

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from distengine.metrics import (
    Accuracy,
    ConfusionMatrix,
    DiceCoefficient,
    EpochMetric,
    Fbeta,
    IoU,
    MetricsLambda,
    NotComputableError,
    Precision,
    Recall,
    mIoU,
)

SK = {Precision: sk.precision_score, Recall: sk.recall_score}


def feed(metric, *batches):
    for batch in batches:
        metric.update(batch)
    return metric


def value(metric, *batches):
    result = feed(metric, *batches).compute()
    return result.double().numpy() if isinstance(result, torch.Tensor) else result


# ------------------------------------------------------------------ binary averages
BINARY = {
    "mixed": ([1, 0, 1, 0, 1, 1], [1, 0, 1, 1, 0, 1]),
    "no positives": ([0, 0, 0, 0], [0, 0, 0, 0]),
    "positive predictions only": ([1, 1, 1], [0, 0, 0]),
    "positive labels only": ([0, 0, 0], [1, 1, 1]),
}


@pytest.mark.parametrize("case", list(BINARY))
@pytest.mark.parametrize("average", [False, None, True, "macro", "micro", "weighted"])
@pytest.mark.parametrize("cls", [Precision, Recall])
def test_binary_averages_match_scikit_learn_over_both_classes(cls, average, case):
    pred, true = (torch.tensor(v) for v in BINARY[case])
    sk_average = {False: "binary", True: "macro"}.get(average, average)
    want = SK[cls](true, pred, average=sk_average, labels=[0, 1], zero_division=0)
    got = value(cls(average=average), (pred, true))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    if average is False:  # Ignite: the positive class, as a 0-d tensor from compute()
        assert isinstance(feed(cls(), (pred, true)).compute(), torch.Tensor)


def test_binary_batch_without_positives_is_zero_not_an_error():
    batch = (torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    assert value(Precision(), batch) == 0.0
    assert value(Recall(), batch) == 0.0
    assert value(Fbeta(1.0), batch) == 0.0
    with pytest.raises(NotComputableError):
        Precision().compute()  # no data at all is still an error


@pytest.mark.parametrize("average", [True, False])
def test_fbeta_true_is_ignites_mean_of_per_class_scores(average):
    # binary: Precision(average=False) holds the positive class only, so does F-beta
    pred, true = torch.tensor([1, 0, 1, 0, 1, 1]), torch.tensor([1, 0, 1, 1, 0, 1])
    want = sk.fbeta_score(true, pred, beta=2.0)
    np.testing.assert_allclose(value(Fbeta(2.0, average=average), (pred, true)), want)
    logits, labels = (
        torch.randn(30, 3, generator=torch.Generator().manual_seed(1)),
        torch.arange(30) % 3,
    )
    per_class = sk.fbeta_score(labels, logits.argmax(1), beta=2.0, average=None)
    got = value(Fbeta(2.0, average=average), (logits, labels))
    np.testing.assert_allclose(got, per_class.mean() if average else per_class, rtol=1e-12)


def test_fbeta_arguments_as_in_ignite():
    logits, labels = torch.randn(20, 3), torch.arange(20) % 3
    assert value(Fbeta(1.0, output_transform=None), (logits, labels)) == pytest.approx(
        sk.f1_score(labels, logits.argmax(1), average="macro")
    )
    p = Precision(average=False)
    with pytest.raises(ValueError, match="output_transform and device must be None"):
        Fbeta(1.0, precision=p, output_transform=lambda out: out)
    with pytest.raises(ValueError, match="average=False or None"):
        Fbeta(1.0, precision=Precision(average="macro"))
    from_precision_only = Fbeta(1.0, precision=p)  # Ignite makes the matching Recall
    want = sk.f1_score(labels, logits.argmax(1), average="macro")
    assert value(from_precision_only, (logits, labels)) == pytest.approx(want)


@pytest.mark.parametrize("average", ["micro", "macro", "weighted", "samples", None])
def test_multilabel_averages_match_scikit_learn(average):
    g = torch.Generator().manual_seed(3)
    pred, true = (
        torch.randint(0, 2, (40, 4), generator=g),
        torch.randint(0, 2, (40, 4), generator=g),
    )
    for cls in (Precision, Recall):
        want = SK[cls](true, pred, average=average, zero_division=0)
        got = value(
            cls(average=average, is_multilabel=True), (pred[:15], true[:15]), (pred[15:], true[15:])
        )
        np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="samples.*multilabel"):
        Precision(average="samples").update((pred[:, 0], true[:, 0]))


# ------------------------------------------------------------------ checks
@pytest.mark.parametrize("make", [Precision, Recall, lambda: Fbeta(1.0)], ids=["P", "R", "F"])
def test_number_of_classes_is_checked_between_updates(make):
    five = (torch.randn(6, 5), torch.arange(6) % 5)
    four = (torch.randn(6, 4), torch.arange(6) % 4)
    metric = feed(make(), five)
    with pytest.raises(ValueError, match="classes changed from 5 to 4"):
        metric.update(four)
    metric.reset()
    metric.update(four)  # a reset starts afresh, as in Ignite
    with pytest.raises(ValueError, match="num_classes is 5"):
        Precision(num_classes=5).update(four)
    labels3, labels2 = torch.ones(4, 3, dtype=torch.long), torch.ones(4, 2, dtype=torch.long)
    metric = feed(Recall(is_multilabel=True), (labels3, labels3))
    with pytest.raises(ValueError, match="classes changed from 3 to 2"):
        metric.update((labels2, labels2))


@pytest.mark.parametrize("ignore", [-100, 255])
def test_ignore_labels_are_skipped_like_confusion_matrix_does(ignore):
    g = torch.Generator().manual_seed(ignore % 7)
    logits, labels = torch.randn(50, 3, generator=g), torch.randint(0, 3, (50,), generator=g)
    labels[::4] = ignore
    keep = labels != ignore
    pred = logits.argmax(1)
    for cls in (Precision, Recall):
        want = SK[cls](labels[keep], pred[keep], average=None, labels=[0, 1, 2], zero_division=0)
        np.testing.assert_allclose(value(cls(average=None), (logits, labels)), want)
    cm = value(ConfusionMatrix(3), (logits, labels))
    np.testing.assert_array_equal(cm, sk.confusion_matrix(labels[keep], pred[keep]))
    bin_pred, bin_true = (pred[:20] > 0).long(), (pred[20:40] > 1).long()
    bin_true[::3] = ignore
    kept = bin_true != ignore
    want = sk.precision_score(bin_true[kept], bin_pred[kept], average="macro")
    assert value(Precision(average="macro"), (bin_pred, bin_true)) == pytest.approx(want)


@pytest.mark.parametrize(
    "metric, batch",
    [
        (Precision(), (torch.tensor([0.2, 0.9]), torch.tensor([0, 1]))),
        (Recall(average="macro"), (torch.tensor([0, 2]), torch.tensor([0, 1]))),
        (Accuracy(), (torch.tensor([0.7, 1.0]), torch.tensor([0, 1]))),
        (Accuracy(is_multilabel=True), (torch.ones(2, 2), torch.full((2, 2), 3))),
        (Fbeta(1.0, is_multilabel=True), (torch.ones(2, 2) / 2, torch.ones(2, 2))),
    ],
    ids=["P-scores", "R-two", "Acc-scores", "Acc-multilabel", "F-multilabel"],
)
def test_binary_inputs_other_than_0_1_raise_at_compute(metric, batch):
    metric.update(batch)  # no sync in update: the check happens at compute
    with pytest.raises(ValueError, match="must hold 0s and 1s.*threshold"):
        metric.compute()


def test_binary_y_pred_of_shape_n_1_is_binary_as_in_ignite():
    pred, true = torch.tensor([[1], [0], [1]]), torch.tensor([1, 1, 1])
    assert value(Accuracy(), (pred, true)) == pytest.approx(2 / 3)
    assert value(Recall(), (pred, true)) == pytest.approx(2 / 3)


# ------------------------------------------------------------------ MetricsLambda
def _f1_parts(num_classes):
    p = Precision(average=False, num_classes=num_classes)
    r = Recall(average=False, num_classes=num_classes)
    return (2 * p * r / (p + r + 1e-20)).mean().item()


@pytest.mark.parametrize("num_classes", [3, None], ids=["fixed", "lazy"])
def test_metrics_lambda_state_survives_save_reset_load(num_classes, tmp_path):
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randn(10, 3, generator=g), torch.randint(0, 3, (10,), generator=g))] * 2
    f1 = feed(_f1_parts(num_classes), *batches)
    want = f1.compute()
    torch.save(f1.state_dict(), tmp_path / "f1.pt")
    f1.reset()
    with pytest.raises(NotComputableError):
        f1.compute()
    f1.load_state_dict(torch.load(tmp_path / "f1.pt", weights_only=True))
    assert f1.compute() == want
    fresh = _f1_parts(num_classes)
    fresh.load_state_dict(f1.state_dict())
    assert fresh.compute() == want
    weighted = MetricsLambda(lambda a, scale: a * scale, Accuracy(), scale=Accuracy())
    with pytest.raises(
        ValueError, match=r"expected 'args' of length 1 and 'kwargs' with keys \['scale'\]"
    ):
        weighted.load_state_dict({"args": []})


def test_arithmetic_passes_on_only_tensor_methods():
    p, r = Precision(average=False), Recall(average=False)
    f1 = 2 * p * r / (p + r)
    with pytest.raises(AttributeError, match="has no attribute 'atach'"):
        f1.atach(None, "f1")
    assert not hasattr(Accuracy(), "atach") and not hasattr(f1, "_hidden")
    logits, labels = torch.randn(12, 3), torch.arange(12) % 3
    mean_p, second = p.mean(), p[1]  # methods of the value, as on Ignite metrics
    cm = ConfusionMatrix(3)
    diagonal = cm.diag().sum()
    for metric in (mean_p, second, diagonal):
        metric.update((logits, labels))
    per_class = sk.precision_score(labels, logits.argmax(1), average=None, zero_division=0)
    assert mean_p.compute().item() == pytest.approx(per_class.mean())
    assert second.compute().item() == pytest.approx(per_class[1])
    assert diagonal.compute().item() == int((logits.argmax(1) == labels).sum())


# ------------------------------------------------------------------ confusion-matrix family
def test_confusion_matrix_family_argument_checks_as_in_ignite():
    with pytest.raises(
        ValueError, match=r"ignore_index should be integer and in the range of \[0, 3\)"
    ):
        IoU(ConfusionMatrix(3), ignore_index=3)
    with pytest.raises(ValueError, match="average in"):
        DiceCoefficient(ConfusionMatrix(3, average="recall"))
    with pytest.raises(TypeError, match="needs a ConfusionMatrix"):
        mIoU(Accuracy())
    cm = ConfusionMatrix(3, average="samples")  # normalised by samples: IoU is unchanged
    logits, labels = torch.randn(20, 3), torch.arange(20) % 3
    counted = IoU(ConfusionMatrix(3))
    for metric in (IoU(cm), counted):
        metric.update((logits, labels))
    np.testing.assert_allclose(IoU(cm).compute(), counted.compute(), rtol=1e-12)


def test_confusion_matrix_samples_divides_by_examples_as_ignite_documents():
    logits, labels = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    labels[0, 0, 0] = 255
    counts = value(ConfusionMatrix(3), (logits, labels))
    np.testing.assert_allclose(value(ConfusionMatrix(3, "samples"), (logits, labels)), counts / 2)


def test_no_histc_or_bincount_and_deterministic_mode(monkeypatch):
    """CUDA's histc and weighted bincount refuse deterministic mode: none may be used."""

    def refuse(*args, **kwargs):
        raise AssertionError("histc/bincount are not deterministic on CUDA")

    monkeypatch.setattr(torch, "histc", refuse)
    monkeypatch.setattr(torch, "bincount", refuse)
    monkeypatch.setattr(torch.Tensor, "histc", refuse, raising=False)
    monkeypatch.setattr(torch.Tensor, "bincount", refuse, raising=False)
    g = torch.Generator().manual_seed(9)
    logits, labels = (
        torch.randn(2, 4, 6, 6, generator=g),
        torch.randint(0, 4, (2, 6, 6), generator=g),
    )
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        cm = ConfusionMatrix(4)
        metrics = [IoU(cm), mIoU(cm), DiceCoefficient(cm), Precision(average=None), Recall()]
        for metric in metrics:
            metric.update((logits, labels))
        results = [m.compute() for m in metrics]
    finally:
        torch.use_deterministic_algorithms(previous)
    y, pred = labels.reshape(-1), logits.argmax(1).reshape(-1)
    matrix = sk.confusion_matrix(y, pred)
    tp = np.diag(matrix)
    iou = tp / (matrix.sum(0) + matrix.sum(1) - tp)
    np.testing.assert_allclose(results[0], iou)
    assert results[1] == pytest.approx(iou.mean())
    np.testing.assert_allclose(results[2], 2 * tp / (matrix.sum(0) + matrix.sum(1)))
    np.testing.assert_allclose(results[3], sk.precision_score(y, pred, average=None))


@pytest.mark.gpu
def test_cuda_deterministic_counts_and_cpu_metric_on_cuda_outputs():
    logits = torch.randn(8, 5, 16, 16, device="cuda")
    labels = torch.randint(0, 5, (8, 16, 16), device="cuda")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        on_gpu = [ConfusionMatrix(5), Precision(average="macro"), Recall(average=None)]
        on_cpu = [ConfusionMatrix(5, device="cpu"), Precision(average="macro", device="cpu")]
        for metric in on_gpu + on_cpu:
            metric.update((logits, labels))
        results = [m.compute() for m in on_gpu + on_cpu]
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(results[0].cpu(), results[3]) and results[1] == results[4]


def _state_devices(metric):
    found = set()
    for name in metric._specs:
        state = getattr(metric, name)
        for t in state if isinstance(state, list) else [state]:
            if isinstance(t, torch.Tensor):
                found.add(t.device.type)
    return found


def test_metric_device_moves_inputs_there():
    """``device`` given: inputs from elsewhere are moved (meta stands in for a GPU here)."""
    seen = []

    class Recorder(Accuracy):
        def update(self, output):
            seen.append(output[0].device.type)
            super().update(output)

    batch = (torch.randn(4, 3), torch.tensor([0, 1, 2, 1]))
    for metric in (
        Recorder(device="meta"),
        ConfusionMatrix(3, device="meta"),
        Precision(device="meta"),
        EpochMetric(lambda p, y: 0.0, device="meta"),
    ):
        metric.update(batch)
        assert _state_devices(metric) == {"meta"}, type(metric).__name__
    assert seen == ["meta"]


def test_epoch_metric_check_compute_fn_warns_once():
    def broken(y_pred, y):
        raise ZeroDivisionError("boom")

    from distengine.metrics.epoch_metric import EpochMetricWarning  # Ignite's warning class

    metric = EpochMetric(broken, check_compute_fn=True)
    with pytest.warns(EpochMetricWarning, match="compute_fn failed on the first batch"):
        metric.update((torch.zeros(3), torch.zeros(3)))
    metric.update((torch.zeros(3), torch.zeros(3)))  # only once
