"""Checks of a composed config's fixed groups, so bad input fails before any rank starts.

Every check raises :class:`ConfigError` with the key, the bad value and what
is accepted. None of them imports torch (they run before the busy-folder
check, which must answer fast).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from launch.config.errors import ConfigError
from launch.config.schema import GROUPS, SET_BY_LAUNCHER, TARGET_GROUPS, Config

START_METHODS = ("auto", "fork", "spawn", "forkserver")
BACKENDS = ("auto", "gloo", "nccl")
RESUME = ("auto", "never")
CONSOLES = ("rank0", "all")
SEED_RANGE = (0, 2**32 - 1)  # numpy's seeds; torch and random accept these too


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def non_negative_int(value: Any) -> bool:
    return _is_int(value) and value >= 0


def positive_number(value: Any) -> bool:
    return _is_number(value) and value > 0


def non_negative_number(value: Any) -> bool:
    return _is_number(value) and value >= 0


def one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda value: value in choices


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


#: key -> (test, what is accepted); one line per value with a range.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dist.nproc_per_node": (lambda v: v == "auto" or positive_int(v), "a positive int or 'auto'"),
    "dist.nnodes": (positive_int, "a positive int"),
    "dist.node_rank": (non_negative_int, "an int from 0 to dist.nnodes - 1"),
    "dist.master_addr": (lambda v: isinstance(v, str) and v != "", "a host name or address"),
    "dist.master_port": (lambda v: v is None or (_is_int(v) and 1 <= v <= 65535), "1 to 65535"),
    "dist.backend": (one_of(*BACKENDS), f"one of {', '.join(BACKENDS)}"),
    "dist.max_restarts": (non_negative_int, "0 or more"),
    "dist.timeout_s": (positive_number, "positive seconds"),
    "dist.rdzv_timeout_s": (positive_number, "positive seconds"),
    "dist.shutdown_grace_s": (non_negative_number, "0 or more seconds"),
    "dist.start_method": (one_of(*START_METHODS), f"one of {', '.join(START_METHODS)}"),
    "dist.console": (one_of(*CONSOLES), f"one of {', '.join(CONSOLES)}"),
    "checkpoint.resume": (one_of(*RESUME), f"one of {', '.join(RESUME)}"),
    "checkpoint.n_saved": (positive_int, "a positive int"),
    "checkpoint.every_iters": (non_negative_int, "0 (only at epoch ends) or a positive int"),
    "trainer.max_epochs": (positive_int, "a positive int"),
    "trainer.seed": (
        lambda v: _is_int(v) and SEED_RANGE[0] <= v <= SEED_RANGE[1],
        f"an int from {SEED_RANGE[0]} to {SEED_RANGE[1]}",
    ),
    "trainer.amp": (is_bool, "true or false"),
    "trainer.validate_every": (positive_int, "a positive int (epochs)"),
    "trainer.log_every": (positive_int, "a positive int (iterations)"),
    "trainer.progress_bar": (is_bool, "true or false"),
}


def check_keys(cfg: Mapping[str, Any]) -> None:
    """Refuse keys the schema does not have (``+trainer.foo=1``, ``+anything=1``)."""
    top = [f.name for f in dataclasses.fields(Config)]
    for key in cfg:
        if key not in top:
            shown = ", ".join(k for k in top if k not in SET_BY_LAUNCHER)
            raise ConfigError(f"unknown key {key!r}: the config has {shown}")
    for group, schema in GROUPS.items():
        names = [f.name for f in dataclasses.fields(schema)]
        for key in cfg[group] or {}:
            if key not in names:
                raise ConfigError(
                    f"unknown key '{group}.{key}': {group} accepts {', '.join(names)}"
                )
    for group in TARGET_GROUPS:
        node = cfg[group]
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"{group}: expected a config with a _target_, got {node!r}")


def check_values(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first value outside its range (see :data:`RULES`)."""
    for key, (test, accepted) in RULES.items():
        group, name = key.split(".")
        value = cfg[group][name]
        if not test(value):
            raise ConfigError(f"{key}={value!r}: expected {accepted}")
    dist = cfg["dist"]
    if dist["node_rank"] >= dist["nnodes"]:
        raise ConfigError(
            f"dist.node_rank={dist['node_rank']!r}: expected 0 to {dist['nnodes'] - 1} "
            f"(dist.nnodes={dist['nnodes']})"
        )
    if dist["nnodes"] > 1 and dist["master_port"] is None:
        raise ConfigError(
            "dist.master_port is required with dist.nnodes > 1: give every node the same port"
        )


def check_task(task: Mapping[str, Any]) -> None:
    """A script that exists, or an entrypoint written ``package.module:function``.

    That the entrypoint imports is checked by :func:`launch.config.targets.load_entrypoint`.
    """
    if task["script"] is not None and task["entrypoint"] is not None:
        raise ConfigError("give task.script or task.entrypoint, not both")
    if task["script"] is not None and not os.path.isfile(task["script"]):
        raise ConfigError(f"task.script={task['script']!r}: no such file")
    if task["args"] and task["script"] is None:
        raise ConfigError("task.args are passed to task.script; give task.script too")
    spec = task["entrypoint"]
    if spec is not None:
        module, _, function = str(spec).partition(":")
        if not module or not function:
            raise ConfigError(f"task.entrypoint={spec!r}: expected 'package.module:function'")


def check_port_free(dist: Mapping[str, Any]) -> None:
    """Node 0's rendezvous port must be free on this host (it listens there)."""
    addr, port = dist["master_addr"], dist["master_port"]
    if port is None or dist["node_rank"] != 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((addr, port))
        except OSError as error:
            raise ConfigError(
                f"dist.master_port={port} is busy on {addr} ({error.strerror}): choose a free "
                "port, or leave it unset (null) on a single node"
            ) from None


def check_config(cfg: Mapping[str, Any]) -> None:
    """Every check of the fixed groups that needs neither torch nor a running rank."""
    check_keys(cfg)
    check_values(cfg)
    check_task(cfg["task"])
