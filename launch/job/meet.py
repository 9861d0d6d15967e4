"""Before any rank starts: the job's store, and on several nodes, one job for all of them.

Node 0 (or a single node) hosts the store the nodes rendezvous on
(:mod:`launch.job.stores`); on several nodes it publishes its config there,
with the run's identity, and every other node adopts it before writing its
own ``logs/node<N>/config.yaml`` (:mod:`launch.job.nodes`).

Example::

    meeting = meet(job, port=29500)
    meeting.store, meeting.nodes, meeting.local_addr
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.config.nodes import max_nodes
from launch.job import stores
from launch.job.folder import os_error
from launch.job.nodes import Nodes


@dataclass
class Meeting:
    """The store this node rendezvouses on, the nodes' view (None on one node), this node's
    address as the others reach it, and the config's differences from node 0's (adopted)."""

    store: Any
    nodes: Nodes | None
    local_addr: str
    endpoint: str
    differences: list[str]


def meet(job: Any, port: int) -> Meeting:
    """Host or join the job's store; on several nodes, share node 0's config (see the module)."""
    dist = job.cfg.dist
    count = max_nodes(dist.nnodes)
    timeout = float(dist.rdzv_timeout_s)
    endpoint = f"{dist.master_addr}:{port}"
    local_addr = stores.node_address(dist.master_addr, port, count)
    if dist.node_rank == 0:
        address = stores.store_address(dist.master_addr, port, count)
        store = stores.host(address, port, timeout)
    else:
        store = stores.join(dist.master_addr, port, timeout)
    if count == 1:
        return Meeting(store, None, local_addr, endpoint, [])
    nodes = Nodes(store, int(dist.node_rank), endpoint=endpoint)
    differences: list[str] = []
    if dist.node_rank == 0:
        nodes.publish(_container(job.cfg))
    else:
        differences = adopt(job, nodes.adopt(timeout))
    return Meeting(store, nodes, local_addr, endpoint, differences)


def _container(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def adopt(job: Any, published: dict[str, Any]) -> list[str]:
    """Take node 0's config (this node's ``dist.node_rank`` kept) and write it as this
    node's; the keys in which this node's own config differed."""
    from omegaconf import OmegaConf

    mine = _container(job.cfg)
    published["dist"]["node_rank"] = mine["dist"]["node_rank"]
    differences = [
        f"{key}={ours!r} here, {theirs!r} on node 0"
        for key, (ours, theirs) in _differing(mine, published).items()
    ]
    job.cfg = OmegaConf.create(published)
    path = Path(job.config_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(job.cfg, path, resolve=True)
    except OSError as error:
        raise os_error(path, error) from None
    return differences


#: Keys that differ from node to node by nature.
OWN_KEYS = ("job_id", "run_id")


def _differing(mine: Any, theirs: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Flattened keys whose values differ (``data.batch_size``: (ours, theirs))."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        found: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(mine) | set(theirs)):
            found.update(_differing(mine.get(key), theirs.get(key), f"{prefix}{key}."))
        return found
    key = prefix.rstrip(".")
    return {} if mine == theirs or key in OWN_KEYS else {key: (mine, theirs)}
