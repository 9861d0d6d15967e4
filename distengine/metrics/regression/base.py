"""What Ignite's regression metrics take: (N,) or (N, 1) floating tensors of one shape."""

from __future__ import annotations

from typing import Any

import torch

from distengine.metrics.inputs import pair

_FLOATS = (torch.float16, torch.float32, torch.float64)


def regression_pair(output: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` checked as PyTorch-Ignite checks them, (N, 1) squeezed to (N,).

    Example::

        y_pred, y = regression_pair((torch.rand(4, 1), torch.rand(4, 1)), "R2Score")
    """
    y_pred, y = pair(output, metric)
    for name, t in (("y_pred", y_pred), ("y", y)):
        if not (t.dim() == 1 or (t.dim() == 2 and t.shape[1] == 1)):
            raise ValueError(f"Input {name} should have shape (N,) or (N, 1), but given {t.shape}")
    if y_pred.shape != y.shape:
        raise ValueError(
            f"Input data shapes should be the same, but given {y_pred.shape} and {y.shape}"
        )
    for name, t in (("y_pred", y_pred), ("y", y)):
        if t.dtype not in _FLOATS:
            raise TypeError(f"Input {name} dtype should be float 16, 32 or 64, but given {t.dtype}")
    return y_pred.reshape(-1), y.reshape(-1)
