"""Loggers set up in one call (PyTorch-Ignite's ``ignite.handlers.logger_utils``).

:func:`setup_tb_logging` makes a :class:`TensorboardLogger` that logs the
trainer's metrics, the learning rates and the evaluators' metrics;
:func:`_setup_logging` attaches the same handlers to any logger with
``attach_output_handler`` and ``attach_opt_params_handler``. Ignite's other
loggers (Visdom, MLflow, Neptune, WandB, Polyaxon, ClearML) are not in
distengine: their ``setup_*_logging`` raise NotImplementedError naming them.
``distengine.engine.common`` holds the same functions.

Example::

    from distengine.handlers.logger_utils import setup_tb_logging

    tb = setup_tb_logging("runs/exp1/tb", trainer, optimizer, evaluators={"val": evaluator})
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from distengine.engine import Engine, Events
from distengine.handlers.tensorboard_logger import TensorboardLogger, global_step_from_engine

__all__ = [
    "setup_clearml_logging",
    "setup_mlflow_logging",
    "setup_neptune_logging",
    "setup_plx_logging",
    "setup_tb_logging",
    "setup_trains_logging",
    "setup_visdom_logging",
    "setup_wandb_logging",
]


def _setup_logging(
    logger: Any,
    trainer: Engine,
    optimizers: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer] | None,
    evaluators: Engine | Mapping[str, Engine] | None,
    log_every_iters: int | None,
    trainer_metric_names: str | list[str] = "all",
    evaluator_metric_names: str | list[str] = "all",
) -> None:
    """Attach to ``logger`` what :func:`setup_tb_logging` logs (any logger with
    ``attach_output_handler`` and ``attach_opt_params_handler``).

    Example: ``_setup_logging(tb, trainer, optimizer, {"val": evaluator}, log_every_iters=10)``.
    """
    if optimizers is not None and not isinstance(optimizers, (torch.optim.Optimizer, Mapping)):
        raise TypeError(
            "Argument optimizers should be either a single optimizer or a dictionary or "
            f"optimizers, got {optimizers!r}"
        )
    if evaluators is not None and not isinstance(evaluators, (Engine, Mapping)):
        raise TypeError(
            "Argument evaluators should be either a single engine or a dictionary or engines, "
            f"got {evaluators!r}"
        )
    every = log_every_iters or 1
    logger.attach_output_handler(
        trainer,
        event_name=Events.ITERATION_COMPLETED(every=every),
        tag="training",
        metric_names=trainer_metric_names,
    )
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = {None: optimizers}  # type: ignore[dict-item]
    for tag, optimizer in (optimizers or {}).items():
        logger.attach_opt_params_handler(
            trainer,
            event_name=Events.ITERATION_STARTED(every=every),
            optimizer=optimizer,
            param_name="lr",
            tag=tag,
        )
    if isinstance(evaluators, Engine):
        evaluators = {"validation": evaluators}
    step = global_step_from_engine(trainer)
    for tag, evaluator in (evaluators or {}).items():
        logger.attach_output_handler(
            evaluator,
            event_name=Events.COMPLETED,
            tag=tag,
            metric_names=evaluator_metric_names,
            global_step_transform=step,
        )


def setup_tb_logging(
    output_path: str | os.PathLike,
    trainer: Engine,
    optimizers: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer] | None = None,
    evaluators: Engine | Mapping[str, Engine] | None = None,
    log_every_iters: int | None = 100,
    *,
    trainer_metric_names: str | list[str] = "all",
    evaluator_metric_names: str | list[str] = "all",
    **kwargs: Any,
) -> TensorboardLogger:
    """A :class:`TensorboardLogger` in ``output_path`` logging training, learning rates and
    evaluations.

    It logs the trainer's metrics as ``training/<name>`` every
    ``log_every_iters`` iterations (None: every one), each optimizer's
    learning rate (``lr/group_<i>``, tagged by its key in a dict), and each
    evaluator's metrics when it completes, as ``<key>/<name>`` (a single
    evaluator is ``validation``) at the trainer's epoch. ``kwargs`` go to the
    logger. Runs no collective: rank 0 alone may call it.

    Example::

        tb = setup_tb_logging("runs/exp1/tb", trainer, optimizer,
                              evaluators={"training": train_eval, "test": evaluator})
        ...
        tb.close()
    """
    logger = TensorboardLogger(log_dir=output_path, **kwargs)
    _setup_logging(
        logger,
        trainer,
        optimizers,
        evaluators,
        log_every_iters,
        trainer_metric_names=trainer_metric_names,
        evaluator_metric_names=evaluator_metric_names,
    )
    return logger


def _no_logger(name: str, logger: str) -> Callable[..., Any]:
    def setup(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{name} needs PyTorch-Ignite's {logger}, which distengine does not have: "
            "log to TensorBoard with setup_tb_logging, or attach your own handlers"
        )

    setup.__name__ = setup.__qualname__ = name
    setup.__doc__ = f"Raises NotImplementedError: distengine has no {logger}."
    return setup


setup_visdom_logging = _no_logger("setup_visdom_logging", "VisdomLogger")
setup_mlflow_logging = _no_logger("setup_mlflow_logging", "MLflowLogger")
setup_neptune_logging = _no_logger("setup_neptune_logging", "NeptuneLogger")
setup_wandb_logging = _no_logger("setup_wandb_logging", "WandBLogger")
setup_plx_logging = _no_logger("setup_plx_logging", "PolyaxonLogger")
setup_clearml_logging = _no_logger("setup_clearml_logging", "ClearMLLogger")
setup_trains_logging = _no_logger("setup_trains_logging", "ClearMLLogger (formerly Trains)")


def setup_any_logging(*args: Any, **kwargs: Any) -> None:
    """Removed in PyTorch-Ignite 0.4.0: raises DeprecationWarning naming its replacements."""
    raise DeprecationWarning(
        "setup_any_logging is deprecated since version 0.4.0. and will be remove in version "
        "0.6.0. Please use instead setup_tb_logging (the one logger distengine has)"
    )
