"""Whether a user's callable can be called as the engine will call it, checked when it is given."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def check_signature(fn: Callable[..., Any], what: str, params: tuple[str, ...]) -> None:
    """``fn`` takes ``len(params)`` positional arguments; else a ValueError naming its parameters.

    Callables without a signature (some builtins) pass.

    Example::

        check_signature(lambda e, b: b, "process function", ("engine", "batch"))
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*(None for _ in params))
    except TypeError:
        name = getattr(fn, "__qualname__", type(fn).__name__)
        raise ValueError(
            f"Error adding {name!r} as the {what}: it takes parameters "
            f"{list(signature.parameters)} but will be called with {list(params)}"
        ) from None
