"""Checks of what metrics are fed: shapes and dtypes only (values would need a sync)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def pair(output: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` from an output, with a clear error otherwise."""
    if type(output) in (tuple, list) and len(output) >= 2:
        y_pred, y = output[0], output[1]
        if type(y_pred) is torch.Tensor and type(y) is torch.Tensor:  # the usual case, fast
            if y_pred.requires_grad or y.requires_grad:
                return _detached(y_pred), _detached(y)
            return y_pred, y
    if not isinstance(output, (tuple, list)) or len(output) < 2:
        raise ValueError(
            f"{metric} expects output (y_pred, y); got {type(output).__name__}. Use "
            "output_transform=lambda out: (y_pred, y) to pick them from the engine output"
        )
    y_pred, y = output[0], output[1]
    for name, value in (("y_pred", y_pred), ("y", y)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{metric}: {name} must be a tensor, got {type(value).__name__}")
    return _detached(y_pred), _detached(y)


def _detached(t: torch.Tensor) -> torch.Tensor:
    return derived(t, "detached", t.detach) if t.requires_grad else t


def classification_kind(
    y_pred: torch.Tensor, y: torch.Tensor, multilabel: bool, metric: str
) -> str:
    """``binary``, ``multiclass`` or ``multilabel``, from the shapes; errors name them."""
    if multilabel:
        if y_pred.shape != y.shape or y_pred.dim() < 2:
            raise ValueError(
                f"{metric} (multilabel) expects y_pred and y of the same shape (N, C, ...), "
                f"got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        return "multilabel"
    if y.is_floating_point():
        raise TypeError(f"{metric} expects integer class labels y, got {y.dtype}")
    if y_pred.dim() == y.dim() + 1 and y_pred.shape[:1] + y_pred.shape[2:] == y.shape:
        if y_pred.shape[1] < 2:
            raise ValueError(f"{metric}: y_pred of shape {tuple(y_pred.shape)} has one class")
        return "multiclass"
    if y_pred.shape == y.shape or (y_pred.dim() == 2 and y_pred.shape == (y.shape[0], 1)):
        return "binary"
    raise ValueError(
        f"{metric} expects y_pred (N, C, ...) with y (N, ...) for multiclass, or equal shapes "
        f"for binary; got y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)}"
    )


def class_last(t: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (N * ..., C)."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def classified(metric: Any, output: Any, multilabel: bool, name: str):
    """``(y_pred, y, kind)`` for a classification metric; shapes are checked once per shape.

    The metric keeps its data kind: switching kinds between updates is an error.
    """
    y_pred, y = pair(output, name)
    shapes = (y_pred.shape, y.shape, y.dtype)
    if shapes != metric._checked_shapes:
        kind = classification_kind(y_pred, y, multilabel, name)
        if metric._kind is not None and metric._kind != kind:
            raise ValueError(f"{name} was updated with {metric._kind} data, now with {kind} data")
        metric._kind, metric._checked_shapes = kind, shapes
    return y_pred, y, metric._kind


def derived(source: torch.Tensor, key: Any, make: Callable[[], Any]) -> Any:
    """``make()``, computed once per batch tensor and shared by every metric fed it.

    Six metrics on one ``y_pred`` take its argmax once. The value is kept on
    the tensor itself (so it lives exactly as long as the batch) and is
    recomputed if the tensor was changed in place.
    """
    cache = source.__dict__.get("_distengine_derived")
    if cache is None or cache[0] != source._version:
        cache = (source._version, {})
        source._distengine_derived = cache
    values = cache[1]
    if key not in values:
        values[key] = make()
    return values[key]


def predicted_classes(y_pred: torch.Tensor) -> torch.Tensor:
    """``y_pred.argmax(1)``, shared across metrics."""
    return derived(y_pred, "argmax", lambda: y_pred.argmax(1))


def hits(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y_pred.argmax(1) == y`` (multiclass), shared across metrics."""
    key = ("hits", y.data_ptr(), y._version, tuple(y.shape))
    return derived(y_pred, key, lambda: predicted_classes(y_pred) == y)
