"""Small helpers PyTorch-Ignite users import from ``ignite.utils``.

``setup_logger`` is :func:`distengine.handlers.setup_logger` (the same object).

Example::

    from distengine.utils import manual_seed, setup_logger, to_onehot

    logger = setup_logger("trainer")

    manual_seed(42)                                  # torch, random and numpy
    to_onehot(torch.tensor([0, 2]), num_classes=3)   # uint8 (2, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from distengine.distributed.utils import manual_seed

__all__ = [
    "_tree_map",
    "apply_to_tensor",
    "apply_to_type",
    "convert_tensor",
    "manual_seed",
    "setup_logger",  # noqa: F822 (given by the module __getattr__ below)
    "to_onehot",
]


def __getattr__(name: str) -> Any:
    """``setup_logger`` from :mod:`distengine.handlers.logging`, imported when first asked for
    (so that handlers may import this module)."""
    if name == "setup_logger":
        from distengine.handlers.logging import setup_logger

        return setup_logger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def apply_to_type(x: Any, input_type: type | tuple[type, ...], func: Callable[[Any], Any]) -> Any:
    """``func`` applied to every ``input_type`` object in ``x`` (nested mappings and sequences).

    Strings and bytes are left alone; containers keep their type (named tuples too).

    Example::

        apply_to_type({"a": [1, 2]}, int, lambda v: v * 10)   # {"a": [10, 20]}
    """
    if isinstance(x, input_type):
        return func(x)
    if isinstance(x, (str, bytes)):
        return x
    if isinstance(x, Mapping):
        return type(x)({k: apply_to_type(v, input_type, func) for k, v in x.items()})
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a named tuple
        return type(x)(*(apply_to_type(v, input_type, func) for v in x))
    if isinstance(x, Sequence):
        return type(x)([apply_to_type(v, input_type, func) for v in x])
    raise TypeError(f"x must hold {input_type}, mappings or sequences; found {type(x).__name__}")


def _tree_map(func: Callable[..., Any], x: Any, key: int | str | None = None) -> Any:
    """``func(leaf, key=k)`` applied to every leaf of ``x`` (nested mappings and sequences),
    as PyTorch-Ignite's private ``ignite.utils._tree_map``.

    ``k`` is the leaf's key in its mapping or its index in its list or tuple (``None`` in a
    named tuple and for ``x`` itself). Containers keep their type; strings are leaves.

    Example::

        _tree_map(lambda v, key: (key, v), {"a": [5, 6]})   # {"a": [(0, 5), (1, 6)]}
    """
    if isinstance(x, Mapping):
        return type(x)({k: _tree_map(func, v, key=k) for k, v in x.items()})
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a named tuple
        return type(x)(*(_tree_map(func, v) for v in x))
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return type(x)([_tree_map(func, v, key=i) for i, v in enumerate(x)])
    return func(x, key=key)


def apply_to_tensor(x: Any, func: Callable[[torch.Tensor], Any]) -> Any:
    """``func`` applied to every tensor in ``x`` (nested mappings and sequences).

    Example::

        apply_to_tensor((y_pred, y), lambda t: t.float())
    """
    return apply_to_type(x, torch.Tensor, func)


def convert_tensor(
    x: Any, device: str | torch.device | None = None, non_blocking: bool = False
) -> Any:
    """Every tensor in ``x`` moved to ``device`` (unchanged when ``device`` is None).

    Example::

        batch = convert_tensor(batch, idist.device(), non_blocking=True)
    """
    if device is None:
        return apply_to_tensor(x, lambda t: t)
    return apply_to_tensor(x, lambda t: t.to(device=device, non_blocking=non_blocking))


def to_onehot(indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Indices of shape ``(N, ...)`` as uint8 one-hot indicators of shape ``(N, num_classes, ...)``.

    Example::

        to_onehot(torch.tensor([1, 0]), 3)   # tensor([[0, 1, 0], [1, 0, 0]], dtype=torch.uint8)
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    shape = (indices.shape[0], num_classes, *indices.shape[1:])
    onehot = torch.zeros(shape, dtype=torch.uint8, device=indices.device)
    return onehot.scatter_(1, indices.unsqueeze(1).long(), 1)
