"""The default recipe: train, validate, checkpoint and log, on every rank."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from torch import nn

import distengine.distributed as idist
from distengine.engine import Events, create_supervised_evaluator, create_supervised_trainer
from distengine.handlers import (
    Checkpoint,
    DiskSaver,
    HangWatchdog,
    Preemption,
    ProgressBar,
    TensorboardLogger,
    find_latest_checkpoint,
    global_step_from_engine,
)
from distengine.handlers.preemption import EXIT_PREEMPTED
from distengine.metrics import Accuracy, Fbeta, Loss, RunningAverage
from launch.recipe.run_info import RunInfo


def _loaders(cfg: Any):
    train_set, val_set = instantiate(cfg.data)
    batch = int(cfg.data.batch_size)
    train = idist.auto_dataloader(train_set, batch_size=batch, shuffle=True, drop_last=True)
    val = idist.auto_dataloader(val_set, batch_size=batch, shuffle=False)
    return train, val


def _resume(cfg: Any, to_load: dict, folder: Path) -> None:
    """Load the folder's latest valid checkpoint on every rank (a corrupt one is skipped)."""
    if cfg.checkpoint.resume != "auto":
        return
    found = find_latest_checkpoint(folder)
    if found is not None:
        path, state = found
        Checkpoint.load_objects({"run": to_load["run"]}, state)  # refuses a mismatched run first
        Checkpoint.load_objects(to_load, state)
        if idist.get_rank() == 0:
            iteration = to_load["trainer"].state.iteration  # the engine's state is per rank
            print(f"resumed from {path} (iteration {iteration})", flush=True)


def _write_summary(run_dir: Path, trainer: Any, evaluator: Any) -> None:
    if idist.get_rank() != 0:
        return
    summary = {
        "epoch": trainer.state.epoch,
        "iteration": trainer.state.iteration,
        "world_size": idist.get_world_size(),
        "validation": {k: float(v) for k, v in evaluator.state.metrics.items()},
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))


def _guard(cfg: Any, trainer: Any, evaluator: Any, checkpoint: Checkpoint) -> None:
    """Hang detection on both engines, and a checkpoint then a clean stop on SIGTERM."""
    watchdog = HangWatchdog(float(cfg.dist.timeout_s))
    watchdog.attach(trainer)
    watchdog.attach(evaluator, final=False)
    Preemption(on_stop=checkpoint).attach(trainer)


def _log_to_tensorboard(cfg: Any, trainer: Any, evaluator: Any, optimizer: Any) -> Any:
    """Training loss, validation metrics (on the trainer's steps), lr and hparams."""
    tb = TensorboardLogger(Path(cfg.run_dir) / "tb")
    every = Events.ITERATION_COMPLETED(every=int(cfg.trainer.log_every))
    tb.attach_output_handler(trainer, every, "train", metric_names=["loss"])
    tb.attach_output_handler(
        evaluator,
        Events.COMPLETED,
        "validation",
        metric_names="all",
        global_step_transform=global_step_from_engine(trainer),
    )
    tb.attach_opt_params_handler(trainer, Events.EPOCH_STARTED, optimizer)
    hparams = {
        "lr": float(cfg.optim.lr),
        "batch_size": int(cfg.data.batch_size),
        "world_size": idist.get_world_size(),
    }
    tb.attach_hparams(trainer, hparams, metrics_from=evaluator)
    return tb


def _checkpointing(cfg: Any, trainer: Any, to_save: dict) -> Checkpoint:
    """Keep the newest ``n_saved`` checkpoints, named by iteration, at epoch ends (and every N)."""
    folder = Path(cfg.run_dir) / "checkpoints"
    checkpoint = Checkpoint(
        to_save,
        DiskSaver(folder, require_empty=False),
        n_saved=int(cfg.checkpoint.n_saved),
        global_step_transform=lambda engine, _: engine.state.iteration,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    if cfg.checkpoint.every_iters > 0:
        every = Events.ITERATION_COMPLETED(every=int(cfg.checkpoint.every_iters))
        trainer.add_event_handler(every, checkpoint)
    return checkpoint


def _validation(cfg: Any, trainer: Any, evaluator: Any, val_loader: Any) -> Any:
    """Validate every ``validate_every`` epochs and after the last; rank 0 prints the metrics."""
    every, last = int(cfg.trainer.validate_every), int(cfg.trainer.max_epochs)

    @trainer.on(Events.EPOCH_COMPLETED(event_filter=lambda _, ep: ep % every == 0 or ep == last))
    def validate(engine: Any) -> None:
        evaluator.run(val_loader)
        if idist.get_rank() == 0:
            shown = "  ".join(f"{k}={v:.4f}" for k, v in evaluator.state.metrics.items())
            print(f"epoch {engine.state.epoch}  validation  {shown}", flush=True)

    return validate


def _engines(cfg: Any, model: Any, optimizer: Any) -> tuple[Any, Any]:
    """The trainer (with a running loss and a progress bar) and the evaluator with metrics."""
    loss_fn, device = nn.CrossEntropyLoss(), idist.device()
    amp = "amp" if cfg.trainer.amp else None
    trainer = create_supervised_trainer(model, optimizer, loss_fn, device=device, amp_mode=amp)
    metrics = {"accuracy": Accuracy(), "loss": Loss(loss_fn), "f1": Fbeta(num_classes=10)}
    evaluator = create_supervised_evaluator(model, metrics, device=device, amp_mode=amp)
    RunningAverage(output_transform=lambda loss: loss, alpha=0.9).attach(trainer, "loss")
    if cfg.trainer.progress_bar:
        ProgressBar(persist=True, file=sys.stdout).attach(trainer, metric_names=["loss"])
    return trainer, evaluator


def _stop_preempted(cfg: Any, trainer: Any) -> None:
    if idist.get_rank() == 0:
        print(
            f"preempted at iteration {trainer.state.iteration}: checkpoint saved in "
            f"{Path(cfg.run_dir) / 'checkpoints'}; run the same command again to resume",
            flush=True,
        )
    raise SystemExit(EXIT_PREEMPTED)


def train(cfg: Any) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.optim``; return the validation metrics."""
    model = idist.auto_model(instantiate(cfg.model))
    optimizer = idist.auto_optim(instantiate(cfg.optim)(model.parameters()))
    train_loader, val_loader = _loaders(cfg)
    trainer, evaluator = _engines(cfg, model, optimizer)
    validate = _validation(cfg, trainer, evaluator, val_loader)
    tb = _log_to_tensorboard(cfg, trainer, evaluator, optimizer)
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer, "run": RunInfo(cfg)}
    checkpoint = _checkpointing(cfg, trainer, to_save)
    _guard(cfg, trainer, evaluator, checkpoint)
    _resume(cfg, to_save, Path(cfg.run_dir) / "checkpoints")
    last = int(cfg.trainer.max_epochs)
    if trainer.is_done(max_epochs=last):
        if idist.get_rank() == 0:
            print(f"the run in {cfg.run_dir} already finished {last} epochs", flush=True)
        validate(trainer)
    else:
        trainer.run(train_loader, max_epochs=last)
    tb.close()
    if trainer.state.preempted:
        _stop_preempted(cfg, trainer)
    _write_summary(Path(cfg.run_dir), trainer, evaluator)
    return dict(evaluator.state.metrics)
