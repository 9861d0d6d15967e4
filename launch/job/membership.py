"""The lines each node prints about the job's nodes: joined, membership changes, done or failed.

Example::

    node 1 joined: global ranks 0-1 of 4 (rank 0 runs here)
    membership changed: node 1 (global ranks 2-3) vanished: 1 node, world size 2 (was 4);
    this node: global ranks 0-1; the ranks resume from .../checkpoint_40.pt (iteration 40):
    7 iterations redone
    node 0 (global ranks 0-1) done
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from launch import exit_codes
from launch.job.failures import is_consequence
from launch.job.nodes import Nodes
from launch.job.outcome import Outcome


def joined_line(nodes: Nodes) -> str:
    """This node's first round: which global ranks it hosts, and where rank 0 runs."""
    me = nodes.me()
    if me is None:
        return f"node {nodes.node} joined"
    line = f"node {me.node} joined: {me.ranks()} of {nodes.world_size()}"
    zero = next((m for m in nodes.members if m.first == 0), None)
    if zero is not None and zero.node == me.node:
        return f"{line} (rank 0 runs here)"
    if zero is not None:
        return f"{line} (rank 0 runs on node {zero.node}, whose console shows its output)"
    return line


def redone(reached: int | None, resumed: int) -> str:
    """``7 iterations redone`` (empty when this node's ranks did not record how far they got)."""
    if reached is None:
        return ""
    count = max(reached - resumed, 0)
    return f": {count} iteration{'s' if count != 1 else ''} redone"


def membership_line(
    nodes: Nodes, kind: str, newest: tuple[Path, int] | None, reached: int | None
) -> str:
    """A round whose nodes differ from the last one's: who left or joined, the new world,
    where the ranks resume and what they redo."""
    parts = [f"{m} {nodes.how_left(m)}" for m in nodes.left()]
    parts += [f"{m} joined" for m in nodes.joined()]
    count = len(nodes.members)
    me = nodes.me()
    line = (
        f"membership changed: {'; '.join(parts)}: {count} node{'s' if count != 1 else ''}, "
        f"world size {nodes.world_size()} (was {nodes.world_size(nodes.previous)})"
    )
    if me is not None:
        line += f"; this node: {me.ranks()}"
    if kind != "recipe":
        if newest is None:
            return f"{line}; the {kind} starts again"
        where = f"newest: {newest[0]}, iteration {newest[1]}{redone(reached, newest[1])}"
        return f"{line}; the {kind} starts again ({where})"
    if newest is None:
        return f"{line}; no checkpoint of this run yet: the ranks start at iteration 0" + redone(
            reached, 0
        )
    return f"{line}; the ranks resume from {newest[0]} (iteration {newest[1]})" + redone(
        reached, newest[1]
    )


def finish(outcome: Outcome, nodes: Nodes | None, say: Callable[[str], None]) -> Outcome:
    """On several nodes: record how this node ended, say it, and on a failure add what
    became of the other nodes (ended how, or vanished) after the summary's first line."""
    if nodes is None:
        return outcome
    me = nodes.me()
    name = str(me) if me is not None else f"node {nodes.node}"
    if outcome.code == exit_codes.DONE:
        nodes.end("done")
        say(f"{name} done")
        return outcome
    if outcome.code != exit_codes.FAILED:
        nodes.end("stopped")
        say(f"{name} stopped")
        return outcome
    lines = outcome.message.splitlines()
    culprit = next((line for line in lines if line.startswith("rank ")), "its ranks failed")
    nodes.end(f"failed: {culprit}")
    say(f"{name} failed")
    if "vanished" in outcome.message:  # node 0's store gone, said already
        return outcome
    news = nodes.news() if me is not None else []
    if not news or not lines:
        return outcome
    if any("vanished" in line for line in news) and is_consequence(culprit):
        news.append("then, on this node, because of it:")
    return Outcome(outcome.code, "\n".join([lines[0], *news, *lines[1:]]))
