"""Rank 0's c10d store listens where the other ranks reach it, not on every interface.

torch's ``init_process_group`` (``env://``) makes rank 0 host a TCPStore on
``MASTER_PORT``, listening on every interface. In a job the launcher started,
rank 0 hosts that store first, on ``MASTER_ADDR`` only (the launcher sets it
to loopback on one node, and to the address the other nodes reach this one
at: :mod:`launch.job.stores`); torch's own store for that port in this
process is multi-tenant and reuses it. The store held here also tells
whether any rank ever joined a process group through it (:func:`used`).

Example::

    hold()          # in rank 0, before the task runs
    ...
    used()          # after it: did any rank make a process group here?
"""

from __future__ import annotations

import os
from typing import Any

_held: Any = None  # this process's store server (one per process, for its life)


def hold(timeout_s: float = 300.0) -> Any:
    """In global rank 0: host the job's store on ``MASTER_ADDR:MASTER_PORT`` only.

    Elsewhere, or when the port cannot be taken (torch's own store then says
    why), nothing is held and None is returned.
    """
    global _held
    from launch.job.stores import host, resolve

    if os.environ.get("RANK") != "0" or not os.environ.get("MASTER_PORT"):
        return None
    port = int(os.environ["MASTER_PORT"])
    try:
        address = resolve(os.environ.get("MASTER_ADDR") or "127.0.0.1", port)[1]
        _held = host(address, port, timeout_s)
    except (OSError, RuntimeError, ValueError):
        return None
    return _held


def used() -> bool | None:
    """Whether any rank made a process group through the held store (None: none held)."""
    if _held is None:
        return None
    try:
        return _held.num_keys() > 0
    except RuntimeError:
        return None
