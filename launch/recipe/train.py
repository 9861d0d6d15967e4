"""The default recipe: train, validate, checkpoint and log, on every rank."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from torch import nn

import distengine.distributed as idist
from distengine.distributed.sharding import is_dtensor
from distengine.engine import Events, create_supervised_evaluator, create_supervised_trainer
from distengine.handlers import (
    Checkpoint,
    DiskSaver,
    HangWatchdog,
    Preemption,
    ProgressBar,
)
from distengine.metrics import Accuracy, Fbeta, Loss, RunningAverage
from launch import exit_codes
from launch.rank.progress import track
from launch.recipe.notes import show_our_warnings_as_lines
from launch.recipe.reporting import History, log_to_tensorboard, say_compile_times
from launch.recipe.resume import resume
from launch.recipe.run_info import RunInfo
from launch.recipe.speed import amp_options, compile_model
from launch.recipe.stop import ignore_stop_signals, write_stop


def _loaders(cfg: Any):
    """Training and validation loaders; ``trainer.seed`` orders the training samples.

    The global batch ``data.batch_size`` is shared among the ranks (the
    launcher refused a number of ranks that does not divide it): the same
    global sample order on any number of ranks, so a resume may change it.
    """
    train_set, val_set = instantiate(cfg.data)
    batch, seed = int(cfg.data.batch_size), int(cfg.trainer.seed)
    train = idist.auto_dataloader(
        train_set, batch_size=batch, shuffle=True, drop_last=True, split="even", seed=seed
    )
    val = idist.auto_dataloader(val_set, batch_size=batch, shuffle=False)
    return train, val


def _guard(cfg: Any, trainer: Any, evaluator: Any, checkpoint: Checkpoint) -> None:
    """Hang detection on both engines; a checkpoint then a stop on SIGTERM or Ctrl-C (C5),
    also during a validation (it ends at its next agreed check, uncomputed)."""
    watchdog = HangWatchdog(float(cfg.dist.timeout_s))
    watchdog.attach(trainer)
    watchdog.attach(evaluator, final=False)
    preemption = Preemption(on_stop=checkpoint, signals=(signal.SIGTERM, signal.SIGINT))
    preemption.attach(trainer)
    preemption.attach(evaluator, final=False)
    trainer.add_event_handler(Events.COMPLETED, ignore_stop_signals)  # after Preemption's


def _checkpointing(cfg: Any, trainer: Any, to_save: dict) -> Checkpoint:
    """Keep the newest ``n_saved`` checkpoints, named by iteration, at epoch ends (and every N).

    Each records the run id in its sidecar (and in ``run``), so a resume picks
    only this run's files.
    """
    folder = Path(cfg.run_dir) / "checkpoints"
    checkpoint = Checkpoint(
        to_save,
        DiskSaver(folder, require_empty=False),
        n_saved=int(cfg.checkpoint.n_saved),
        metadata={"run_id": cfg.run_id},
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    if cfg.checkpoint.every_iters > 0:
        every = Events.ITERATION_COMPLETED(every=int(cfg.checkpoint.every_iters))
        trainer.add_event_handler(every, checkpoint)
    return checkpoint


def _validation(cfg: Any, trainer: Any, evaluator: Any, val_loader: Any, history: History) -> Any:
    """Validate every ``validate_every`` epochs and after the last; rank 0 prints the metrics."""
    every, last = int(cfg.trainer.validate_every), int(cfg.trainer.max_epochs)

    @trainer.on(Events.EPOCH_COMPLETED(event_filter=lambda _, ep: ep % every == 0 or ep == last))
    def validate(engine: Any) -> None:
        evaluator.run(val_loader)
        if getattr(evaluator.state, "preempted", False):
            return  # stopped by a signal: no metrics (a resume validates this epoch again)
        history.add(engine, evaluator)
        if idist.get_rank() == 0:
            shown = "  ".join(f"{k}={v:.4f}" for k, v in evaluator.state.metrics.items())
            print(f"epoch {engine.state.epoch}  validation  {shown}", flush=True)

    return validate


def _engines(cfg: Any, model: Any, optimizer: Any) -> tuple[Any, Any]:
    """The trainer (with a running loss and a progress bar) and the evaluator with metrics."""
    loss_fn, device = nn.CrossEntropyLoss(), idist.device()
    amp = amp_options(cfg.trainer)  # trainer.precision, or trainer.amp
    trainer = create_supervised_trainer(model, optimizer, loss_fn, device=device, **amp)
    metrics = {"accuracy": Accuracy(), "loss": Loss(loss_fn), "f1": Fbeta(num_classes=10)}
    evaluator = create_supervised_evaluator(model, metrics, device=device, **amp)
    # agreed every log_every iterations: the bar and TensorBoard show the current loss
    every = int(cfg.trainer.log_every)
    RunningAverage(output_transform=lambda loss: loss, alpha=0.9, every=every).attach(
        trainer, "loss"
    )
    if cfg.trainer.progress_bar:
        ProgressBar(persist=True, file=sys.stdout).attach(trainer, metric_names=["loss"])
    return trainer, evaluator


def _saved_path(cfg: Any, checkpoint: Checkpoint) -> Path | None:
    """The last checkpoint ``checkpoint`` kept: a file, or a folder for sharded state."""
    last = checkpoint.last_checkpoint
    return Path(cfg.run_dir) / "checkpoints" / Path(str(last)).name if last else None


def _holds_iteration(path: Path | None, iteration: int) -> bool:
    """Whether ``path`` (``checkpoint_<iteration>.pt``, or a folder) holds ``iteration``."""
    return path is not None and path.name.removesuffix(".pt").endswith(f"_{iteration}")


def _stop(cfg: Any, trainer: Any, checkpoint: Checkpoint, resumed: Path | None) -> None:
    """After a stop on a signal: the stop record, a line from rank 0, exit 75 or 130."""
    latest = _saved_path(cfg, checkpoint) or resumed
    iteration = trainer.state.iteration
    saved = latest if _holds_iteration(latest, iteration) else None
    signalled_at = getattr(trainer.state, "signalled_at", None)
    if trainer.state.preempted and saved is not None:  # named by the iteration it holds
        write_stop(cfg.run_dir, "preempted", iteration, saved, saved, signalled_at)
        if idist.get_rank() == 0:
            print(f"stopped at iteration {iteration}: checkpoint saved: {saved}", flush=True)
        raise SystemExit(exit_codes.PREEMPTED)
    reason = "preempted" if trainer.state.preempted else "interrupted"
    write_stop(cfg.run_dir, reason, iteration, None, latest, signalled_at)
    if idist.get_rank() == 0:
        print(f"stopped at iteration {iteration}: no checkpoint saved for this stop", flush=True)
    raise SystemExit(exit_codes.INTERRUPTED)


def _model(cfg: Any) -> Any:
    """``cfg.model`` replicated (``dist.strategy=ddp``) or sharded (``fsdp``; bf16 when
    ``trainer.amp`` or ``trainer.precision`` asks for autocast)."""
    strategy = str(cfg.dist.strategy)
    autocasts = amp_options(cfg.trainer)["amp_mode"] is not None  # fsdp: bf16 (checked)
    options = {"mp_dtype": "bf16"} if strategy == "fsdp" and autocasts else {}
    model = instantiate(cfg.model)
    total = sum(p.numel() for p in model.parameters())
    model = idist.auto_model(model, strategy=strategy, **options)
    if idist.get_rank() == 0:
        local = sum((p.to_local() if is_dtensor(p) else p).numel() for p in model.parameters())
        print(
            f"model: {total:,} parameters, {local:,} of them on rank 0 "
            f"({strategy} over {idist.get_world_size()} rank(s))",
            flush=True,
        )
    return model


def train(cfg: Any) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.optim``; return the validation metrics."""
    show_our_warnings_as_lines()
    model = _model(cfg)
    if cfg.trainer.get("compile"):
        compile_model(model)
    optimizer = idist.auto_optim(instantiate(cfg.optim)(model.parameters()))
    train_loader, val_loader = _loaders(cfg)
    trainer, evaluator = _engines(cfg, model, optimizer)
    tb = log_to_tensorboard(cfg, trainer, evaluator, optimizer)  # first: its clock sees the loop
    history = History(cfg.run_dir)
    validate = _validation(cfg, trainer, evaluator, val_loader, history)
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer, "run": RunInfo(cfg)}
    checkpoint = _checkpointing(cfg, trainer, to_save)
    _guard(cfg, trainer, evaluator, checkpoint)
    track(trainer)  # the iteration reached, for the launcher's account of a restart
    if cfg.trainer.get("compile"):
        say_compile_times(trainer, evaluator)
    resumed = resume(cfg, to_save, trainer, checkpoint)
    history.resumed(trainer.state.iteration)
    last = int(cfg.trainer.max_epochs)
    try:
        if trainer.is_done(max_epochs=last):
            if idist.get_rank() == 0:
                print(f"the run in {cfg.run_dir} already finished {last} epochs", flush=True)
            validate(trainer)
        else:
            if history.validation_cut(trainer, int(cfg.trainer.validate_every)):
                validate(trainer)  # a stop ended this epoch's validation: it runs now
            trainer.run(train_loader, max_epochs=last)
    except KeyboardInterrupt:  # a second Ctrl-C (contract C5): stop at once
        trainer.state.preempted = False
        _stop(cfg, trainer, checkpoint, resumed)
    finally:
        tb.close()
    if getattr(trainer.state, "preempted", False):
        _stop(cfg, trainer, checkpoint, resumed)
    return dict(evaluator.state.metrics)
