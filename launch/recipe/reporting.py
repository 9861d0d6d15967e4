"""What the default recipe records for the user: TensorBoard curves and ``metrics.json``.

TensorBoard (rank 0, one event file per process in ``cfg.tb_dir``):
``train/loss`` and ``train/lr/group_0`` every ``trainer.log_every``
iterations, ``validation/<metric>`` after each validation (on the trainer's
iteration axis), ``train/telemetry/<figure>`` (samples/s, step time, data
wait, GPU memory; see :class:`~distengine.handlers.telemetry.Telemetry`),
and the hyperparameters in the HParams tab with the validation curves as
its metrics. Two groups of charts, ``train`` and ``validation``: TensorBoard
opens the first two groups (by name) and folds the others.

``metrics.json`` (rank 0, rewritten after each validation): the last
validation, and ``history``, one entry per validation, kept across resumes.
"""

from __future__ import annotations

import json
import numbers
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

import distengine.distributed as idist
from distengine.engine import Events
from distengine.handlers import TensorboardLogger, global_step_from_engine
from distengine.handlers.telemetry import Telemetry
from launch.job.folder import describe_os_error

#: Config groups whose values are the run's hyperparameters (with the trainer's seed and epochs).
HPARAM_GROUPS = ("model", "data", "optim")


def tensorboard_dir(cfg: Any) -> Path:
    """Where this run's event files go (set by the launcher; ``<run>/tb/<run name>`` otherwise)."""
    if cfg.get("tb_dir"):
        return Path(cfg.tb_dir)
    run_dir = Path(cfg.run_dir)
    return run_dir / "tb" / run_dir.name


#: The HParams table's first columns for a run that is not part of a sweep (a sweep's: what
#: it varies); TensorBoard would otherwise show the first five names alphabetically (data.*).
FIRST_SHOWN = ("optim.lr", "model", "data.batch_size", "trainer.max_epochs", "world_size")


def hyperparameters(cfg: Any) -> dict[str, Any]:
    """``{"model": "...mlp", "model.hidden": 128, "optim.lr": 0.003, ..., "world_size": 2}``."""
    found: dict[str, Any] = {}
    for group in HPARAM_GROUPS:
        values = OmegaConf.to_container(cfg[group], resolve=True) or {}
        for key, value in values.items():
            if key == "_target_":
                found[group] = value
            elif not key.startswith("_") and isinstance(value, (numbers.Number, str, bool)):
                found[f"{group}.{key}"] = value
    found["trainer.max_epochs"] = int(cfg.trainer.max_epochs)
    found["trainer.seed"] = int(cfg.trainer.seed)
    found["world_size"] = idist.get_world_size()
    return found


def log_to_tensorboard(cfg: Any, trainer: Any, evaluator: Any, optimizer: Any) -> Any:
    """Training and validation curves, speed, learning rate and hparams; the logger."""
    tb = TensorboardLogger(tensorboard_dir(cfg))
    every = Events.ITERATION_COMPLETED(every=int(cfg.trainer.log_every))
    telemetry = Telemetry(every=int(cfg.trainer.log_every))
    telemetry.attach(trainer)
    tb.attach_output_handler(trainer, every, "train", metric_names=["loss"])
    tb.attach_output_handler(
        trainer, every, "train/telemetry", output_transform=lambda _: telemetry.values
    )
    tb.attach_opt_params_handler(trainer, every, optimizer, tag="train")
    tb.attach_output_handler(
        evaluator,
        Events.COMPLETED,
        "validation",
        metric_names="all",
        global_step_transform=global_step_from_engine(trainer, Events.ITERATION_COMPLETED),
    )
    first = list(cfg.get("sweep_keys") or []) or list(FIRST_SHOWN)
    tb.attach_hparams(
        trainer, hyperparameters(cfg), metrics_from=evaluator, tag="validation", highlight=first
    )
    return tb


def say_compile_times(trainer: Any, evaluator: Any) -> None:
    """``trainer.compile=true``: rank 0 says when torch compiles (the first training
    iteration, the first validation) and how long that took, instead of a silent minute.

    Example::

        say_compile_times(trainer, evaluator)
        # compiling the model with torch.compile (the first training iteration)...
        # compiled: the first training iteration took 38.2 s
    """
    if idist.get_rank() != 0:
        return
    _say_first(trainer, Events.ITERATION_COMPLETED, "the first training iteration")
    _say_first(evaluator, Events.COMPLETED, "the first validation")


def _say_first(engine: Any, done: Any, what: str) -> None:
    """A line as ``engine``'s first run starts, and its time once ``done`` first fires."""
    started: list[float] = []

    def start() -> None:
        if not started:
            print(f"compiling the model with torch.compile ({what})...", flush=True)
            started.append(time.monotonic())

    def end() -> None:
        if len(started) == 1:  # once: later iterations and validations run compiled code
            print(f"compiled: {what} took {time.monotonic() - started[0]:.1f} s", flush=True)
            started.append(time.monotonic())

    engine.add_event_handler(Events.STARTED, start)
    engine.add_event_handler(done, end)


class History:
    """``metrics.json``: the last validation and every earlier one (rank 0 writes).

    Example::

        history = History(run_dir)
        history.resumed(trainer.state.iteration)     # drop what a resume redoes
        history.add(trainer, evaluator)              # after each validation
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / "metrics.json"
        self.entries: list[dict[str, Any]] = []

    def resumed(self, iteration: int) -> None:
        """Keep the validations of the run up to ``iteration`` (the checkpoint resumed from)."""
        try:
            saved = json.loads(self.path.read_text()).get("history", [])
        except (OSError, ValueError, AttributeError):
            saved = []
        kept = [e for e in saved if isinstance(e, dict)]
        self.entries = [e for e in kept if e.get("iteration", 0) <= iteration]

    def validation_cut(self, trainer: Any, every: int) -> bool:
        """Whether the run resumed at the end of an epoch whose validation is due but missing
        (a stop during that validation ended it, and the checkpoint is the epoch's)."""
        state = trainer.state
        if not state.epoch or not state.epoch_length or state.epoch % every:
            return False
        if state.iteration != state.epoch * state.epoch_length:
            return False
        return all(e.get("iteration") != state.iteration for e in self.entries)

    def add(self, trainer: Any, evaluator: Any) -> None:
        """Record the validation that just ran, and rewrite the file (rank 0)."""
        running = trainer.state.metrics
        entry = {
            "epoch": trainer.state.epoch,
            "iteration": trainer.state.iteration,
            "validation": _numbers(evaluator.state.metrics),
            "train": _numbers({k: v for k, v in running.items() if k == "loss"}),
        }
        self.entries = [e for e in self.entries if e.get("iteration") != entry["iteration"]]
        self.entries.append(entry)
        if idist.get_rank() == 0:
            self._write(trainer)

    def _write(self, trainer: Any) -> None:
        last = self.entries[-1]
        summary = {
            "epoch": trainer.state.epoch,
            "iteration": trainer.state.iteration,
            "world_size": idist.get_world_size(),
            "validation": last["validation"],
            "history": self.entries,
        }
        partial = self.path.with_name(f".{self.path.name}.partial")
        try:
            partial.write_text(json.dumps(summary, indent=2))
            os.replace(partial, self.path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise OSError(error.errno, f"{describe_os_error(error, self.path)}") from None


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are single numbers, as floats."""
    found = {}
    for name, value in metrics.items():
        try:
            found[name] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return found
