"""``dist.nnodes``: a number of nodes, or ``MIN:MAX`` for an elastic job (as torchrun spells it).

Example::

    node_range(2)       # (2, 2)
    node_range("1:4")   # (1, 4): the job runs on 1 to 4 nodes, as they come and go
"""

from __future__ import annotations

from typing import Any


def node_range(nnodes: Any) -> tuple[int, int]:
    """``(MIN, MAX)`` nodes; ValueError when ``nnodes`` is neither an int nor ``MIN:MAX``."""
    if isinstance(nnodes, bool):
        raise ValueError(nnodes)
    if isinstance(nnodes, int):
        return nnodes, nnodes
    low, colon, high = str(nnodes).partition(":")
    if not colon:
        raise ValueError(nnodes)
    return int(low), int(high)


def max_nodes(nnodes: Any) -> int:
    """The most nodes the job can have (``nnodes`` itself, or MAX)."""
    return node_range(nnodes)[1]


def is_elastic(nnodes: Any) -> bool:
    """Whether the job's number of nodes may change while it runs (``MIN:MAX``, MIN < MAX)."""
    low, high = node_range(nnodes)
    return low < high
