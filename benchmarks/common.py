"""Shared helpers for the benchmark scripts: timing medians and machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 7) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    """One line naming the cores, Python and torch the figures were taken on."""
    import torch

    return (
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def try_import(name: str):
    """The module, or None when the optional peer is not installed."""
    try:
        return __import__(name)
    except ImportError:
        return None
