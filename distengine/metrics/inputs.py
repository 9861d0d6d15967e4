"""Checks of what metrics are fed: shapes and dtypes only (values would need a sync)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Number
from typing import Any

import torch


class DataKindChanged(ValueError, RuntimeError):  # noqa: N818 - a ValueError, as the others
    """A classification metric fed binary, multiclass or multilabel data after another kind
    (a RuntimeError too: what PyTorch-Ignite raises there)."""


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
    """``binary``, ``multiclass`` or ``multilabel``, from the shapes; errors name them.

    As in PyTorch-Ignite: equal shapes are binary (0/1 values), ``y_pred``
    with one more dimension is multiclass (scores ``(N, C, ...)``, integer
    labels ``(N, ...)``), or binary when that dimension has size 1.
    """
    if multilabel:
        if y_pred.shape != y.shape or y_pred.dim() < 2 or y_pred.shape[1] < 2:
            raise ValueError(
                f"{metric} (multilabel) expects y_pred and y of the same shape (N, C >= 2, ...), "
                f"got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        return "multilabel"
    if y_pred.dim() == y.dim() + 1 and y_pred.shape[:1] + y_pred.shape[2:] == y.shape:
        if y_pred.shape[1] == 1:
            return "binary"
        return "multiclass"
    if y_pred.shape == y.shape:
        return "binary"
    raise ValueError(
        f"{metric} expects y_pred (N, C, ...) with y (N, ...) for multiclass, or equal shapes "
        f"for binary; got y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)}"
    )


def non_binary(t: torch.Tensor) -> torch.Tensor:
    """How many values of ``t`` are neither 0 nor 1 (a device tensor: no sync)."""
    return ((t != 0) & (t != 1)).sum()


def binary_error(metric: str, count: int) -> ValueError:
    """The error for binary or multilabel inputs that held other values than 0 and 1."""
    return ValueError(
        f"{metric}: binary and multilabel inputs must hold 0s and 1s, but {count} value(s) "
        "did not; threshold scores first, e.g. output_transform=lambda out: "
        "((out[0] > 0.5).long(), out[1])"
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
            raise DataKindChanged(
                f"{name} was updated with {metric._kind} data, now with {kind} data"
            )
        if kind == "multiclass" and y.is_floating_point():
            warnings.warn(  # Ignite's warning; its labels are compared as integers too
                f"{name}: `y` should be of dtype long when entry type is multiclass, got "
                f"{y.dtype}: its labels are cast with y.long()",
                RuntimeWarning,
                stacklevel=4,
            )
        metric._kind, metric._checked_shapes = kind, shapes
    if metric._kind == "multiclass" and y.is_floating_point():
        y = y.long()
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


def moved(output: Any, device: torch.device) -> Any:
    """``output`` with its tensors (also inside tuples, lists and dicts) on ``device``."""
    if isinstance(output, torch.Tensor):
        return output if output.device == device else output.to(device)
    if type(output) in (tuple, list):
        return type(output)(moved(item, device) for item in output)
    if isinstance(output, Mapping):
        return {key: moved(value, device) for key, value in output.items()}
    return output


def picked(output: Mapping, keys: tuple[str, ...] | None, metric: str) -> tuple:
    """The values of ``keys`` from a mapping output, in order (PyTorch-Ignite's
    ``required_output_keys``); errors name the missing keys."""
    if keys is None:
        raise TypeError(
            f"Transformed engine output for {metric} metric should be a tuple/list, but given "
            f"{type(output)}: pick the value with output_transform or set required_output_keys"
        )
    missing = [key for key in keys if key not in output]
    if missing:
        raise ValueError(
            f"When transformed engine's output is a mapping, it should contain {tuple(keys)} keys, "
            f"but given {list(output)} ({metric} is missing {missing})"
        )
    return tuple(output[key] for key in keys)


def _is_items(value: Any) -> bool:
    return isinstance(value, Sequence) and all(isinstance(v, (torch.Tensor, Number)) for v in value)


def unrolled(output: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """``(y_pred_list, y_list)`` as one ``(y_pred[None], y[None])`` pair per item, else None.

    PyTorch-Ignite feeds outputs made of lists of tensors or numbers (e.g.
    images of different sizes) to ``update`` one item at a time; a metric
    made with ``skip_unrolling=True`` gets the output as it is.
    """
    if isinstance(output, torch.Tensor) or not isinstance(output, Sequence):
        return None
    if isinstance(output, str) or not output or not all(_is_items(item) for item in output):
        return None
    if len(output) != 2 or len(output[0]) != len(output[1]):
        raise ValueError(
            "Output should have 2 items of the same length (an output of 2 lists of the same "
            f"length is fed item by item), got {len(output)} list(s) of lengths "
            f"{[len(item) for item in output]}"
        )
    pairs = []
    for a, b in zip(output[0], output[1]):
        first = a.unsqueeze(0) if isinstance(a, torch.Tensor) else torch.tensor([a])
        if isinstance(b, torch.Tensor):
            pairs.append((first, b.unsqueeze(0)))
        else:
            pairs.append((first, torch.tensor([b], device=first.device)))
    return pairs
