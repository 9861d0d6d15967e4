"""How a metric declares its state: a tensor (or list of tensors) and its reduction."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distengine.exceptions import NotComputableError

__all__ = ["REDUCTIONS", "NotComputableError", "StateSpec", "no_examples"]

REDUCTIONS = ("sum", "max", "min", "cat")


def no_examples(metric: str, what: str = "example") -> NotComputableError:
    """The error of ``compute`` before any example, in PyTorch-Ignite's words."""
    return NotComputableError(f"{metric} must have at least one {what} before it can be computed.")


@dataclass(frozen=True)
class StateSpec:
    """One piece of a metric's state.

    ``default`` is cloned on reset; ``None`` marks a *lazy* state whose shape
    is learned from the first update (summed only). ``reduce="cat"`` states
    are lists of tensors, concatenated on dim 0 across updates and ranks.
    """

    name: str
    reduce: str
    default: torch.Tensor | None

    @property
    def lazy(self) -> bool:
        return self.reduce != "cat" and self.default is None

    def fresh(self, device: torch.device | None):
        """The state's value after a reset."""
        if self.reduce == "cat":
            return []
        if self.default is None:
            return None
        return self.default.clone() if device is None else self.default.to(device, copy=True)
