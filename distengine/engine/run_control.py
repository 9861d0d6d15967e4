"""What ``Engine.run`` checks before it starts, and how a stop request unwinds the loop.

A stop request (``terminate()``, ``terminate_epoch()``, ``interrupt()``) is a
flag; the engine looks at the flags after each event it fires and, where the
request takes effect, raises one of the exceptions below, which the run loop
catches where that stop is handled. They never leave ``Engine.run``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from distengine.distributed.env import get_world_size, is_distributed


class StopRun(Exception):
    """Unwinds the run loop for a stop request (internal: never leaves ``Engine.run``)."""


class Terminate(StopRun):
    """``terminate()``, or ``max_iters`` reached inside an epoch: TERMINATE, then COMPLETED."""


class TerminateEpoch(StopRun):
    """``terminate_epoch()``: TERMINATE_SINGLE_EPOCH, then EPOCH_COMPLETED, then the next epoch."""


class Interrupt(StopRun):
    """``interrupt()``: INTERRUPT, and ``run()`` returns; the next ``run()`` goes on in place."""


# Where the engine looks at the stop flags (after which event).
AFTER_STARTED = "STARTED"
AFTER_EPOCH_STARTED = "EPOCH_STARTED"
IN_ITERATION = "iteration"  # GET_BATCH_*, DATALOADER_STOP_ITERATION, ITERATION_STARTED
AFTER_ITERATION = "ITERATION_COMPLETED"
AFTER_EPOCH = "EPOCH_COMPLETED"


def stop_for(engine: Any, where: str) -> StopRun | None:
    """The stop that ``engine``'s flags ask for at ``where``, as PyTorch-Ignite acts on them.

    ``terminate()`` acts right after the event it was called in (so called in
    ``ITERATION_STARTED`` the batch is not processed); ``terminate_epoch()``
    inside an iteration, and is an error on ``STARTED``/``EPOCH_STARTED``;
    ``interrupt()`` at the end of the current iteration, or right after
    ``STARTED``, ``EPOCH_STARTED`` and ``EPOCH_COMPLETED``.
    """
    if engine.should_terminate:
        return Terminate()
    if engine.should_terminate_single_epoch:
        if where in (AFTER_STARTED, AFTER_EPOCH_STARTED):
            raise RuntimeError(
                f"terminate_epoch() was called on {where}, before the epoch's first iteration: "
                "call it during an iteration, or terminate() to end the run"
            )
        if where == AFTER_EPOCH:
            engine.should_terminate_single_epoch = False  # the epoch has ended anyway
        else:
            return TerminateEpoch()
    if engine.should_interrupt and where != IN_ITERATION:
        return Interrupt()
    return None


class NoData:
    """What an engine runs over when ``run`` gets no data: ``length`` batches of None per pass.

    Example::

        list(NoData(3))   # [None, None, None]
    """

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[None]:
        return itertools.repeat(None, self.length)


def several_ranks() -> bool:
    """Whether this process is one of several ranks of a process group."""
    return is_distributed() and get_world_size() > 1


def check_run_args(max_epochs: Any, epoch_length: Any, max_iters: Any) -> None:
    """Each limit is a positive int or None; ``max_epochs`` and ``max_iters`` exclude each other."""
    for name, value in (
        ("max_epochs", max_epochs),
        ("epoch_length", epoch_length),
        ("max_iters", max_iters),
    ):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    if max_epochs is not None and max_iters is not None:
        raise ValueError(
            "Arguments max_iters and max_epochs are mutually exclusive. Please provide only "
            f"max_epochs or max_iters, not both (got {max_epochs} and {max_iters})"
        )


def apply_limits(state: Any, max_epochs: int | None, max_iters: int | None) -> None:
    """Set the limits asked of a run that already has some, as PyTorch-Ignite does.

    A limit below what the run has reached, or a switch between ``max_epochs``
    and ``max_iters``, is a ValueError: to start a new run instead, set
    ``engine.state.max_epochs = None`` (or ``max_iters``) first.
    """
    for name, value, other, reached in (
        ("max_epochs", max_epochs, "max_iters", ("epoch", state.epoch)),
        ("max_iters", max_iters, "max_epochs", ("iteration", state.iteration)),
    ):
        if value is None:
            continue
        if getattr(state, other) is not None:
            raise ValueError(
                f"run({name}={value}) on a run limited by {other}={getattr(state, other)}: "
                f"To switch from {other} to {name} mode during resume, you must first reset by "
                f"setting 'engine.state.{other} = None' before calling run()"
            )
        if getattr(state, name) is not None:
            check_limit(name, value, *reached)
            setattr(state, name, value)


def check_limit(name: str, value: int, counter: str, reached: int) -> None:
    """``value`` (of the limit ``name``) is not below what the run has ``reached``."""
    if value < reached:
        raise ValueError(
            f"Argument {name} should be greater than or equal to the start {counter} defined "
            f"in the state: {value} vs {reached}. Please, set engine.state.{name} = None "
            "before calling engine.run() in order to restart the training from the beginning."
        )


def check_empty_shard(max_iters: int | None) -> None:
    """An empty epoch is a rank's empty shard (several ranks), never a whole run's data."""
    if not several_ranks():
        raise ValueError(
            "Input data has zero size. Please provide non-empty data: an engine needs at least "
            "one batch per epoch (got len 0)"
        )
    if max_iters is not None:
        raise ValueError(
            f"this rank's data is empty, so max_iters={max_iters} can never be reached; "
            "give max_epochs (an empty shard still joins every epoch's events)"
        )
