"""Precision, recall and F-beta of every class and their macro average, in one report."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from distengine.metrics.metrics_lambda import MetricsLambda
from distengine.metrics.precision_recall import Fbeta, Precision, Recall

__all__ = ["ClassificationReport"]


def ClassificationReport(  # noqa: N802 - named like the function users know from PyTorch-Ignite
    beta: int = 1,
    output_dict: bool = False,
    output_transform: Callable[[Any], Any] = lambda output: output,
    device: str | torch.device | None = None,
    is_multilabel: bool = False,
    labels: Sequence[str] | None = None,
    metrics_result_mode: str = "both",
) -> MetricsLambda:
    """A report like scikit-learn's ``classification_report``: for each class (named by
    ``labels``, else ``"0"``, ``"1"``, ...) and for ``"macro avg"``, a dict of
    ``precision``, ``recall`` and ``f{beta}-score``; a JSON string of it unless
    ``output_dict=True``.

    It is made of one :class:`Precision` and one :class:`Recall` (per class), so its counts
    reduce across ranks with the engine's other metrics.

    Example::

        report = ClassificationReport(output_dict=True, labels=["cat", "dog", "bird"])
        report.attach(evaluator, "cr")
        evaluator.run(val_loader)
        evaluator.state.metrics["cr"]["dog"]    # {"precision": 1.0, "recall": 0.5, "f1-score": ...}
        evaluator.state.metrics["macro avg"]    # each key is published too (metrics_result_mode)
    """
    kwargs: dict[str, Any] = {"output_transform": output_transform, "device": device}
    precision = Precision(average=False, is_multilabel=is_multilabel, **kwargs)
    recall = Recall(average=False, is_multilabel=is_multilabel, **kwargs)
    fbeta = Fbeta(beta, average=False, precision=precision, recall=recall)
    score = f"f{beta}-score"

    def report(p: torch.Tensor, r: torch.Tensor, f: torch.Tensor) -> str | dict[str, Any]:
        if labels is not None and len(labels) < p.numel():
            raise ValueError(
                f"ClassificationReport: labels name {len(labels)} classes, the data has "
                f"{p.numel()}: {list(labels)}"
            )
        names = list(labels) if labels else [str(i) for i in range(p.numel())]
        rows = {
            name: {"precision": p[i].item(), "recall": r[i].item(), score: f[i].item()}
            for i, name in enumerate(names[: p.numel()])
        }
        rows["macro avg"] = {
            "precision": p.mean().item(),
            "recall": r.mean().item(),
            score: f.mean().item(),
        }
        return rows if output_dict else json.dumps(rows)

    return MetricsLambda(report, precision, recall, fbeta, metrics_result_mode=metrics_result_mode)
