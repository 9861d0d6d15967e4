"""Rendezvous on the job's own store, ending within ``dist.rdzv_timeout_s`` with one line.

The nodes meet through torch's c10d dynamic rendezvous (the machinery of
``torchrun``), registered as :data:`BACKEND` so that it runs on the store the
launcher made (:mod:`launch.job.stores`: it listens on one address only) and
tells the launcher who met in each round (:class:`NodeRendezvous`).

torch's c10d rendezvous honours its ``timeout`` once node 0's store answers,
but a node whose store never answers keeps retrying the connection (two
minutes and pages of socket errors). :class:`Deadline` bounds the whole
wait: if no rank has started when it expires, the launcher prints one line
and exits (nothing has been started that needs stopping); the socket errors
go to ``logs/rendezvous.log`` in the run folder.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

from torch.distributed.elastic.rendezvous import RendezvousHandler

from launch import exit_codes
from launch.config.nodes import node_range

#: Extra seconds after ``dist.rdzv_timeout_s`` before the launcher gives up by itself
#: (so torch's own timeout, when it works, reports first).
MARGIN_S = 3.0


def waiting_for(dist: Any, endpoint: str) -> str:
    """What a node waits for, in one line, for the timeout messages."""
    seconds = f"{float(dist.rdzv_timeout_s):g} s (dist.rdzv_timeout_s)"
    if dist.node_rank > 0:
        return (
            f"node {dist.node_rank} waited {seconds} for node 0 at {endpoint}, which never "
            "answered: start node 0 first, with the same dist.master_addr and dist.master_port"
        )
    low, high = node_range(dist.nnodes)
    needed = f"all dist.nnodes={dist.nnodes}"
    if low < high:
        needed = f"at least {low} of the dist.nnodes={dist.nnodes}"
    return (
        f"node 0 waited {seconds} at {endpoint} for {needed} nodes to join: start the other "
        "nodes with the same dist.master_addr and dist.master_port"
    )


class Deadline:
    """Exit the launcher with one line if :meth:`met` is not called within ``seconds``.

    Until then the launcher's stderr goes to ``log`` (c10d's C++ layer logs
    every failed connection attempt with a stack trace); :meth:`met` puts it back.
    """

    def __init__(self, seconds: float, message: str, log: Path) -> None:
        self.message = message
        self.log = log
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._saved: int | None = None
        self._lock = threading.Lock()

    def start(self) -> Deadline:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        self._saved = os.dup(2)
        with open(self.log, "ab") as log:
            os.dup2(log.fileno(), 2)
        self._timer.start()
        return self

    def met(self) -> None:
        self._timer.cancel()
        self._restore()

    def say(self, line: str) -> None:
        """Print ``line`` on the launcher's own stderr, even while c10d's noise goes to the log."""
        with self._lock:
            if self._saved is None:
                print(line, file=sys.stderr, flush=True)
            else:
                sys.stderr.flush()
                os.write(self._saved, f"{line}\n".encode())

    def _restore(self) -> None:
        with self._lock:
            if self._saved is not None:
                sys.stderr.flush()
                os.dup2(self._saved, 2)
                os.close(self._saved)
                self._saved = None

    def _expire(self) -> None:
        self._restore()
        print(f"error: {self.message} (log: {self.log})", file=sys.stderr, flush=True)
        os._exit(exit_codes.FAILED)


def is_rendezvous_error(error: BaseException) -> bool:
    """torch's rendezvous and store errors (timeouts, refused connections)."""
    from torch.distributed import DistError
    from torch.distributed.elastic.rendezvous.api import RendezvousError

    return isinstance(error, (RendezvousError, DistError))


#: The name of the launcher's rendezvous backend in torch's registry (see :func:`register`).
BACKEND = "distengine"


class NodeRendezvous(RendezvousHandler):
    """torch's c10d dynamic rendezvous over the job's own store, telling ``watcher`` each round.

    ``watcher.round(info)`` runs on every node as each round completes (``info``:
    torch's RendezvousInfo; its store is scoped to the round), and
    ``watcher.waiting(n)`` when ``n`` nodes wait to join a running job (torch's
    agent then restarts the ranks to let them in).
    """

    def __init__(self, inner: Any, watcher: Any) -> None:
        self._inner = inner
        self._watcher = watcher

    def get_backend(self) -> str:
        return BACKEND

    @property
    def use_agent_store(self) -> bool:
        return bool(self._inner.use_agent_store)

    def next_rendezvous(self) -> Any:
        info = self._inner.next_rendezvous()
        if self._watcher is not None:
            self._watcher.round(info)
        return info

    def num_nodes_waiting(self) -> int:
        waiting = int(self._inner.num_nodes_waiting())
        if waiting and self._watcher is not None:
            self._watcher.waiting(waiting)
        return waiting

    def is_closed(self) -> bool:
        return bool(self._inner.is_closed())

    def set_closed(self) -> None:
        self._inner.set_closed()

    def get_run_id(self) -> str:
        return str(self._inner.get_run_id())

    def shutdown(self) -> bool:
        return bool(self._inner.shutdown())


def _create(params: Any) -> Any:
    """torch's c10d handler on the store the launcher made (``params``: ``store``, ``watcher``)."""
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler

    store = params.get("store")
    inner = create_handler(store, C10dRendezvousBackend(store, params.run_id), params)
    return NodeRendezvous(inner, params.get("watcher"))


def register() -> None:
    """Make :data:`BACKEND` known to torch's rendezvous registry (idempotent)."""
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    rendezvous_handler_registry.register(BACKEND, _create)
