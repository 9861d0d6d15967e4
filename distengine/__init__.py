"""distengine: an event-driven, rank-aware training engine for PyTorch.

Import the parts you use::

    from distengine.engine import Engine, Events
    import distengine.distributed as idist

Code written for PyTorch-Ignite may also ``import distengine as ignite``: the
subpackages are attributes (``ignite.distributed``, ``ignite.engine``, ...),
imported when first used, and ``ignite.__version__`` is distengine's.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("checkpoint", "distributed", "engine", "exceptions", "handlers", "metrics", "utils")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
