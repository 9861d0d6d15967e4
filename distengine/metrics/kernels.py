"""Gaussian-kernel helpers shared by the kernel metrics (HSIC, maximum mean discrepancy)."""

from __future__ import annotations

import torch


def squared_distances(
    gram: torch.Tensor, row: torch.Tensor | None = None, col: torch.Tensor | None = None
) -> torch.Tensor:
    """``[i, j] = |a_i - b_j|^2`` from the Gram matrix ``a @ b.T`` and the squared norms of
    ``a``'s rows (``row``) and ``b``'s (``col``); both default to ``gram``'s diagonal (``b``
    is ``a``), so that a row's distance to itself is exactly 0.

    Example::

        x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        squared_distances(x @ x.T)   # tensor([[0., 25.], [25., 0.]])
    """
    diag = gram.diag() if row is None or col is None else None
    row = diag if row is None else row
    col = diag if col is None else col
    return row.unsqueeze(1) + col.unsqueeze(0) - 2.0 * gram


def gaussian_gram(d2: torch.Tensor, variance: float | torch.Tensor) -> torch.Tensor:
    """``exp(-d2 / (2 variance))``: the RBF kernel of squared distances."""
    return torch.exp(-0.5 * d2 / variance)
