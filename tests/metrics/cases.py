"""Random data and scikit-learn references shared by the single- and multi-rank metric tests."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from sklearn import metrics as sk
from torch import nn

from distengine.metrics import (
    ROC_AUC,
    Accuracy,
    Average,
    ConfusionMatrix,
    CosineSimilarity,
    DiceCoefficient,
    Entropy,
    EpochMetric,
    Fbeta,
    IoU,
    JaccardIndex,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    MutualInformation,
    Precision,
    Recall,
    RootMeanSquaredError,
    TopKCategoricalAccuracy,
    cmAccuracy,
    cmPrecision,
    cmRecall,
    mIoU,
)
from distengine.metrics.regression import (
    MaximumAbsoluteError,
    MedianAbsoluteError,
    PearsonCorrelation,
    R2Score,
    SpearmanRankCorrelation,
)

N, C = 97, 4


def data(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, generator=g)
    labels = torch.randint(0, C, (N,), generator=g)
    labels[:40] = logits[:40].argmax(1)  # better than chance
    ignored = labels.clone()
    ignored[torch.randperm(N, generator=g)[:12]] = torch.tensor([-100, 255]).repeat(6)
    return {
        "logits": logits,
        "labels": labels,
        "ignored": ignored,  # labels with ignore labels (-100, 255) mixed in
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


def _ignoring(out):
    return out["logits"], out["ignored"]


def _regression(out):
    return out["reg_pred"], out["reg_true"]


def _column(out):
    return out["reg_pred"][:, 0], out["reg_true"][:, 0]


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
        "prec_bin_macro": Precision(_binary, average="macro"),
        "prec_bin_both": Precision(_binary, average=None),
        "rec_bin_weighted": Recall(_binary, average="weighted"),
        "rec_bin_micro": Recall(_binary, average="micro"),
        "f1_bin": Fbeta(1.0, output_transform=_binary),
        "prec_ml_samples": Precision(_multilabel, average="samples", is_multilabel=True),
        "f2_ml_samples": Fbeta(2.0, "samples", output_transform=_multilabel, is_multilabel=True),
        "prec_ignoring": Precision(_ignoring, average="macro", num_classes=num_classes),
        "rec_ignoring": Recall(_ignoring, average=None, num_classes=num_classes),
        "cm_ignoring": ConfusionMatrix(C, output_transform=_ignoring),
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
        "jaccard_ignore1": JaccardIndex(cm, ignore_index=1),
        "cm_samples": ConfusionMatrix(C, "samples", _multiclass),
        "cm_acc": cmAccuracy(cm),
        "cm_prec": cmPrecision(cm),
        "cm_rec_per_class": cmRecall(cm, average=False),
        "avg": Average(lambda out: out["reg_pred"]),
        "auc": ROC_AUC(_auc),
        # check_compute_fn (Ignite's default) runs compute_fn once on the first batch: a sync
        "spread": EpochMetric(_spread, _regression, check_compute_fn=False),
        "r2": R2Score(_column),
        "pearson": PearsonCorrelation(output_transform=_column),
        "max_ae": MaximumAbsoluteError(_column),
        "median_ae": MedianAbsoluteError(_column, check_compute_fn=False),
        "spearman": SpearmanRankCorrelation(_column, check_compute_fn=False),
        "entropy": Entropy(_multiclass),
        "mutual_information": MutualInformation(_multiclass),
        "cosine": CosineSimilarity(output_transform=_regression),
    }


def references(d: dict[str, torch.Tensor]) -> dict:
    """The same quantities computed by scikit-learn or a plain formula."""
    y, pred = d["labels"].numpy(), d["logits"].argmax(1).numpy()
    cm = sk.confusion_matrix(y, pred, labels=list(range(C)))
    tp, rows, cols = np.diag(cm), cm.sum(1), cm.sum(0)
    iou = tp / (rows + cols - tp)
    reg_diff = (d["reg_pred"] - d["reg_true"]).double().numpy()
    keep = (d["ignored"] >= 0) & (d["ignored"] < C)
    y_kept, pred_kept = d["ignored"][keep].numpy(), pred[keep.numpy()]
    bt, bp = d["bin_true"].numpy(), d["bin_pred"].numpy()
    mlt, mlp = d["ml_true"].numpy(), d["ml_pred"].numpy()
    col_pred, col_true = d["reg_pred"][:, 0].double().numpy(), d["reg_true"][:, 0].double().numpy()
    probs = torch.softmax(d["logits"].double(), 1).numpy()
    entropies, marginal = -(probs * np.log(probs)).sum(1), probs.mean(0)
    rp, rt = d["reg_pred"].double().numpy(), d["reg_true"].double().numpy()
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
        "prec_bin_macro": sk.precision_score(bt, bp, average="macro", zero_division=0),
        "prec_bin_both": sk.precision_score(bt, bp, average=None, zero_division=0),
        "rec_bin_weighted": sk.recall_score(bt, bp, average="weighted", zero_division=0),
        "rec_bin_micro": sk.recall_score(bt, bp, average="micro", zero_division=0),
        "f1_bin": sk.f1_score(bt, bp, zero_division=0),
        "prec_ml_samples": sk.precision_score(mlt, mlp, average="samples", zero_division=0),
        "f2_ml_samples": sk.fbeta_score(mlt, mlp, beta=2.0, average="samples", zero_division=0),
        "prec_ignoring": sk.precision_score(
            y_kept, pred_kept, labels=list(range(C)), average="macro", zero_division=0
        ),
        "rec_ignoring": sk.recall_score(
            y_kept, pred_kept, labels=list(range(C)), average=None, zero_division=0
        ),
        "cm_ignoring": sk.confusion_matrix(y_kept, pred_kept, labels=list(range(C))),
        "prec_ml": sk.precision_score(d["ml_true"], d["ml_pred"], average="macro", zero_division=0),
        "rec_per_class": r_cls,
        "rec_macro": sk.recall_score(y, pred, average="macro", zero_division=0),
        "f2_macro": sk.fbeta_score(y, pred, beta=2.0, average="macro", zero_division=0),
        "f1_weighted": sk.f1_score(y, pred, average="weighted", zero_division=0),
        "f1_from_pr": np.mean(2 * p_cls * r_cls / (p_cls + r_cls)),
        "loss": nn.functional.cross_entropy(d["logits"].double(), d["labels"]).item(),
        # PyTorch-Ignite's: summed over each sample's outputs, averaged over samples
        "mse": np.mean((reg_diff**2).sum(1)),
        "mae": np.mean(np.abs(reg_diff).sum(1)),
        "rmse": np.sqrt(np.mean((reg_diff**2).sum(1))),
        "top2": sk.top_k_accuracy_score(y, d["logits"].numpy(), k=2, labels=list(range(C))),
        "cm": cm,
        "cm_recall": cm / cm.sum(1, keepdims=True),
        "iou": iou,
        "miou_ignore0": iou[1:].mean(),
        "dice": 2 * tp / (rows + cols),
        "jaccard_ignore1": np.delete(iou, 1),
        "cm_samples": cm / N,
        "cm_acc": tp.sum() / cm.sum(),
        "cm_prec": np.mean(tp / cols),
        "cm_rec_per_class": tp / rows,
        "avg": d["reg_pred"].double().mean(0).numpy(),
        "auc": sk.roc_auc_score(d["bin_true"], d["scores"]),
        "spread": (d["reg_pred"].max() - d["reg_pred"].min()).item(),
        "r2": sk.r2_score(col_true, col_pred),
        "pearson": stats.pearsonr(col_pred, col_true).statistic,
        "max_ae": sk.max_error(col_true, col_pred),
        "median_ae": sk.median_absolute_error(col_true, col_pred),
        "spearman": stats.spearmanr(col_pred, col_true).statistic,
        "entropy": np.mean(entropies),
        "mutual_information": -(marginal * np.log(marginal)).sum() - np.mean(entropies),
        "cosine": np.mean(
            (rp * rt).sum(1) / (np.linalg.norm(rp, axis=1) * np.linalg.norm(rt, axis=1))
        ),
    }


def as_numpy(value):
    return value.double().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def assert_matches(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(as_numpy(got[name]), value, rtol=1e-6, atol=1e-9, err_msg=name)


def batches(d: dict[str, torch.Tensor], start: int, stop: int, size: int = 10) -> list[dict]:
    return [{k: v[i : min(i + size, stop)] for k, v in d.items()} for i in range(start, stop, size)]
