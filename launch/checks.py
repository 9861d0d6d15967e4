"""Checks of a composed config, so bad input fails before any rank starts."""

from __future__ import annotations

import importlib
import os
import socket
from typing import Any

START_METHODS = ("auto", "fork", "spawn", "forkserver")
BACKENDS = ("auto", "gloo", "nccl")
RESUME = ("auto", "never")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and what is accepted."""


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_dist(dist: Any) -> None:
    """Raise ConfigError for the first bad ``dist.*`` value."""
    nproc = dist.nproc_per_node
    if nproc != "auto" and not _positive_int(nproc):
        raise ConfigError(f"dist.nproc_per_node={nproc!r}: expected a positive int or 'auto'")
    if not _positive_int(dist.nnodes):
        raise ConfigError(f"dist.nnodes={dist.nnodes!r}: expected a positive int")
    if not 0 <= dist.node_rank < dist.nnodes:
        raise ConfigError(
            f"dist.node_rank={dist.node_rank!r}: expected 0 to {dist.nnodes - 1} "
            f"(dist.nnodes={dist.nnodes})"
        )
    if dist.backend not in BACKENDS:
        raise ConfigError(f"dist.backend={dist.backend!r}: expected one of {', '.join(BACKENDS)}")
    if dist.max_restarts < 0:
        raise ConfigError(f"dist.max_restarts={dist.max_restarts}: expected 0 or more")
    if dist.start_method not in START_METHODS:
        raise ConfigError(
            f"dist.start_method={dist.start_method!r}: expected one of {', '.join(START_METHODS)}"
        )
    if dist.timeout_s <= 0 or dist.rdzv_timeout_s <= 0:
        raise ConfigError("dist.timeout_s and dist.rdzv_timeout_s must be positive seconds")
    if dist.nnodes > 1 and dist.master_port is None:
        raise ConfigError(
            "dist.master_port is required with dist.nnodes > 1: give every node the same port"
        )
    if dist.master_port is not None and not 1 <= dist.master_port <= 65535:
        raise ConfigError(f"dist.master_port={dist.master_port}: expected 1 to 65535")


def check_port_free(addr: str, port: int) -> None:
    """Fail early, naming the port, when the rendezvous port is taken on this host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((addr, port))
        except OSError as error:
            raise ConfigError(
                f"dist.master_port={port} is busy on {addr} ({error.strerror}): choose a free "
                "port, or leave it unset (null) on a single node"
            ) from None


def check_task(task: Any) -> None:
    """Raise ConfigError for a missing script or an entrypoint that does not import."""
    if task.script is not None and task.entrypoint is not None:
        raise ConfigError("give task.script or task.entrypoint, not both")
    if task.script is not None and not os.path.isfile(task.script):
        raise ConfigError(f"task.script={task.script!r}: no such file")
    if task.entrypoint is not None:
        load_entrypoint(task.entrypoint)


def load_entrypoint(spec: str) -> Any:
    """The function named by ``package.module:function``."""
    module_name, _, function_name = str(spec).partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"task.entrypoint={spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"task.entrypoint={spec!r}: cannot import {module_name!r} ({error})"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(
            f"task.entrypoint={spec!r}: {module_name} has no function {function_name!r}"
        )
    return function


def check_checkpoint(checkpoint: Any) -> None:
    if checkpoint.resume not in RESUME:
        raise ConfigError(
            f"checkpoint.resume={checkpoint.resume!r}: expected one of {', '.join(RESUME)}"
        )
    if not _positive_int(checkpoint.n_saved):
        raise ConfigError(f"checkpoint.n_saved={checkpoint.n_saved!r}: expected a positive int")


def check_config(cfg: Any) -> None:
    """Every check that needs no running rank."""
    check_dist(cfg.dist)
    check_task(cfg.task)
    check_checkpoint(cfg.checkpoint)
    if not _positive_int(cfg.trainer.max_epochs):
        raise ConfigError(f"trainer.max_epochs={cfg.trainer.max_epochs!r}: expected a positive int")


def check_override_keys(overrides: list[str], schema: dict[str, Any]) -> None:
    """Name the accepted keys when an override names an unknown one (``dist.nproc=2``).

    ``schema`` maps a group (``dist``) to its dataclass. Overrides that add
    keys on purpose (``+key=...``) and groups without a schema pass through
    to Hydra, which reports them itself.
    """
    import dataclasses

    for override in overrides:
        key = override.split("=", 1)[0]
        if "=" not in override or key.startswith(("+", "~", "hydra.")) or "." not in key:
            continue
        group, name = key.split(".", 1)
        fields = schema.get(group)
        if fields is None:
            continue
        types = {f.name: str(f.type) for f in dataclasses.fields(fields)}
        if name.split(".")[0] not in types:
            raise ConfigError(f"unknown key {key!r}: {group} accepts {', '.join(types)}")
        _check_type(key, override.split("=", 1)[1], types[name])


_PARSERS = {"int": int, "float": float}


def _check_type(key: str, value: str, type_name: str) -> None:
    """A one-line error for a value that cannot have the key's type (Hydra's is longer)."""
    optional = type_name.startswith("Optional[")
    base = type_name.removeprefix("Optional[").removesuffix("]")
    if optional and value in ("null", "None"):
        return
    if base == "bool":
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return
    parse = _PARSERS.get(base)
    if parse is None:
        return
    try:
        parse(value)
    except ValueError:
        what = "an int" if base == "int" else "a number"
        raise ConfigError(
            f"{key}={value!r}: expected {what}{' or null' if optional else ''}"
        ) from None
