"""Start the ranks through torch.distributed's elastic agent, as torchrun does."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.distributed.run import determine_local_world_size

from distengine.handlers.preemption import EXIT_PREEMPTED
from launch import worker
from launch.failures import summarize

PREEMPTED_MESSAGE = (
    f"The ranks stopped at an iteration boundary and saved a checkpoint (exit code "
    f"{EXIT_PREEMPTED}); run the same command again to resume."
)


class JobFailed(RuntimeError):
    """A rank failed (after any restarts); the message is the launcher's summary."""

    def __init__(self, summary: str, exitcode: int) -> None:
        super().__init__(summary)
        self.exitcode = exitcode


def free_port(addr: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


def nproc_per_node(value: Any) -> int:
    """``auto``: one rank per GPU, else torchrun's own rule (one per CPU core)."""
    return determine_local_world_size(str(value))


def start_method(cfg: Any) -> str:
    if cfg.dist.start_method != "auto":
        return cfg.dist.start_method
    import torch

    return "spawn" if torch.cuda.is_available() else "fork"


def _restart_safe_store() -> None:
    """Give each attempt's ranks a store of their own (not the agent's shared one).

    With the agent's TCPStore shared across restarts, a restarted rank can read
    keys of the previous attempt and connect to a dead peer (pytorch#135712).
    """
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")


def _threads_per_rank(nproc: int) -> None:
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max((os.cpu_count() or 1) // nproc, 1))


def launch_config(cfg: Any, run_dir: Path) -> LaunchConfig:
    """torchrun's LaunchConfig for this job: c10d rendezvous, per-rank logs in the run folder."""
    dist = cfg.dist
    nproc = nproc_per_node(dist.nproc_per_node)
    port = dist.master_port if dist.master_port is not None else free_port(dist.master_addr)
    tee = {0: Std.ALL} if dist.node_rank == 0 else {}
    return LaunchConfig(
        min_nodes=dist.nnodes,
        max_nodes=dist.nnodes,
        nproc_per_node=nproc,
        run_id=f"distengine-{dist.master_addr}-{port}" if dist.nnodes > 1 else uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint=f"{dist.master_addr}:{port}",
        rdzv_configs={
            "is_host": dist.node_rank == 0,
            "timeout": int(dist.rdzv_timeout_s),
            "join_timeout": int(dist.rdzv_timeout_s),
        },
        max_restarts=dist.max_restarts,
        monitor_interval=0.1,
        log_line_prefix_template="[rank${rank}] ",
        start_method=start_method(cfg),
        logs_specs=DefaultLogsSpecs(log_dir=str(run_dir / "logs"), redirects=Std.ALL, tee=tee),
        local_addr=dist.master_addr if dist.master_addr in ("127.0.0.1", "localhost") else None,
    )


def run_job(cfg: Any, run_dir: Path, config_path: Path) -> None:
    """Start every local rank and wait; raise JobFailed with a summary if a rank fails."""
    config = launch_config(cfg, run_dir)
    _threads_per_rank(config.nproc_per_node)
    _restart_safe_store()
    script_args = [str(cfg.task.script), *map(str, cfg.task.args)] if cfg.task.script else []
    if cfg.task.script and config.start_method == "fork":
        entrypoint: Any = worker.run_script  # no second `import torch` per rank
        args = script_args
    elif cfg.task.script:
        entrypoint, args = sys.executable, ["-u", "-m", "launch.run_script", *script_args]
    else:
        entrypoint, args = worker.main, [str(config_path)]
    # the agent's own failure tables repeat every traceback; the summary below replaces them
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    offset = cfg.dist.node_rank * config.nproc_per_node
    try:
        elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as error:
        codes = {f.exitcode for f in error.failures.values()}
        if codes == {EXIT_PREEMPTED}:
            raise JobFailed(PREEMPTED_MESSAGE, EXIT_PREEMPTED) from None
        raise JobFailed(summarize(error, run_dir / "logs", global_offset=offset), 1) from None
    except SignalException as signal_error:
        # the agent stopped the ranks with the same signal; they saved a checkpoint if they could
        code = (
            EXIT_PREEMPTED if signal_error.sigval == signal.SIGTERM else 128 + signal_error.sigval
        )
        raise JobFailed(
            f"stopped by {signal_error.sigval.name}. {PREEMPTED_MESSAGE}", code
        ) from None
