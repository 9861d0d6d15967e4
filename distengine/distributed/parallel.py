"""PyTorch-Ignite's ``idist.Parallel`` and ``idist.spawn``: one script, one rank or many.

``Parallel(backend, nproc_per_node=N)`` started by a plain ``python main.py``
starts N ranks with torch's own process starter
(``torch.multiprocessing.start_processes``), each joining one process group
made from the environment torchrun would give it. Started by ``torchrun`` or
``python -m launch``, the process is already one rank: ``Parallel`` joins the
job's process group and runs the function here. Otherwise it runs the
function in this process, with no process group.

Example::

    def training(local_rank, config):
        print(idist.get_rank(), "of", idist.get_world_size(), idist.backend())

    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(training, {"lr": 0.1})
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.multiprocessing as mp

from distengine.distributed.env import env_value, get_local_rank, get_world_size, is_distributed
from distengine.distributed.group import TIMEOUT_ENV, finalize, initialize, resolve_backend
from distengine.distributed.info import available_backends

__all__ = ["Parallel", "spawn"]

_LOGGER = "distengine.distributed.Parallel"
_PR_SET_PDEATHSIG = 1


def _free_port(addr: str) -> int:
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


def spawn(
    backend: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs_dict: Mapping[str, Any] | None = None,
    nproc_per_node: int = 1,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    init_method: str | None = None,
    timeout: float | None = None,
    start_method: str | None = None,
    **start_kwargs: Any,
) -> None:
    """Start ``nproc_per_node`` ranks of this node, each running ``fn(local_rank, *args, **kwargs)``
    in a ``backend`` process group; return when all are done.

    Ranks are started by ``torch.multiprocessing.start_processes``, forked
    where CUDA is unavailable (no second import of torch and the script), else
    spawned (``fn`` must then be importable: defined at the top of a module, as
    PyTorch-Ignite asks); ``start_method`` chooses. Each gets torchrun's
    variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ...), so every
    ``idist`` function works in it. Several nodes: run the same call on each
    with its ``node_rank``, the same ``nnodes``, ``master_addr`` and
    ``master_port``. An exception on any rank stops the others and is raised
    here (``torch.multiprocessing.ProcessRaisedException``): the traceback of
    the rank that failed first, then those of ranks that failed after it
    (typically in a collective with the dead rank).

    Example::

        idist.spawn("gloo", train, args=(config,), nproc_per_node=2)
    """
    _check_layout(nproc_per_node, nnodes, node_rank)
    if nnodes > 1 and master_port is None and init_method is None:
        raise ValueError("several nodes need master_addr and master_port (or init_method)")
    layout = {
        "backend": resolve_backend(backend),
        "nproc_per_node": nproc_per_node,
        "nnodes": nnodes,
        "node_rank": node_rank,
        "master_addr": master_addr,
        "master_port": master_port if master_port is not None else _free_port(master_addr),
        "init_method": init_method,
        "timeout": timeout,
    }
    start_kwargs.pop("join", None)  # always joined here: errors must reach the caller
    if start_method is None:  # as the launcher chooses
        start_method = "spawn" if torch.cuda.is_available() else "fork"
    context = mp.start_processes(
        _rank_main,
        args=(fn, tuple(args), dict(kwargs_dict or {}), layout),
        nprocs=nproc_per_node,
        start_method=start_method,
        join=False,
        **start_kwargs,
    )
    try:
        while not context.join():
            pass
    except mp.ProcessRaisedException as seen:
        raise _first_failure(context, seen, node_rank * nproc_per_node) from None


def _first_failure(
    context: Any, seen: mp.ProcessRaisedException, first_rank: int
) -> mp.ProcessRaisedException:
    """The error of the rank that failed first, then the others' (a rank whose peer died
    fails in its next collective; torch reports whichever exit it noticed first)."""
    failures = []
    for index, path in enumerate(context.error_files):
        try:
            with open(path, "rb") as file:
                failures.append((os.path.getmtime(path), index, pickle.load(file)))
        except (OSError, EOFError, pickle.UnpicklingError):
            continue
    if len(failures) < 2:
        return seen
    failures.sort()
    parts = [f"rank {first_rank + i} failed first:\n{text}" for _, i, text in failures[:1]]
    parts += [f"then rank {first_rank + i}:\n{text}" for _, i, text in failures[1:]]
    first = failures[0][1]
    return mp.ProcessRaisedException(
        "\n\n".join(parts), error_index=first, error_pid=context.processes[first].pid
    )


def _check_layout(nproc_per_node: Any, nnodes: Any, node_rank: Any) -> None:
    for name, value in (("nproc_per_node", nproc_per_node), ("nnodes", nnodes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(node_rank, int) or not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be an int in [0, {nnodes - 1}], got {node_rank!r}")


def _die_with_parent() -> None:
    """Ask Linux to kill this rank when the process that started it dies (not elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _rank_main(
    local_rank: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    layout: dict[str, Any],
) -> None:
    """One started rank: torchrun's environment, the process group, ``fn``, then leave."""
    _die_with_parent()  # a killed `python main.py` leaves no rank waiting in a collective
    nproc = layout["nproc_per_node"]
    rank = layout["node_rank"] * nproc + local_rank
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(nproc * layout["nnodes"]),
        LOCAL_WORLD_SIZE=str(nproc),
        GROUP_RANK=str(layout["node_rank"]),
        MASTER_ADDR=str(layout["master_addr"]),
        MASTER_PORT=str(layout["master_port"]),
    )
    if layout["timeout"] is not None:
        os.environ[TIMEOUT_ENV] = str(float(layout["timeout"]))
    _join(layout["backend"], layout["init_method"])
    try:
        fn(local_rank, *args, **kwargs)
    finally:
        finalize()


def _join(backend: str, init_method: str | None) -> None:
    """Make the process group from this process's environment (a no-op with world size 1)."""
    if init_method is None:
        initialize(backend)
    else:
        initialize(
            backend,
            init_method=init_method,
            rank=env_value("rank"),
            world_size=env_value("world_size"),
        )


class Parallel:
    """Run a training function on one rank or many, as PyTorch-Ignite's ``idist.Parallel``.

    - ``nproc_per_node`` given (and ``backend``): :meth:`run` starts that many
      ranks on this node (:func:`spawn`); with ``nnodes > 1`` each node runs
      the script with its ``node_rank`` and the same ``master_addr`` and
      ``master_port``. Given inside a job that already has several ranks
      (torchrun, ``python -m launch``), it is refused: drop it there.
    - otherwise, inside such a job: entering joins the job's process group
      (``backend``, or ``auto``: nccl with GPUs, else gloo); leaving destroys
      it if it was made here.
    - otherwise: the function runs in this process, with no process group.

    :meth:`run` calls ``func(local_rank, *args, **kwargs)``; an exception on any
    rank reaches the caller. ``spawn_kwargs`` go to :func:`spawn`
    (``start_method``, ``timeout``).

    Example::

        # python main.py                   -> 2 ranks started here
        # torchrun --nproc_per_node=2 ...  -> joins torchrun's 2 ranks (drop nproc_per_node)
        with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
            parallel.run(training, config)
    """

    def __init__(
        self,
        backend: str | None = None,
        nproc_per_node: int | None = None,
        nnodes: int | None = None,
        node_rank: int | None = None,
        master_addr: str | None = None,
        master_port: int | None = None,
        init_method: str | None = None,
        **spawn_kwargs: Any,
    ) -> None:
        if backend is not None and backend not in (*available_backends(), "auto"):
            raise ValueError(
                f"backend must be one of {available_backends()} (or None), got {backend!r}"
            )
        given = {
            "nproc_per_node": nproc_per_node,
            "nnodes": nnodes,
            "node_rank": node_rank,
            "master_addr": master_addr,
            "master_port": master_port,
        }
        if backend is None:
            named = {k: v for k, v in given.items() if v is not None}
            if named:
                raise ValueError(f"{named} need a backend (e.g. backend='gloo'); none was given")
        self.backend = backend
        self.init_method = init_method
        self._spawn_params: dict[str, Any] | None = None
        if backend is not None and nproc_per_node is not None:
            self._spawn_params = self._spawn_layout(given, spawn_kwargs)
        self._made_group = False
        self._logger = logging.getLogger(_LOGGER)

    def _spawn_layout(self, given: dict[str, Any], spawn_kwargs: dict[str, Any]) -> dict[str, Any]:
        if get_world_size() > 1:
            raise ValueError(
                f"nproc_per_node={given['nproc_per_node']}: this process is already one of "
                f"{get_world_size()} ranks started by a launcher (torchrun, python -m launch); "
                "drop nproc_per_node to run in its ranks"
            )
        nnodes = given["nnodes"] if given["nnodes"] is not None else 1
        node_rank = given["node_rank"]
        if node_rank is None and nnodes > 1:
            raise ValueError(f"nnodes={nnodes} needs node_rank (this node's index)")
        _check_layout(given["nproc_per_node"], nnodes, node_rank or 0)
        if (
            nnodes > 1
            and self.init_method is None
            and None
            in (
                given["master_addr"],
                given["master_port"],
            )
        ):
            raise ValueError(
                f"nnodes={nnodes} needs master_addr and master_port (or init_method): "
                f"got master_addr={given['master_addr']!r}, master_port={given['master_port']!r}"
            )
        params = {**given, "nnodes": nnodes, "node_rank": node_rank or 0}
        params["init_method"] = self.init_method
        params.update(spawn_kwargs)
        return {k: v for k, v in params.items() if v is not None}

    def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``func(local_rank, *args, **kwargs)`` on every rank (started here or joined)."""
        if self._spawn_params is not None:
            n = self._spawn_params["nproc_per_node"]
            self._logger.info("starting %d ranks (%s) running %s", n, self.backend, func.__name__)
            spawn(self.backend, func, args, kwargs, **self._spawn_params)  # type: ignore[arg-type]
            return
        func(get_local_rank(), *args, **kwargs)

    def __enter__(self) -> Parallel:
        if self._spawn_params is None and get_world_size() > 1 and not is_distributed():
            _join(self.backend or "auto", self.init_method)
            self._made_group = is_distributed()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._made_group:
            finalize()
            self._made_group = False
