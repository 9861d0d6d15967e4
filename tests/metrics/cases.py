"""Random data and scikit-learn references shared by the single- and multi-rank metric tests."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as sk
from torch import nn

from distengine.metrics import (
    ROC_AUC,
    Accuracy,
    Average,
    ConfusionMatrix,
    DiceCoefficient,
    EpochMetric,
    Fbeta,
    IoU,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    Precision,
    Recall,
    RootMeanSquaredError,
    TopKCategoricalAccuracy,
    mIoU,
)

N, C = 97, 4


def data(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, generator=g)
    labels = torch.randint(0, C, (N,), generator=g)
    labels[:40] = logits[:40].argmax(1)  # better than chance
    return {
        "logits": logits,
        "labels": labels,
        "bin_pred": torch.randint(0, 2, (N,), generator=g),
        "bin_true": torch.randint(0, 2, (N,), generator=g),
        "ml_pred": torch.randint(0, 2, (N, 3), generator=g),
        "ml_true": torch.randint(0, 2, (N, 3), generator=g),
        "reg_pred": torch.randn(N, 2, generator=g),
        "reg_true": torch.randn(N, 2, generator=g),
        "scores": torch.rand(N, generator=g),
    }


def _multiclass(out):
    return out["logits"], out["labels"]


def _binary(out):
    return out["bin_pred"], out["bin_true"]


def _multilabel(out):
    return out["ml_pred"], out["ml_true"]


def _regression(out):
    return out["reg_pred"], out["reg_true"]


def _auc(out):
    return out["scores"], out["bin_true"]


def _spread(y_pred, y):
    return (y_pred.max() - y_pred.min()).item()


def make_metrics(num_classes: int | None = C) -> dict:
    """Every metric under test, each reading its inputs from a dict batch."""
    cm = ConfusionMatrix(C, output_transform=_multiclass)
    p = Precision(average=False, output_transform=_multiclass, num_classes=num_classes)
    r = Recall(average=False, output_transform=_multiclass, num_classes=num_classes)
    return {
        "acc": Accuracy(_multiclass),
        "acc_bin": Accuracy(_binary),
        "acc_ml": Accuracy(_multilabel, is_multilabel=True),
        "prec_macro": Precision(_multiclass, average="macro", num_classes=num_classes),
        "prec_micro": Precision(_multiclass, average="micro", num_classes=num_classes),
        "prec_weighted": Precision(_multiclass, average="weighted", num_classes=num_classes),
        "prec_bin": Precision(_binary),
        "prec_ml": Precision(_multilabel, average="macro", is_multilabel=True),
        "rec_per_class": Recall(_multiclass, average=False, num_classes=num_classes),
        "rec_macro": Recall(_multiclass, average="macro", num_classes=num_classes),
        "f2_macro": Fbeta(2.0, "macro", output_transform=_multiclass, num_classes=num_classes),
        "f1_weighted": Fbeta(
            1.0, "weighted", output_transform=_multiclass, num_classes=num_classes
        ),
        "f1_from_pr": (2 * p * r / (p + r)).mean().item(),
        "loss": Loss(nn.functional.cross_entropy, _multiclass),
        "mse": MeanSquaredError(_regression),
        "mae": MeanAbsoluteError(_regression),
        "rmse": RootMeanSquaredError(_regression),
        "top2": TopKCategoricalAccuracy(2, _multiclass),
        "cm": cm,
        "cm_recall": ConfusionMatrix(C, "recall", _multiclass),
        "iou": IoU(cm),
        "miou_ignore0": mIoU(cm, ignore_index=0),
        "dice": DiceCoefficient(cm),
        "avg": Average(lambda out: out["reg_pred"]),
        "auc": ROC_AUC(_auc),
        "spread": EpochMetric(_spread, _regression),
    }


def references(d: dict[str, torch.Tensor]) -> dict:
    """The same quantities computed by scikit-learn or a plain formula."""
    y, pred = d["labels"].numpy(), d["logits"].argmax(1).numpy()
    cm = sk.confusion_matrix(y, pred, labels=list(range(C)))
    tp, rows, cols = np.diag(cm), cm.sum(1), cm.sum(0)
    iou = tp / (rows + cols - tp)
    reg_diff = (d["reg_pred"] - d["reg_true"]).double().numpy()
    p_cls = sk.precision_score(y, pred, average=None, zero_division=0)
    r_cls = sk.recall_score(y, pred, average=None, zero_division=0)
    return {
        "acc": sk.accuracy_score(y, pred),
        "acc_bin": sk.accuracy_score(d["bin_true"], d["bin_pred"]),
        "acc_ml": sk.accuracy_score(d["ml_true"].numpy(), d["ml_pred"].numpy()),
        "prec_macro": sk.precision_score(y, pred, average="macro", zero_division=0),
        "prec_micro": sk.precision_score(y, pred, average="micro", zero_division=0),
        "prec_weighted": sk.precision_score(y, pred, average="weighted", zero_division=0),
        "prec_bin": sk.precision_score(d["bin_true"], d["bin_pred"], zero_division=0),
        "prec_ml": sk.precision_score(d["ml_true"], d["ml_pred"], average="macro", zero_division=0),
        "rec_per_class": r_cls,
        "rec_macro": sk.recall_score(y, pred, average="macro", zero_division=0),
        "f2_macro": sk.fbeta_score(y, pred, beta=2.0, average="macro", zero_division=0),
        "f1_weighted": sk.f1_score(y, pred, average="weighted", zero_division=0),
        "f1_from_pr": np.mean(2 * p_cls * r_cls / (p_cls + r_cls)),
        "loss": nn.functional.cross_entropy(d["logits"].double(), d["labels"]).item(),
        "mse": np.mean(reg_diff**2),
        "mae": np.mean(np.abs(reg_diff)),
        "rmse": np.sqrt(np.mean(reg_diff**2)),
        "top2": sk.top_k_accuracy_score(y, d["logits"].numpy(), k=2, labels=list(range(C))),
        "cm": cm,
        "cm_recall": cm / cm.sum(1, keepdims=True),
        "iou": iou,
        "miou_ignore0": iou[1:].mean(),
        "dice": 2 * tp / (rows + cols),
        "avg": d["reg_pred"].double().mean(0).numpy(),
        "auc": sk.roc_auc_score(d["bin_true"], d["scores"]),
        "spread": (d["reg_pred"].max() - d["reg_pred"].min()).item(),
    }


def as_numpy(value):
    return value.double().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def assert_matches(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(as_numpy(got[name]), value, rtol=1e-6, atol=1e-9, err_msg=name)


def batches(d: dict[str, torch.Tensor], start: int, stop: int, size: int = 10) -> list[dict]:
    return [{k: v[i : min(i + size, stop)] for k, v in d.items()} for i in range(start, stop, size)]
