"""Waiting for a checkpoint write by its own timeout, not the process group's.

The process group's timeout (``dist.timeout_s`` under the launcher) bounds
how long a collective may wait: short, so that a hung rank is found soon.
A checkpoint write may legitimately take longer (a large model, a slow
disk), and while rank 0 writes, the other ranks wait for it in a collective.
They wait in a gloo group made for that, whose timeout is the save's own
(``DiskSaver(timeout_s=...)``), so a slow write is not a hang and a stuck one
still ends. One group per timeout and process group, made on first use (every
rank makes it at the same save, as ``new_group`` requires) and kept.

Example::

    group = long_wait_group(1800.0)
    dist.broadcast_object_list(holder, src=0, group=group)   # waits up to 30 minutes
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from distengine.distributed.env import get_world_size, is_distributed

_groups: dict[float, Any] = {}  # timeout -> gloo group of the current default group


def check_timeout(timeout_s: Any, owner: str) -> float:
    """``timeout_s`` as a float, or a ValueError naming ``owner`` and what is accepted."""
    number = isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
    if not number or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ValueError(f"{owner}(timeout_s={timeout_s!r}): expected positive, finite seconds")
    return float(timeout_s)


def waits_for_others() -> bool:
    """Whether there are other ranks to wait for (a process group of more than one)."""
    return is_distributed() and get_world_size() > 1


def long_wait_group(timeout_s: float) -> Any:
    """A gloo group of every rank whose collectives wait up to ``timeout_s`` (every rank)."""
    group = _groups.get(timeout_s)
    if group is not None:
        try:
            dist.get_process_group_ranks(group)  # destroyed with its default group?
            return group
        except (KeyError, ValueError, RuntimeError):
            pass
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    _groups[timeout_s] = group
    return group


def forget_group(timeout_s: float) -> None:
    """Make the next :func:`long_wait_group` of ``timeout_s`` a new group (after a wait in it
    timed out, its connections may hold a late message). Every rank must call it."""
    _groups.pop(timeout_s, None)


def gather_on_every_rank(value: Any, timeout_s: float) -> list[Any]:
    """Every rank's ``value``, waiting up to ``timeout_s`` for the slowest (every rank)."""
    if not waits_for_others():
        return [value]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, value, group=long_wait_group(timeout_s))
    return gathered


def from_rank0(value: Any, timeout_s: float) -> Any:
    """Rank 0's ``value`` on every rank, waiting up to ``timeout_s`` for it (every rank)."""
    if not waits_for_others():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, group=long_wait_group(timeout_s))
    return holder[0]
