"""The nodes of one job, as each node's launcher sees them through node 0's store.

Node 0's launcher hosts the store (:mod:`launch.job.stores`) and publishes
the job there before any rank starts: its config, with the run's identity
(``run_id``, ``job_id``). Every other node adopts it, so whichever node
hosts global rank 0 (torch's rendezvous orders the nodes by address and
process id, not by ``dist.node_rank``) runs node 0's run. Each launcher
then beats a counter (:data:`HEARTBEAT_S`), records at every round of the
rendezvous which node it is (:meth:`Nodes.round`), and records how it
ended (:meth:`Nodes.end`); from these a node tells what became of the
others: ended (and how), or vanished (its counter stopped).

Example::

    nodes = Nodes(store, node=1)
    cfg = nodes.adopt()          # node 0: nodes.publish(cfg)
    nodes.start()                # heartbeat
    ...                          # each round: nodes.round(info) (from the rendezvous)
    nodes.end("done")
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

PREFIX = "distengine/"
#: How often a launcher beats its counter in the store.
HEARTBEAT_S = 0.5
#: How long a node waits for the others' news after its ranks failed.
NEWS_WAIT_S = 3.0
#: A node whose heartbeat did not move for this long has vanished.
SILENT_S = 4 * HEARTBEAT_S
#: How long a node waits for the others to say who they are in a new round.
ROUND_WAIT_S = 30.0


@dataclass(frozen=True)
class Member:
    """One node of a round: its ``dist.node_rank`` and its global ranks ``first..last``."""

    node: int
    first: int
    last: int

    def ranks(self) -> str:
        """``global ranks 2-3`` (or ``global rank 2``)."""
        if self.first == self.last:
            return f"global rank {self.first}"
        return f"global ranks {self.first}-{self.last}"

    def __str__(self) -> str:
        return f"node {self.node} ({self.ranks()})"


class Nodes:
    """This node's view of the job's nodes (see the module)."""

    def __init__(self, store: Any, node: int, endpoint: str = "") -> None:
        self.store, self.node, self.endpoint = store, node, endpoint
        self.members: list[Member] = []  # of the current round
        self.previous: list[Member] = []  # of the round before
        self.rounds = 0
        self.nproc = 0  # this node's ranks (set once known)
        self.waiting_seen = 0  # nodes seen waiting to join, this round
        self.announce: Any = None  # says a line on this node's console
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._beats, name="node-heartbeat", daemon=True)

    # the job ------------------------------------------------------------------------------

    def publish(self, job: dict[str, Any]) -> None:
        """Node 0: the job every node runs (its resolved config)."""
        self.store.set(PREFIX + "job", json.dumps(job))

    def adopt(self, timeout_s: float) -> dict[str, Any]:
        """Another node: node 0's job, once published (bounded by the rendezvous deadline)."""
        key = PREFIX + "job"
        end = time.monotonic() + timeout_s
        while not self.store.check([key]):
            if time.monotonic() > end:
                raise TimeoutError(f"node 0 published no job at {self.endpoint}")
            time.sleep(0.05)
        return json.loads(self.store.get(key))

    # liveness -----------------------------------------------------------------------------

    def start(self) -> Nodes:
        self._beat.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _beats(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.store.add(f"{PREFIX}alive/{self.node}", 1)
            except Exception:  # node 0's store is gone: the job's end will say so
                return

    def beats(self, node: int) -> int:
        return int(self.store.add(f"{PREFIX}alive/{node}", 0))

    def silent(self, nodes: list[int], wait_s: float = SILENT_S) -> set[int]:
        """Which of ``nodes`` did not beat for ``wait_s``."""
        before = {n: self.beats(n) for n in nodes}
        time.sleep(wait_s)
        return {n for n in nodes if self.beats(n) == before[n]}

    # rounds -------------------------------------------------------------------------------

    def round(self, info: Any) -> None:
        """Say who this node is in the round just formed; learn the others (``info``:
        torch's RendezvousInfo, whose store is scoped to the round)."""
        store, size = info.store, int(info.world_size)
        store.set(f"{PREFIX}node/{info.rank}", json.dumps([self.node, self.nproc]))
        keys = [f"{PREFIX}node/{g}" for g in range(size)]
        end = time.monotonic() + ROUND_WAIT_S
        while not store.check(keys) and time.monotonic() < end:
            time.sleep(0.05)
        members, first = [], 0
        for key in keys:
            if not store.check([key]):
                break  # a node left right after the rendezvous: its restart will say so
            node, nproc = json.loads(store.get(key))
            members.append(Member(int(node), first, first + int(nproc) - 1))
            first += int(nproc)
        self.previous, self.members = self.members, members
        self.rounds += 1
        self.waiting_seen = 0

    def waiting(self, count: int) -> None:
        """torch's agent saw ``count`` nodes waiting to join (it restarts the ranks for them)."""
        if not self.waiting_seen and self.announce is not None:
            self.announce(
                f"{count} node{'s' if count > 1 else ''} waiting to join: the ranks are stopped "
                "(SIGTERM: the default job saves a checkpoint first) and the group re-forms "
                "with them"
            )
        self.waiting_seen = count

    def me(self) -> Member | None:
        return next((m for m in self.members if m.node == self.node), None)

    def world_size(self, members: list[Member] | None = None) -> int:
        members = self.members if members is None else members
        return sum(m.last - m.first + 1 for m in members)

    def left(self) -> list[Member]:
        now = {m.node for m in self.members}
        return [m for m in self.previous if m.node not in now]

    def joined(self) -> list[Member]:
        before = {m.node for m in self.previous}
        return [m for m in self.members if m.node not in before] if self.previous else []

    # the end ------------------------------------------------------------------------------

    def end(self, how: str) -> None:
        """Record how this node ended (``done``, ``stopped``, ``failed: <culprit>``)."""
        try:
            self.store.set(f"{PREFIX}ended/{self.node}", how)
        except Exception:
            pass  # node 0's store is gone
        self.stop()

    def store_gone(self) -> bool:
        """Whether node 0's store stopped answering (node 0 itself never says so)."""
        if self.node == 0:
            return False
        try:
            self.beats(0)
        except Exception:
            return True
        return False

    def store_gone_line(self) -> str:
        return (
            f"node 0 vanished: the job's store at {self.endpoint} stopped answering, and the "
            "job cannot go on without it"
        )

    def how_left(self, member: Member) -> str:
        """Why ``member`` is not in this round: how it ended, or that it vanished."""
        how = self.ended(member.node)
        if how is not None:
            return how
        return "vanished" if self.silent([member.node]) else "did not rejoin in time"

    def ended(self, node: int) -> str | None:
        key = f"{PREFIX}ended/{node}"
        return self.store.get(key).decode() if self.store.check([key]) else None

    def news(self, wait_s: float = NEWS_WAIT_S) -> list[str]:
        """After this node's ranks failed: one line per other node of the round that ended
        (how) or vanished (no heartbeat for :data:`SILENT_S`), waiting up to ``wait_s`` for
        them. Node 0's store gone is said as node 0 vanishing."""
        others = [m for m in self.members if m.node != self.node]
        lines: dict[int, str] = {}
        try:
            before = {m.node: self.beats(m.node) for m in others}
            start = time.monotonic()
            while len(lines) < len(others) and time.monotonic() - start < wait_s:
                quiet = time.monotonic() - start >= SILENT_S
                for member in [m for m in others if m.node not in lines]:
                    how = self.ended(member.node)
                    if how is not None:
                        lines[member.node] = f"{member} {how}"
                    elif quiet and self.beats(member.node) == before[member.node]:
                        lines[member.node] = f"{member} vanished: its launcher stopped answering"
                time.sleep(0.1)
        except Exception:
            return [self.store_gone_line()]
        return [lines[m.node] for m in others if m.node in lines]
