"""Where the job's c10d stores listen: loopback on one node, the address named across nodes.

A TCPStore server listens on every interface (``*:PORT``) and answers
anyone who connects, without authentication. The launcher opens the
listening socket itself, on one address, and hands it to the store
(``master_listen_fd``): the rendezvous store on node 0 (:func:`host`), and
rank 0's store (:mod:`launch.rank.store`), which torch's own
``init_process_group`` then shares (a multi-tenant TCPStore for a port
this process already serves reuses that server).

- one node: ``127.0.0.1``; nothing outside the machine can reach a store;
- several nodes: node 0 listens on ``dist.master_addr`` (the address every
  node was told to reach); each node is known to the others by the address
  it reaches node 0 from (:func:`node_address`), which is where rank 0's
  store listens when that node hosts rank 0.

Example::

    store = host("127.0.0.1", 29500, timeout_s=120)   # node 0
    store = join("10.0.0.1", 29500, timeout_s=120)    # another node
"""

from __future__ import annotations

import ipaddress
import socket
from datetime import timedelta
from typing import Any

from launch.config.errors import ConfigError

LOOPBACK = "127.0.0.1"
BACKLOG = 2048


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The first TCP address ``host`` resolves to here (family, address)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return family, str(address[0])


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def store_address(master_addr: str, port: int, nnodes: int) -> str:
    """Where node 0's rendezvous store listens: loopback on one node, else ``master_addr``.

    A name that resolves to a loopback address here (a hostname that
    ``/etc/hosts`` maps to ``127.0.1.1``) could not be reached by other nodes:
    refused by name, unless it is a loopback name on purpose (all nodes on
    this machine).
    """
    if nnodes <= 1:
        return LOOPBACK
    address = resolve(master_addr, port)[1]
    if is_loopback(address) and not (is_loopback(master_addr) or master_addr == "localhost"):
        raise ConfigError(
            f"dist.master_addr={master_addr!r} resolves to {address} on node 0, a loopback "
            "address the other nodes cannot reach: give node 0's network address (its IP)"
        )
    return address


def node_address(master_addr: str, port: int, nnodes: int) -> str:
    """This node's address as the others reach it: the one it reaches node 0 from.

    Found by asking the kernel which source address it would use towards
    node 0 (a UDP ``connect`` sends nothing). Loopback on one node.
    """
    if nnodes <= 1:
        return LOOPBACK
    family, address = resolve(master_addr, port)
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((address, port))
        return str(probe.getsockname()[0])


def listening_socket(address: str, port: int) -> int:
    """A socket listening on ``address:port`` only; its descriptor (the store owns it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock.detach()


def host(address: str, port: int, timeout_s: float) -> Any:
    """A TCPStore server on ``address:port`` only (and a client of it)."""
    from torch.distributed import TCPStore

    return TCPStore(
        address,
        port,
        is_master=True,
        multi_tenant=True,
        wait_for_workers=False,
        timeout=timedelta(seconds=timeout_s),
        master_listen_fd=listening_socket(address, port),
    )


def join(address: str, port: int, timeout_s: float) -> Any:
    """A client of the store at ``address:port`` (waits up to ``timeout_s`` for it)."""
    from torch.distributed import TCPStore

    return TCPStore(
        address, port, is_master=False, wait_for_workers=False, timeout=timedelta(seconds=timeout_s)
    )
