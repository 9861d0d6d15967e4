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
from launch.config.errors import ConfigError
from launch.config.nodes import max_nodes, node_range
from launch.job import forkserver, rendezvous
from launch.job.attempts import FirstFailures, JobLogs, print_restart, what_failed
from launch.job.console import Console
from launch.job.folder import RunFolder
from launch.job.meet import Meeting, meet
from launch.job.membership import finish, joined_line, membership_line
from launch.job.nodes import Nodes
from launch.job.outcome import (
    Outcome,
    after_agent_error,
    after_failure,
    after_stop,
    after_success,
)
from launch.job.reaper import Groups
from launch.job.signals import AGENT_SIGNALS, StopSignals, first_message
from launch.job.streams import Follower
from launch.rank import progress
from launch.rank.progress import PROGRESS_ENV
from launch.rank.shared import ROUND_ENV


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


def _environment(nproc: int, single_node: bool) -> None:
    """What every rank inherits: threads per rank and a store of its own per attempt; on one
    node, gloo's connections on loopback (``GLOO_SOCKET_IFNAME``, unless you set it).

    With the agent's TCPStore shared across restarts, a restarted rank can read
    keys of the previous attempt and connect to a dead peer (pytorch#135712).
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // nproc, 1)))
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    if single_node and "lo" in {name for _, name in socket.if_nameindex()}:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


#: Seconds without a heartbeat before the rendezvous counts a node as gone (1 s x 5).
KEEP_ALIVE_S, KEEP_ALIVE_MISSES = 1, 5
#: An elastic job's rendezvous waits this long for more nodes once MIN are there.
LAST_CALL_S = 5


def launch_config(cfg: Any, nproc: int, meeting: Meeting, logs: JobLogs) -> LaunchConfig:
    """torchrun's LaunchConfig for this job: c10d rendezvous on the job's own store
    (:mod:`launch.job.rendezvous`), per-rank logs in the run folder."""
    dist = cfg.dist
    low, high = node_range(dist.nnodes)
    timeout = int(math.ceil(dist.rdzv_timeout_s))
    rendezvous.register()
    return LaunchConfig(
        min_nodes=low,
        max_nodes=high,
        nproc_per_node=nproc,
        run_id=f"distengine-{meeting.endpoint}" if high > 1 else uuid.uuid4().hex,
        rdzv_backend=rendezvous.BACKEND,
        rdzv_endpoint=meeting.endpoint,
        rdzv_configs={
            "store": meeting.store,
            "watcher": meeting.nodes,
            "timeout": timeout,
            "join_timeout": timeout,
            "read_timeout": timeout,
            "last_call_timeout": LAST_CALL_S,
            "keep_alive_interval": KEEP_ALIVE_S,
            "keep_alive_max_attempt": KEEP_ALIVE_MISSES,
        },
        max_restarts=dist.max_restarts,
        monitor_interval=0.1,
        log_line_prefix_template="[rank${rank}] ",
        start_method=start_method(cfg),
        logs_specs=logs,
        local_addr=meeting.local_addr,
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
    """What the launcher does as each attempt (each round of the rendezvous) starts.

    See :class:`JobLogs`: the agent calls it after the rendezvous, before the
    ranks start. The previous ranks' process groups are ended; a restart is
    said (or a stop, asked for before it, ends the job here); on several nodes,
    which global ranks this node hosts, and on an elastic job, who left or joined.
    """

    def __init__(
        self, job: Job, deadline: rendezvous.Deadline, console: Console, log_dir: Path
    ) -> None:
        self.job, self.deadline, self.console = job, deadline, console
        self.failures = FirstFailures()
        self.previous: Path | None = None
        self.stops: StopSignals | None = None
        self.nodes: Nodes | None = None
        self.groups = Groups(log_dir / ".ranks")
        self.progress = log_dir / ".progress"
        self.offsets: list[int] = []  # global rank of local rank 0, per attempt
        self.rounds = 0

    @property
    def offset(self) -> int:
        return self.offsets[-1] if self.offsets else 0

    def environment(self) -> None:
        """What the ranks need to be followed: their pid records, their progress file."""
        self.groups.environment()
        self.progress.unlink(missing_ok=True)
        os.environ[PROGRESS_ENV] = str(self.progress)

    def follow(self, follower: Follower) -> Any:
        """``follower.attempt``, remembering each attempt's global rank of local rank 0."""

        def attempt(number: int, files: dict[int, tuple[str, str]]) -> None:
            self.offsets.append(min(files) if files else 0)
            follower.attempt(number, files)

        return attempt

    def say(self, line: str) -> None:
        self.console.line(line, err=True)

    def __call__(self, attempt: int, folder: Path) -> None:
        self.deadline.met()
        if self.stops is not None:
            self.stops.ranks_starting()
        self.rounds += 1
        os.environ[ROUND_ENV] = str(self.rounds - 1)  # the ranks take the job's highest
        reached = progress.reached(self.progress)
        self.groups.end()
        if self.rounds > 1:
            self._restart(attempt, reached)
        elif self.nodes is not None:
            self.say(joined_line(self.nodes))
        self.previous = folder

    def _restart(self, attempt: int, reached: int | None) -> None:
        job, nodes = self.job, self.nodes
        changed = nodes is not None and bool(nodes.left() or nodes.joined())
        asked = self.stops is not None and self.stops.first is not None
        if asked or (job.folder.read_stop() is not None and not changed):
            raise StopRequested
        newest = job.folder.newest_checkpoint(job.cfg.run_id)
        if changed and nodes is not None:
            if job.cfg.dist.node_rank == 0:
                job.folder.clear_stop()  # the ranks stopped to let a node in, not for good
            self.say(membership_line(nodes, job.kind, newest, reached))
        else:
            previous = self.offsets[-2] if len(self.offsets) > 1 else self.offset
            what = what_failed(self.previous, self.failures.last, previous)
            then = f"the {job.kind} starts again"
            if job.kind == "recipe":
                then = "the ranks resume from this run's newest valid checkpoint"
            if newest is not None:
                then += f" (newest: {newest[0]}, iteration {newest[1]})"
            print_restart(attempt, job.cfg.dist.max_restarts, what, then, self.say)
        self.failures.last = None


def run_job(job: Job) -> Outcome:
    """Meet the other nodes, start every local rank, wait for them, and say how the job ended."""
    cfg = job.cfg
    port = cfg.dist.master_port if cfg.dist.master_port is not None else free_port()
    endpoint = f"{cfg.dist.master_addr}:{port}"
    log_dir = job.folder.path / "logs"
    if max_nodes(cfg.dist.nnodes) > 1:
        log_dir = log_dir / f"node{cfg.dist.node_rank}"
    deadline = rendezvous.Deadline(
        cfg.dist.rdzv_timeout_s + rendezvous.MARGIN_S,
        rendezvous.waiting_for(cfg.dist, endpoint),
        log_dir / "rendezvous.log",
    )
    deadline.start()
    try:
        meeting = meet(job, port)
    except Exception as error:
        deadline.met()
        if isinstance(error, OSError) and not rendezvous.is_rendezvous_error(error):
            raise ConfigError(f"cannot listen on {endpoint}: {error}") from None
        if not (rendezvous.is_rendezvous_error(error) or isinstance(error, TimeoutError)):
            raise
        return Outcome(
            exit_codes.FAILED,
            f"error: {rendezvous.waiting_for(cfg.dist, endpoint)} (log: {deadline.log})",
        )
    try:
        return _run_ranks(job, meeting, deadline, log_dir)
    finally:
        deadline.met()
        if meeting.nodes is not None:
            meeting.nodes.stop()


def _run_ranks(job: Job, meeting: Meeting, deadline: rendezvous.Deadline, log_dir: Path) -> Outcome:
    cfg = job.cfg  # node 0's, on every node
    nproc = nproc_per_node(cfg.dist.nproc_per_node)
    warning = oversubscription(nproc)
    if warning:
        deadline.say(warning)  # the rendezvous's stderr still goes to its log
    _environment(nproc, single_node=max_nodes(cfg.dist.nnodes) == 1)
    console = Console(sys.stdout, sys.stderr)
    os.environ.update(console.environment())  # how the ranks draw their progress bars
    for difference in meeting.differences:
        deadline.say(f"note: node 0's config is the job's: {difference}")
    follower = Follower(console, log_dir, everything=cfg.dist.console == "all")
    attempts = _Attempts(job, deadline, console, log_dir)
    attempts.environment()
    if meeting.nodes is not None:
        meeting.nodes.nproc = nproc
        meeting.nodes.announce = attempts.say
        attempts.nodes = meeting.nodes.start()
    logs = JobLogs(log_dir, attempts, attempts.follow(follower))
    config = launch_config(cfg, nproc, meeting, logs)
    entrypoint, args = _entrypoint(config.start_method, job.config_path)
    quiet_agent()
    attempts.failures.install()
    first = first_message(job.kind)
    say = lambda line: console.line(line, err=True)  # noqa: E731
    grace = float(cfg.dist.shutdown_grace_s)
    with StopSignals(first, grace, say, finished=logs.finished_pids) as stops:
        attempts.stops = stops
        try:
            outcome = _outcome(job, config, entrypoint, args, stops, attempts, logs, meeting)
        finally:
            follower.close()
            attempts.groups.end()
    return finish(outcome, meeting.nodes, say)


def _outcome(
    job: Job,
    config: LaunchConfig,
    entrypoint: Any,
    args: list[str],
    stops: StopSignals,
    attempts: _Attempts,
    logs: JobLogs,
    meeting: Meeting,
) -> Outcome:
    """Run the agent; how the job ended, in the launcher's words."""
    cfg = job.cfg
    try:
        elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as error:
        failures = {f.local_rank: f for f in error.failures.values()}
        last = logs.attempts[-1] if logs.attempts else None
        if stops.first is not None:
            codes = {local: f.exitcode for local, f in failures.items()}
            return after_stop(job.folder, stops.stop, job.resume_command, cfg.run_id, codes, last)
        return after_failure(
            failures, last, job.folder, job.resume_command, attempts.offset, cfg.run_id
        )
    except StopRequested:
        last = logs.attempts[-1] if logs.attempts else None
        return after_stop(job.folder, stops.stop, job.resume_command, cfg.run_id, attempt=last)
    except Exception as error:
        last = logs.attempts[-1] if logs.attempts else None
        if not rendezvous.is_rendezvous_error(error):
            known = after_agent_error(error, last, job.folder, attempts.offset)
            if known is None:
                raise
            return known
        if meeting.nodes is not None and meeting.nodes.store_gone():
            return Outcome(exit_codes.FAILED, f"error: {meeting.nodes.store_gone_line()}")
        if logs.attempts:  # the nodes had met: one left during a restart
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return Outcome(exit_codes.FAILED, f"error: the rendezvous failed: {first}")
        endpoint = meeting.endpoint
        return Outcome(
            exit_codes.FAILED,
            f"error: {rendezvous.waiting_for(cfg.dist, endpoint)} (log: {attempts.deadline.log})",
        )
    return after_success(stops.stop, logs.attempts[-1] if logs.attempts else None)
