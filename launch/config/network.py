"""Where the nodes meet: ``dist.master_addr`` must resolve, and be this host's on node 0.

Checked before any rank starts, so that an address that cannot work is
refused at once, naming it, instead of a rendezvous that waits out
``dist.rdzv_timeout_s`` and then blames the other nodes. Node 0 listens
there: the address must be one of this host's (a bind answers, as the
rendezvous store's would) and a given ``dist.master_port`` must be free.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from typing import Any

from launch.config.errors import ConfigError


def check_master_address(dist: Mapping[str, Any]) -> None:
    """Refuse a ``dist.master_addr`` that does not resolve, or that node 0 cannot listen on.

    Example::

        check_master_address({"master_addr": "999.1.1.1", "master_port": None,
                              "node_rank": 0, "nnodes": 1})
        # ConfigError: dist.master_addr='999.1.1.1' does not resolve (Name or service not
        # known): give node 0's host name or IP address (127.0.0.1 on a single node)
    """
    addr, port = dist["master_addr"], dist["master_port"]
    try:
        found = socket.getaddrinfo(addr, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(
            f"dist.master_addr={addr!r} does not resolve ({reason}): give node 0's host name "
            "or IP address (127.0.0.1 on a single node)"
        ) from None
    if dist["node_rank"] != 0:
        return
    errors = [_bind(family, sockaddr[0], port) for family, *_, sockaddr in found]
    if all(errors):  # no address of the name can be listened on
        busy = [e for e in errors if e.errno == errno.EADDRINUSE]  # type: ignore[union-attr]
        raise _bind_error(addr, port, (busy or errors)[0])  # type: ignore[arg-type]


def _bind(family: int, host: str, port: int | None) -> OSError | None:
    """The error binding ``host:port`` (any free port when None) raises, or None."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port or 0))
        except OSError as error:
            return error
    return None


def _bind_error(addr: str, port: int | None, error: OSError) -> ConfigError:
    if error.errno == errno.EADDRINUSE:
        return ConfigError(
            f"dist.master_port={port} is busy on {addr} ({error.strerror}): choose a free "
            "port, or leave it unset (null) on a single node"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"dist.master_addr={addr!r} is not an address of this host, and node 0 listens "
            "there: run node 0 on the host it names, or give this host's name or address "
            "(127.0.0.1 on a single node)"
        )
    where = f"{addr}:{port}" if port else addr
    return ConfigError(
        f"dist.master_addr={addr!r}: node 0 cannot listen on {where} ({error.strerror})"
    )
