"""Entrypoints and a script that the launcher tests run on every rank."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

import distengine.distributed as idist


def report(cfg) -> None:
    """Write what this rank sees: its rank, the world, a summed tensor, the config's seed."""
    total = idist.all_reduce(torch.tensor([idist.get_rank() + 1.0]))
    out = Path(cfg.run_dir) / f"rank{idist.get_rank()}.json"
    out.write_text(
        json.dumps(
            {
                "rank": idist.get_rank(),
                "world": idist.get_world_size(),
                "sum": total.item(),
                "backend": idist.backend(),
                "node_rank": idist.get_node_rank(),
                "seed": cfg.trainer.seed,
                "lr": cfg.optim.lr,
                "threads": torch.get_num_threads(),
            }
        )
    )


def fail_on_rank_1(cfg) -> None:
    if idist.get_rank() == 1:
        raise ValueError("rank 1 cannot go on: bad shard")
    idist.barrier()  # rank 0 waits here; the launcher must stop it


def sleep_forever(cfg) -> None:
    (Path(cfg.run_dir) / f"pid{idist.get_rank()}").write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)


def hang_on_rank_1(cfg) -> None:
    """Rank 1 skips a collective at iteration 5 and then waits forever (a deadlock)."""
    import threading

    from distengine.engine import Engine
    from distengine.handlers import HangWatchdog

    def step(engine, batch):
        if idist.get_rank() == 1 and engine.state.iteration == 5:
            threading.Event().wait()  # never set
        return idist.all_reduce(torch.ones(1)).item()

    trainer = Engine(step)
    HangWatchdog(float(cfg.dist.timeout_s)).attach(trainer)
    trainer.run(range(100))


def fail_on_first_attempts(cfg) -> None:
    """Rank 1 crashes on the first two attempts; the third one succeeds."""
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    if idist.get_rank() == 1 and attempt < 2:
        os._exit(3)
    idist.barrier()
    (Path(cfg.run_dir) / f"done{idist.get_rank()}").write_text(str(attempt))


def _with_fault(cfg, fault) -> None:
    """The default recipe, with ``fault(engine)`` called after every training iteration."""
    import launch.recipe.train as recipe
    from distengine.engine import Events

    make_trainer = recipe.create_supervised_trainer

    def faulty_trainer(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, fault)
        return trainer

    recipe.create_supervised_trainer = faulty_trainer
    recipe.train(cfg)


def train_and_kill_rank_1_once(cfg) -> None:
    """Rank 1 dies by SIGKILL at iteration 31 (mid-epoch) on the first attempt only."""
    import signal

    def fault(engine):
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0"
        if first and idist.get_rank() == 1 and engine.state.iteration == 31:
            os.kill(os.getpid(), signal.SIGKILL)

    _with_fault(cfg, fault)


def train_and_sigterm_launcher_once(cfg) -> None:
    """At iteration 31 of the first run, rank 0 sends SIGTERM to the launcher (a preemption)."""
    import signal

    marker = Path(cfg.run_dir) / "preempted_once"

    def fault(engine):
        if idist.get_rank() == 0 and engine.state.iteration == 31 and not marker.exists():
            marker.write_text("1")
            os.kill(os.getppid(), signal.SIGTERM)

    _with_fault(cfg, fault)
