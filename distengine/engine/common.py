"""PyTorch-Ignite's ``ignite.contrib.engines.common``: the usual handlers in one call each.

Thin code over distengine's own pieces (:class:`~distengine.handlers.Checkpoint`,
:class:`~distengine.handlers.EarlyStopping`, :class:`~distengine.handlers.ProgressBar`,
:class:`~distengine.metrics.RunningAverage`, :class:`~distengine.handlers.TerminateOnNan`,
:class:`~distengine.handlers.TensorboardLogger`), with Ignite's signatures. Call
them on every rank: the handlers compute on every rank and write on rank 0
(checkpoints, bars, event files), and the decisions (stop on NaN, stop early,
keep a checkpoint) are taken once for all ranks. ``setup_tb_logging`` alone
may also be called on rank 0 only (it runs no collective).

Example::

    from distengine.engine import common

    common.setup_common_training_handlers(
        trainer, train_sampler=loader.sampler, to_save={"model": model, "trainer": trainer},
        save_every_iters=500, output_path="runs/exp1", lr_scheduler=scheduler,
        output_names=["loss"])
    tb = common.setup_tb_logging("runs/exp1/tb", trainer, optimizer, evaluators={"val": evaluator})
    common.save_best_model_by_val_score("runs/exp1/best", evaluator, model, "accuracy",
                                        trainer=trainer)
    common.add_early_stopping_by_val_score(5, evaluator, trainer, "accuracy")
"""

from __future__ import annotations

import gc
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from distengine.distributed import get_world_size
from distengine.engine.engine import Engine
from distengine.engine.events import Events
from distengine.handlers import (
    Checkpoint,
    DiskSaver,
    EarlyStopping,
    ProgressBar,
    TerminateOnNan,
    global_step_from_engine,
)
from distengine.handlers.logger_utils import (  # Ignite 0.5.5 moved them there; both paths work
    _setup_logging,  # noqa: F401
    setup_any_logging,  # noqa: F401
    setup_clearml_logging,
    setup_mlflow_logging,
    setup_neptune_logging,
    setup_plx_logging,
    setup_tb_logging,
    setup_trains_logging,
    setup_visdom_logging,
    setup_wandb_logging,
)
from distengine.metrics import GpuInfo, RunningAverage

__all__ = [
    "add_early_stopping_by_val_score",
    "empty_cuda_cache",
    "gen_save_best_models_by_val_score",
    "get_default_score_fn",
    "save_best_model_by_val_score",
    "setup_clearml_logging",
    "setup_common_distrib_training_handlers",
    "setup_common_training_handlers",
    "setup_mlflow_logging",
    "setup_neptune_logging",
    "setup_plx_logging",
    "setup_tb_logging",
    "setup_trains_logging",
    "setup_visdom_logging",
    "setup_wandb_logging",
]

get_default_score_fn = Checkpoint.get_default_score_fn


def setup_common_training_handlers(
    trainer: Engine,
    train_sampler: DistributedSampler | None = None,
    to_save: Mapping[str, Any] | None = None,
    save_every_iters: int = 1000,
    output_path: str | os.PathLike | None = None,
    lr_scheduler: Any = None,
    with_gpu_stats: bool = False,
    output_names: Iterable[str] | None = None,
    with_pbars: bool = True,
    with_pbar_on_iters: bool = True,
    log_every_iters: int = 100,
    stop_on_nan: bool = True,
    clear_cuda_cache: bool = True,
    save_handler: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> None:
    """Attach Ignite's usual training handlers to ``trainer``; call it on every rank.

    In order: :class:`TerminateOnNan` (``stop_on_nan``), the learning-rate
    scheduler (a torch scheduler steps after each iteration, a distengine
    ``ParamScheduler`` before), emptying the CUDA cache after each epoch
    (``clear_cuda_cache``, where CUDA is available), a :class:`Checkpoint` of
    ``to_save`` named ``training_checkpoint_<iteration>.pt`` every
    ``save_every_iters`` iterations (into ``output_path`` or through
    ``save_handler``; ``kwargs`` go to Checkpoint), :class:`GpuInfo`
    (``with_gpu_stats``), a :class:`RunningAverage` of each of
    ``output_names`` (keys or positions of the step's output) and two progress
    bars (``with_pbars``: one over iterations, one over epochs; drawn by rank 0).
    With several ranks, ``train_sampler`` (a DistributedSampler) gets
    ``set_epoch(epoch - 1)`` when each epoch starts.

    Example::

        common.setup_common_training_handlers(trainer, to_save={"model": model},
                                              output_path="runs/exp1", output_names=["loss"])
    """
    if output_path is not None and save_handler is not None:
        raise ValueError(
            "Arguments output_path and save_handler are mutually exclusive: give one, not both "
            f"(got output_path={output_path!r})"
        )
    _check_sampler(train_sampler)
    if stop_on_nan:
        TerminateOnNan().attach(trainer)  # the ranks' agreement is set up before the run
    if lr_scheduler is not None:
        _attach_lr_scheduler(trainer, lr_scheduler)
    if torch.cuda.is_available() and clear_cuda_cache:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, empty_cuda_cache)
    if to_save is not None:
        if output_path is None and save_handler is None:
            raise ValueError(
                "If to_save argument is provided then output_path or save_handler arguments "
                "should be also defined: where to save it"
            )
        saver = save_handler or DiskSaver(output_path, require_empty=False)
        checkpoint = Checkpoint(to_save, saver, filename_prefix="training", **kwargs)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=save_every_iters), checkpoint)
    if with_gpu_stats:
        GpuInfo().attach(trainer, "gpu", Events.ITERATION_COMPLETED(every=log_every_iters))
    for index, name in enumerate(output_names or ()):
        transform = partial(_output_item, index=index, name=name)
        RunningAverage(output_transform=transform).attach(trainer, name)
    if with_pbars:
        if with_pbar_on_iters:
            ProgressBar(persist=False).attach(
                trainer, "all", event_name=Events.ITERATION_COMPLETED(every=log_every_iters)
            )
        ProgressBar(persist=True, bar_format="").attach(
            trainer, event_name=Events.EPOCH_STARTED, closing_event_name=Events.COMPLETED
        )
    if train_sampler is not None and get_world_size() > 1:
        trainer.add_event_handler(
            Events.EPOCH_STARTED, lambda engine: train_sampler.set_epoch(engine.state.epoch - 1)
        )


#: Ignite's name for the same function (it chose by world size; distengine's handlers do).
setup_common_distrib_training_handlers = setup_common_training_handlers


def _check_sampler(train_sampler: Any) -> None:
    if train_sampler is None:
        return
    if get_world_size() < 2 and isinstance(train_sampler, DistributedSampler):
        warnings.warn(
            "Argument train_sampler is a distributed sampler, but this process is alone "
            "(world size 1): it is not given set_epoch",
            UserWarning,
            stacklevel=3,
        )
    if get_world_size() > 1 and not isinstance(train_sampler, DistributedSampler):
        raise TypeError(
            f"train_sampler must be a torch DistributedSampler (it gets set_epoch), "
            f"got {type(train_sampler).__name__}"
        )


def _attach_lr_scheduler(trainer: Engine, lr_scheduler: Any) -> None:
    if isinstance(lr_scheduler, torch.optim.lr_scheduler.LRScheduler):
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: lr_scheduler.step())
    elif callable(lr_scheduler):
        trainer.add_event_handler(Events.ITERATION_STARTED, lr_scheduler)
    else:
        raise TypeError(
            "lr_scheduler must be a torch LRScheduler or a distengine ParamScheduler, "
            f"got {type(lr_scheduler).__name__}"
        )


def _output_item(output: Any, index: int, name: str) -> Any:
    """``output[name]`` of a mapping, ``output[index]`` of a sequence, a number as it is."""
    if isinstance(output, Mapping):
        return output[name]
    if isinstance(output, Sequence):
        return output[index]
    if isinstance(output, (torch.Tensor, numbers.Number)):
        return output
    raise TypeError(
        "Unhandled type of update_function's output: it must be a mapping, a sequence, a "
        f"tensor or a number to take {name!r} from, got {type(output).__name__}"
    )


def empty_cuda_cache(_: Engine) -> None:
    """Release cached CUDA memory and collect garbage (a handler)."""
    torch.cuda.empty_cache()
    gc.collect()


def gen_save_best_models_by_val_score(
    save_handler: Callable[..., Any] | str | os.PathLike,
    evaluator: Engine,
    models: nn.Module | Mapping[str, nn.Module],
    metric_name: str,
    n_saved: int = 3,
    trainer: Engine | None = None,
    tag: str = "val",
    score_sign: float = 1.0,
    **kwargs: Any,
) -> Checkpoint:
    """Keep the ``n_saved`` best ``models`` by ``evaluator.state.metrics[metric_name]``.

    A :class:`Checkpoint` named ``best_<name>_<step>_<tag>_<metric>=<score>.pt``
    runs when ``evaluator`` completes (every rank: rank 0's score decides);
    the step is ``trainer``'s epoch when given. ``score_sign=-1.0`` keeps
    the lowest values. ``kwargs`` go to Checkpoint.

    Example::

        common.gen_save_best_models_by_val_score(DiskSaver("runs/best"), evaluator,
                                                 {"model": model}, "accuracy", trainer=trainer)
    """
    to_save = {"model": models} if isinstance(models, nn.Module) else dict(models)
    best = Checkpoint(
        to_save,
        save_handler,
        filename_prefix="best",
        n_saved=n_saved,
        global_step_transform=global_step_from_engine(trainer) if trainer is not None else None,
        score_name=f"{tag}_{metric_name.lower()}",
        score_function=get_default_score_fn(metric_name, score_sign=score_sign),
        **kwargs,
    )
    evaluator.add_event_handler(Events.COMPLETED, best)
    return best


def save_best_model_by_val_score(
    output_path: str | os.PathLike,
    evaluator: Engine,
    model: nn.Module,
    metric_name: str,
    n_saved: int = 3,
    trainer: Engine | None = None,
    tag: str = "val",
    score_sign: float = 1.0,
    **kwargs: Any,
) -> Checkpoint:
    """:func:`gen_save_best_models_by_val_score` into the folder ``output_path``.

    Example::

        common.save_best_model_by_val_score("runs/best", evaluator, model, "accuracy",
                                            n_saved=2, trainer=trainer)
    """
    return gen_save_best_models_by_val_score(
        DiskSaver(output_path, require_empty=False),
        evaluator,
        model,
        metric_name,
        n_saved=n_saved,
        trainer=trainer,
        tag=tag,
        score_sign=score_sign,
        **kwargs,
    )


def add_early_stopping_by_val_score(
    patience: int,
    evaluator: Engine,
    trainer: Engine,
    metric_name: str,
    score_sign: float = 1.0,
) -> EarlyStopping:
    """Stop ``trainer`` when ``evaluator``'s ``metric_name`` has not improved ``patience``
    times in a row (every rank stops together).

    Example::

        common.add_early_stopping_by_val_score(5, evaluator, trainer, "accuracy")
    """
    stopper = EarlyStopping(
        patience=patience,
        score_function=get_default_score_fn(metric_name, score_sign=score_sign),
        trainer=trainer,
    )
    evaluator.add_event_handler(Events.COMPLETED, stopper)
    return stopper
