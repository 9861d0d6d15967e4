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


def report_device(cfg) -> None:
    """Write where this rank computes and which backend its group has (the GPU tests)."""
    total = idist.all_reduce(torch.ones(1, device=idist.device()))
    out = Path(cfg.run_dir) / f"device{idist.get_rank()}.json"
    out.write_text(
        json.dumps({"device": str(idist.device()), "backend": idist.backend(), "sum": total.item()})
    )


def launcher_pid() -> int:
    """The launcher: this rank's parent, or the parent of the forkserver that forked it."""
    parent = os.getppid()
    if b"multiprocessing.forkserver" in Path(f"/proc/{parent}/cmdline").read_bytes():
        return int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return parent


def fail_on_rank_1(cfg) -> None:
    if idist.get_rank() == 1:
        raise ValueError("rank 1 cannot go on: bad shard")
    idist.barrier()  # rank 0 waits here; the launcher must stop it


def sleep_forever(cfg) -> None:
    (Path(cfg.run_dir) / f"pid{idist.get_rank()}").write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)


def hang_on_rank_1(cfg) -> None:
    """Rank 1 skips a collective at iteration 5 and then waits forever (a deadlock).

    The watchdog fires at half ``dist.timeout_s``, before the process group's timeout.
    """
    import threading

    from distengine.engine import Engine
    from distengine.handlers import HangWatchdog

    def step(engine, batch):
        if idist.get_rank() == 1 and engine.state.iteration == 5:
            threading.Event().wait()  # never set
        return idist.all_reduce(torch.ones(1)).item()

    trainer = Engine(step)
    HangWatchdog(float(cfg.dist.timeout_s) / 2).attach(trainer)
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
        time.sleep(ITERATION_S)
        if idist.get_rank() == 0 and engine.state.iteration == 31 and not marker.exists():
            marker.write_text("1")
            os.kill(launcher_pid(), signal.SIGTERM)

    _with_fault(cfg, fault)


#: Extra time per training iteration in the stop tests. The ranks agree on a stop about every
#: half second of training; at this pace a signal at iteration 31 is acted on well before the
#: run's last iteration (88), as in any real run, however fast the machine.
ITERATION_S = 0.02


def train_and_ctrl_c(cfg) -> None:
    """At iteration 31 of the first run, rank 0 presses Ctrl-C (``CTRL_C`` says how).

    ``group``: SIGINT to the launcher's process group, as a terminal does;
    ``launcher``: to the launcher alone, twice at once, as ``timeout -s INT``
    delivers one (to its child and to its group); ``twice``: to the group, and
    again 1.5 s later while rank 0's stop checkpoint is slow (20 s).
    """
    import signal
    import threading

    how = os.environ["CTRL_C"]
    marker = Path(cfg.run_dir) / "interrupted_once"
    launcher = launcher_pid()

    def press():
        if how == "launcher":
            os.kill(launcher, signal.SIGINT)
            os.kill(launcher, signal.SIGINT)
        else:
            os.killpg(os.getpgid(launcher), signal.SIGINT)

    def fault(engine):
        time.sleep(ITERATION_S)
        if idist.get_rank() == 0 and engine.state.iteration == 31 and not marker.exists():
            marker.write_text("1")
            press()
            if how == "twice":
                threading.Timer(1.5, press).start()

    if how == "twice":
        _slow_stop(seconds=20)
    _with_fault(cfg, fault)


def _slow_stop(seconds: float) -> None:
    """Rank 0 sleeps before the recipe's stop checkpoint (a slow disk)."""
    import launch.recipe.train as recipe

    class SlowStop(recipe.Preemption):
        def __init__(self, on_stop=None, **kwargs):
            def slow(engine):
                if idist.get_rank() == 0:
                    time.sleep(seconds)
                on_stop(engine)

            super().__init__(on_stop=slow, **kwargs)

    recipe.Preemption = SlowStop


def train_and_rank_1_exits_0(cfg) -> None:
    """Rank 1 leaves the recipe with ``sys.exit(0)`` at iteration 5; rank 0 goes on."""
    import sys

    def fault(engine):
        if idist.get_rank() == 1 and engine.state.iteration == 5:
            sys.exit(0)

    _with_fault(cfg, fault)


def ignore_sigterm_and_sleep(cfg) -> None:
    """A rank that ignores SIGTERM (the agent must SIGKILL it after dist.shutdown_grace_s)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleep_forever(cfg)


def train_slow_first_iteration_and_save(cfg) -> None:
    """The recipe with a first iteration and one checkpoint write both longer than the timeout."""
    from distengine.checkpoint import disk

    slow = 1.5 * float(cfg.dist.timeout_s)
    agree_on_write = disk.broadcast
    calls = []

    def slow_save(value):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(slow)  # every rank inside its first checkpoint save, watchdog paused
        return agree_on_write(value)

    disk.broadcast = slow_save

    def fault(engine):
        if engine.state.iteration == 1:
            time.sleep(slow)

    import launch.recipe.train as recipe
    from distengine.engine import Events

    make_trainer = recipe.create_supervised_trainer

    def faulty_trainer(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.add_event_handler(Events.ITERATION_STARTED, fault)
        return trainer

    recipe.create_supervised_trainer = faulty_trainer
    recipe.train(cfg)


def train_with_a_full_disk(cfg) -> None:
    """The recipe, with every file written through ``os.fdopen`` going to /dev/full (ENOSPC).

    DiskSaver writes its temporary file through ``os.fdopen``.
    """
    import launch.recipe.train as recipe

    real = os.fdopen

    def full(fd, mode="r", *args, **kwargs):
        if "w" not in mode:
            return real(fd, mode, *args, **kwargs)
        os.close(fd)
        return real(os.open("/dev/full", os.O_WRONLY), mode, *args, **kwargs)

    os.fdopen = full
    recipe.train(cfg)


def _same_warning() -> None:
    import warnings

    warnings.warn("the same on every rank", UserWarning, stacklevel=1)


def warn_and_print(cfg) -> None:
    """Each rank prints and warns (rank 0 first); rank 1 logs an error and a caught traceback."""
    import sys
    import traceback

    rank = idist.get_rank()
    print(f"hello from rank {rank}", flush=True)
    for turn in range(idist.get_world_size()):
        if rank == turn:
            _same_warning()
        idist.barrier()
    if rank == 1:
        print("rank 1 ERROR: the disk is full", file=sys.stderr, flush=True)
        try:
            {}["caught"]
        except KeyError:
            traceback.print_exc()


def all_reduce_forever(cfg) -> None:
    """Every rank writes its pid, then all-reduces over and over (a node's loss fails it)."""
    (Path(cfg.run_dir) / f"pid{idist.get_rank()}").write_text(str(os.getpid()))
    while True:
        idist.all_reduce(torch.ones(1))
        time.sleep(0.05)


def fingerprint(row) -> str:
    """A sample's identity: a hash of its features' bytes."""
    import hashlib

    return hashlib.md5(row.numpy().tobytes()).hexdigest()[:12]


def elastic_recording(cfg) -> None:
    """The default recipe; every rank records its samples of each iteration in
    ``samples/<pid>.txt`` (``<job restart> <world size> <iteration> <fingerprints>``).

    For the elastic test it pauses twice: at iteration 12 on 2 ranks until ``killed``
    exists (the test kills node 1 meanwhile), and at iteration 30 on 1 rank until the rank
    gets SIGTERM (the agent stopping it to let node 1 back in).
    """
    import signal

    run_dir = Path(cfg.run_dir)
    (run_dir / "samples").mkdir(exist_ok=True)
    job_restart = os.environ["TORCHELASTIC_RESTART_COUNT"]  # the job's (launch.rank.shared)
    record = open(run_dir / "samples" / f"{os.getpid()}.txt", "a")  # noqa: SIM115
    terms: list = []

    def chain_sigterm() -> None:  # the recipe's handler is installed after this hook
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum, frame):
            terms.append(signum)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, on_term)

    def wait(until, seconds=120.0):
        end = time.monotonic() + seconds
        while not until() and time.monotonic() < end:
            time.sleep(0.05)

    def fault(engine):
        if not getattr(fault, "chained", False):
            chain_sigterm()
            fault.chained = True
        world, iteration = idist.get_world_size(), engine.state.iteration
        prints = " ".join(sorted(fingerprint(row) for row in engine.state.batch[0]))
        record.write(f"{job_restart} {world} {iteration} {prints}\n")
        record.flush()
        if world == 2 and iteration == 12:
            wait(lambda: (run_dir / "killed").exists())
        if world == 1 and iteration == 30:
            wait(lambda: bool(terms))

    _with_fault(cfg, fault)


def signals_at(cfg) -> None:
    """The recipe; rank 0 sends signals to the launcher where ``SIGNALS_AT`` says.

    ``SIGNALS_AT=<when>:<SIGNAL>[+<SIGNAL>...]``, ``when`` one of ``validation``
    (epoch 1's validation, made 390 batches of 0.25 s: longer than a 20 s grace),
    ``training`` (iteration 31), ``last`` (the run's last iteration) or ``after``
    (as the trainer completes, its checkpoints all written); the
    signals go at once, one after the other. Unset: the plain recipe (a resume).
    The iteration it signalled at is written to ``<run>/signalled``.
    """
    import signal

    import launch.recipe.train as recipe
    from distengine.engine import Events

    spec = os.environ.get("SIGNALS_AT")
    if not spec:
        return recipe.train(cfg)
    when, names = spec.split(":")
    launcher = launcher_pid()

    def send(engine):
        if idist.get_rank() == 0:
            (Path(cfg.run_dir) / "signalled").write_text(str(engine.state.iteration))
            for name in names.split("+"):
                os.kill(launcher, getattr(signal, name))

    make_trainer, make_evaluator = (
        recipe.create_supervised_trainer,
        recipe.create_supervised_evaluator,
    )

    def trainer(*args, **kwargs):
        engine = make_trainer(*args, **kwargs)
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda: time.sleep(ITERATION_S))
        at = {"training": 31, "last": int(cfg.trainer.max_epochs) * 22}.get(when)
        if at is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED(once=at), send)
        if when == "after":
            engine.add_event_handler(Events.COMPLETED, send)
        return engine

    def evaluator(*args, **kwargs):
        engine = make_evaluator(*args, **kwargs)
        if when == "validation":
            run = engine.run
            # the batches read once (one loader pass draws from the generators, as always)
            engine.run = lambda data, *a, **k: run(list(data) * 130, *a, **k)
            engine.add_event_handler(Events.ITERATION_COMPLETED, lambda: time.sleep(0.25))
            engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), send)
        return engine

    recipe.create_supervised_trainer, recipe.create_supervised_evaluator = trainer, evaluator
    return recipe.train(cfg)


def freeze_rank_1(cfg) -> None:
    """Rank 1 stops its own process (SIGSTOP) at iteration 5, as a debugger or Ctrl-Z would;
    rank 0 waits for it in a collective until its watchdog (half ``dist.timeout_s``) fires."""
    import signal

    from distengine.engine import Engine
    from distengine.handlers import HangWatchdog

    def step(engine, batch):
        if idist.get_rank() == 1 and engine.state.iteration == 5:
            os.kill(os.getpid(), signal.SIGSTOP)
        return idist.all_reduce(torch.ones(1)).item()

    trainer = Engine(step)
    HangWatchdog(float(cfg.dist.timeout_s) / 2).attach(trainer)
    trainer.run(range(100))


def fill_the_disk_and_fail(cfg) -> None:
    """Rank 0 fills the run folder's disk, then raises (its error record cannot be written)."""
    if idist.get_rank() == 0:
        with open(Path(cfg.run_dir) / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"x" * 65536)
                    filler.flush()
            except OSError:
                pass
        raise RuntimeError("rank 0 gives up: " + "the disk is full " * 40)
    idist.barrier()
