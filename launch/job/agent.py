"""Start the ranks through torch.distributed's elastic agent, as torchrun does, and report.

The agent rendezvouses with the other nodes (c10d), starts the local ranks,
restarts them all after a failure (``dist.max_restarts``) and stops them on
a signal. This module configures it, says what happened at each restart,
and turns how the job ended into an :class:`~launch.job.outcome.Outcome`.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.distributed.run import determine_local_world_size

from launch import exit_codes
from launch.job import forkserver, rendezvous
from launch.job.attempts import FirstFailures, JobLogs, print_restart, what_failed
from launch.job.console import Console
from launch.job.folder import RunFolder
from launch.job.outcome import (
    Outcome,
    after_agent_error,
    after_failure,
    after_stop,
    after_success,
)
from launch.job.signals import AGENT_SIGNALS, StopSignals, first_message
from launch.job.streams import Follower


@dataclass
class Job:
    """One launch: its config, its run folder (held), its resolved config file."""

    cfg: Any
    folder: RunFolder
    config_path: Path
    resume_command: str

    @property
    def kind(self) -> str:
        """``recipe``, ``script`` or ``entrypoint``."""
        task = self.cfg.task
        return "script" if task.script else "entrypoint" if task.entrypoint else "recipe"


class StopRequested(Exception):
    """The ranks were asked to stop (a signal, or they wrote stop.json): no restart."""


def free_port(addr: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


def nproc_per_node(value: Any) -> int:
    """``auto``: one rank per GPU, else torchrun's own rule (one per CPU core)."""
    return determine_local_world_size(str(value))


def start_method(cfg: Any) -> str:
    """``auto``: fork on CPU (no second torch import), the forkserver where CUDA is visible
    (a forked rank cannot use CUDA; see :mod:`launch.job.forkserver`)."""
    if cfg.dist.start_method != "auto":
        return cfg.dist.start_method
    import torch

    return "forkserver" if torch.cuda.is_available() else "fork"


def oversubscription(nproc: int) -> str | None:
    """A warning when CPU ranks outnumber this machine's cores."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if torch.cuda.is_available() or nproc <= (cores or 1):
        return None
    return (
        f"warning: {nproc} ranks on {cores} CPU core{'s' if cores != 1 else ''} "
        f"(dist.nproc_per_node={nproc}): each rank gets a fraction of a core, so starting "
        "and every step will be slow; dist.nproc_per_node=auto starts one rank per core"
    )


def _environment(nproc: int) -> None:
    """What every rank inherits: threads per rank and a store of its own per attempt.

    With the agent's TCPStore shared across restarts, a restarted rank can read
    keys of the previous attempt and connect to a dead peer (pytorch#135712).
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // nproc, 1)))
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")


def launch_config(cfg: Any, nproc: int, port: int, logs: JobLogs) -> LaunchConfig:
    """torchrun's LaunchConfig for this job: c10d rendezvous, per-rank logs in the run folder."""
    dist = cfg.dist
    return LaunchConfig(
        min_nodes=dist.nnodes,
        max_nodes=dist.nnodes,
        nproc_per_node=nproc,
        run_id=f"distengine-{dist.master_addr}-{port}" if dist.nnodes > 1 else uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint=f"{dist.master_addr}:{port}",
        rdzv_configs={
            "is_host": dist.node_rank == 0,
            "timeout": int(math.ceil(dist.rdzv_timeout_s)),
            "join_timeout": int(math.ceil(dist.rdzv_timeout_s)),
            "read_timeout": int(math.ceil(dist.rdzv_timeout_s)),
        },
        max_restarts=dist.max_restarts,
        monitor_interval=0.1,
        log_line_prefix_template="[rank${rank}] ",
        start_method=start_method(cfg),
        logs_specs=logs,
        local_addr=dist.master_addr if dist.master_addr in ("127.0.0.1", "localhost") else None,
        signals_to_handle=AGENT_SIGNALS,
        shutdown_timeout=int(math.ceil(dist.shutdown_grace_s)),
    )


def quiet_agent() -> None:
    """The agent's own warnings and failure tables repeat what the launcher's summary says."""
    prefixes = ("torch.distributed", "torch.multiprocessing")
    names = [n for n in logging.root.manager.loggerDict if n.startswith(prefixes)]
    for name in ["torch.distributed.elastic", "torch.multiprocessing.spawn", *names]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _entrypoint(method: str, config_path: Path) -> tuple[Any, list[str]]:
    """A function for forked ranks (from the launcher or the forkserver: no second
    ``import torch``), else a new interpreter."""
    if method in ("fork", "forkserver"):
        from launch.rank import main

        if method == "forkserver":
            forkserver.ensure_running()  # already started early, as a rule
        return main, [str(config_path)]
    return sys.executable, ["-u", "-m", "launch.rank", str(config_path)]


class _Attempts:
    """What the launcher does as each attempt starts (see :class:`JobLogs`)."""

    def __init__(
        self, job: Job, deadline: rendezvous.Deadline, offset: int, console: Console
    ) -> None:
        self.job, self.deadline, self.offset, self.console = job, deadline, offset, console
        self.failures = FirstFailures()
        self.previous: Path | None = None
        self.stops: StopSignals | None = None

    def __call__(self, attempt: int, folder: Path) -> None:
        self.deadline.met()
        if self.stops is not None:
            self.stops.ranks_starting()
        if attempt > 0:
            asked = self.stops is not None and self.stops.first is not None
            if asked or self.job.folder.read_stop() is not None:
                raise StopRequested
            what = what_failed(self.previous, self.failures.last, self.offset)
            then = f"the {self.job.kind} starts again"
            if self.job.kind == "recipe":
                then = "the ranks resume from this run's newest valid checkpoint"
            newest = self.job.folder.newest_checkpoint(self.job.cfg.run_id)
            if newest is not None:
                then += f" (newest: {newest[0]}, iteration {newest[1]})"
            say = lambda line: self.console.line(line, err=True)  # noqa: E731
            print_restart(attempt, self.job.cfg.dist.max_restarts, what, then, say)
            self.failures.last = None
        self.previous = folder


def run_job(job: Job) -> Outcome:
    """Start every local rank, wait for them, and say how the job ended."""
    cfg = job.cfg
    nproc = nproc_per_node(cfg.dist.nproc_per_node)
    warning = oversubscription(nproc)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    _environment(nproc)
    port = cfg.dist.master_port if cfg.dist.master_port is not None else free_port()
    endpoint = f"{cfg.dist.master_addr}:{port}"
    log_dir = job.folder.path / "logs"
    if cfg.dist.nnodes > 1:
        log_dir = log_dir / f"node{cfg.dist.node_rank}"
    deadline = rendezvous.Deadline(
        cfg.dist.rdzv_timeout_s + rendezvous.MARGIN_S,
        rendezvous.waiting_for(cfg.dist, endpoint),
        log_dir / "rendezvous.log",
    )
    offset = cfg.dist.node_rank * nproc
    console = Console(sys.stdout, sys.stderr)
    os.environ.update(console.environment())  # how the ranks draw their progress bars
    follower = Follower(console, log_dir, everything=cfg.dist.console == "all")
    attempts = _Attempts(job, deadline, offset, console)
    logs = JobLogs(log_dir, attempts, follower.attempt)
    config = launch_config(cfg, nproc, port, logs)
    entrypoint, args = _entrypoint(config.start_method, job.config_path)
    quiet_agent()
    attempts.failures.install()
    first = first_message(job.kind)
    say = lambda line: console.line(line, err=True)  # noqa: E731
    grace = float(cfg.dist.shutdown_grace_s)
    with StopSignals(first, grace, say, finished=logs.finished_pids) as stops:
        attempts.stops = stops
        deadline.start()
        try:
            elastic_launch(config, entrypoint)(*args)
        except ChildFailedError as error:
            failures = {f.local_rank: f for f in error.failures.values()}
            last = logs.attempts[-1] if logs.attempts else None
            if stops.first is not None:
                codes = {local: f.exitcode for local, f in failures.items()}
                command = job.resume_command
                return after_stop(job.folder, stops.stop, command, cfg.run_id, codes, last)
            return after_failure(failures, last, job.folder, job.resume_command, offset, cfg.run_id)
        except StopRequested:
            last = logs.attempts[-1] if logs.attempts else None
            command = job.resume_command
            return after_stop(job.folder, stops.stop, command, cfg.run_id, attempt=last)
        except Exception as error:
            if not rendezvous.is_rendezvous_error(error):
                last = logs.attempts[-1] if logs.attempts else None
                known = after_agent_error(error, last, job.folder, offset)
                if known is None:
                    raise
                return known
            if logs.attempts:  # the nodes had met: one left during a restart
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                return Outcome(exit_codes.FAILED, f"error: the rendezvous failed: {first}")
            return Outcome(
                exit_codes.FAILED,
                f"error: {rendezvous.waiting_for(cfg.dist, endpoint)} (log: {deadline.log})",
            )
        finally:
            deadline.met()
            follower.close()
    return after_success(stops.stop, logs.attempts[-1] if logs.attempts else None)
