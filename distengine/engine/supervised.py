"""Ready-made training and evaluation steps for the usual supervised loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from distengine.distributed.auto import sync_buffers
from distengine.distributed.sharding import is_fsdp_module, mixed_precision_dtype
from distengine.engine.deterministic import DeterministicEngine
from distengine.engine.engine import Engine
from distengine.engine.even_forwards import EvenForwards
from distengine.engine.events import Events
from distengine.engine.steps import (
    TrainStep,
    autocast,
    autocast_dtype,
    copies_overlap,
    model_device,
    prepare_batch,
)


def supervised_training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: torch.device | str | None = None,
    non_blocking: bool | None = None,
    prepare_batch: Callable = prepare_batch,
    model_transform: Callable[[Any], Any] = lambda output: output,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = lambda x, y, y_pred, loss: (
        loss.detach()
    ),
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = lambda model, x: model(x),
    amp_mode: str | None = None,
    scaler: bool | torch.amp.GradScaler = False,
    clip_grad_norm: float | None = None,
    amp_dtype: torch.dtype | str | None = None,
) -> TrainStep:
    """The :class:`TrainStep` behind :func:`create_supervised_trainer` (same arguments;
    positions as PyTorch-Ignite's ``supervised_training_step``, then distengine's own)."""
    return TrainStep(
        model,
        optimizer,
        loss_fn,
        device=device,
        non_blocking=non_blocking,
        prepare_batch=prepare_batch,
        output_transform=output_transform,
        amp_mode=amp_mode,
        scaler=scaler,
        gradient_accumulation_steps=gradient_accumulation_steps,
        clip_grad_norm=clip_grad_norm,
        amp_dtype=amp_dtype,
        model_transform=model_transform,
        model_fn=model_fn,
    )


def create_supervised_trainer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: torch.device | str | None = None,
    non_blocking: bool | None = None,
    prepare_batch: Callable = prepare_batch,
    model_transform: Callable[[Any], Any] = lambda output: output,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = lambda x, y, y_pred, loss: (
        loss.detach()
    ),
    deterministic: bool = False,
    amp_mode: str | None = None,
    scaler: bool | torch.amp.GradScaler = False,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = lambda model, x: model(x),
    clip_grad_norm: float | None = None,
    amp_dtype: torch.dtype | str | None = None,
) -> Engine:
    """An engine that trains ``model`` on ``(x, y)`` batches; its output is the loss.

    The engine runs a :class:`~distengine.engine.steps.TrainStep`
    (``trainer.process_function``): ``y_pred = model_transform(model_fn(model,
    x))``, ``loss = loss_fn(y_pred, y)``. The arguments and their positions are
    PyTorch-Ignite's (``deterministic=True`` gives a
    :class:`~distengine.engine.DeterministicEngine`), then ``clip_grad_norm``
    and ``amp_dtype``. ``device`` defaults to the model's device;
    ``non_blocking`` (None) is True on CUDA, else False.
    ``amp_mode="amp"`` autocasts to bf16 on CPU and fp16 on CUDA (with a
    GradScaler); ``amp_dtype`` picks the dtype instead, ``scaler`` passes a
    GradScaler or requires one. With ``gradient_accumulation_steps=k`` the
    optimizer steps at the end of each window of k iterations (windows
    restart each epoch; the last iteration of an epoch always steps) on the
    mean of the window's gradients (DDP syncs only then). The step's state
    (scaler, pending gradients) is in ``trainer.state_dict()``. The output is
    the detached loss tensor (Ignite's is ``loss.item()``): no host-device
    sync per step.

    Example::

        trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
        trainer.run(train_loader, max_epochs=5)
    """
    step = supervised_training_step(
        model,
        optimizer,
        loss_fn,
        device=device,
        non_blocking=non_blocking,
        prepare_batch=prepare_batch,
        model_transform=model_transform,
        output_transform=output_transform,
        gradient_accumulation_steps=gradient_accumulation_steps,
        model_fn=model_fn,
        amp_mode=amp_mode,
        scaler=scaler,
        clip_grad_norm=clip_grad_norm,
        amp_dtype=amp_dtype,
    )
    return DeterministicEngine(step) if deterministic else Engine(step)


def supervised_evaluation_step(
    model: torch.nn.Module,
    device: torch.device | str | None = None,
    non_blocking: bool | None = None,
    prepare_batch: Callable = prepare_batch,
    model_transform: Callable[[Any], Any] = lambda output: output,
    output_transform: Callable[[Any, Any, Any], Any] = lambda x, y, y_pred: (y_pred, y),
    model_fn: Callable[[torch.nn.Module, Any], Any] = lambda model, x: model(x),
    amp_mode: str | None = None,
    amp_dtype: torch.dtype | str | None = None,
) -> Callable[[Engine, Any], Any]:
    """The ``(engine, batch) -> (y_pred, y)`` step of :func:`create_supervised_evaluator`:
    ``y_pred = model_transform(model_fn(model, x))``.

    A DistributedDataParallel model runs unwrapped (``model.module``): its
    forward would run collectives (a buffer broadcast) per batch. An FSDP
    model's forwards are counted (``step.even_forwards``): every rank must
    run as many (see :mod:`distengine.engine.even_forwards`); a
    mixed-precision policy replaces autocast. ``non_blocking`` (None) is True
    on CUDA, else False.
    """
    device = torch.device(device) if device is not None else model_device(model)
    non_blocking = copies_overlap(device) if non_blocking is None else non_blocking
    dtype = autocast_dtype(amp_mode, amp_dtype, device)
    cast = autocast(None if mixed_precision_dtype(model) else dtype, device)
    if isinstance(model, DistributedDataParallel):
        model = model.module
    even = (
        EvenForwards(model, prepare_batch, device, non_blocking, model_fn, cast)
        if is_fsdp_module(model)
        else None
    )

    def step(engine: Engine, batch: Any) -> Any:
        if model.training:
            model.eval()
        with torch.no_grad(), cast():
            x, y = prepare_batch(batch, device, non_blocking)
            if even is not None:
                even.seen(x)
            y_pred = model_transform(model_fn(model, x))
        return output_transform(x, y, y_pred)

    step.even_forwards = even  # type: ignore[attr-defined]
    return step


def create_supervised_evaluator(
    model: torch.nn.Module,
    metrics: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    non_blocking: bool | None = None,
    prepare_batch: Callable = prepare_batch,
    model_transform: Callable[[Any], Any] = lambda output: output,
    output_transform: Callable[[Any, Any, Any], Any] = lambda x, y, y_pred: (y_pred, y),
    amp_mode: str | None = None,
    model_fn: Callable[[torch.nn.Module, Any], Any] = lambda model, x: model(x),
    amp_dtype: torch.dtype | str | None = None,
) -> Engine:
    """An engine that runs ``model`` without gradients and feeds ``metrics`` ``(y_pred, y)``.

    ``y_pred = model_transform(model_fn(model, x))``; the arguments and their
    positions are PyTorch-Ignite's, then ``amp_dtype``. With several ranks,
    give it an exact shard of the data (``auto_dataloader(...,
    shuffle=False)``): metrics then equal those of one process on the whole
    dataset. A DistributedDataParallel model runs unwrapped, without
    collectives per batch; its buffers (BatchNorm statistics) are broadcast
    from rank 0 once per run, at ``STARTED``, as DDP's forward would have done.
    An FSDP model's forward is a collective: at the epoch's end, ranks whose
    shard had fewer batches run the missing forwards (outputs discarded), so
    no rank waits for another.

    Example::

        evaluator = create_supervised_evaluator(model, {"accuracy": Accuracy()})
        evaluator.run(val_loader)
        print(evaluator.state.metrics["accuracy"])
    """
    step = supervised_evaluation_step(
        model,
        device,
        non_blocking,
        prepare_batch,
        model_transform,
        output_transform,
        model_fn,
        amp_mode,
        amp_dtype,
    )
    engine = Engine(step)
    if step.even_forwards is not None:  # before the metrics' reduction at EPOCH_COMPLETED
        even = step.even_forwards
        engine.add_event_handler(Events.STARTED, even.started)
        engine.add_event_handler(Events.EPOCH_STARTED, even.epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, even.even_out)
    if isinstance(model, DistributedDataParallel) and model.broadcast_buffers:
        module, group = model.module, model.process_group
        engine.add_event_handler(Events.STARTED, lambda: sync_buffers(module, group))
    for name, metric in (metrics or {}).items():
        metric.attach(engine, name)
    return engine
