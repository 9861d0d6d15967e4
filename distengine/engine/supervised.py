"""Ready-made training and evaluation steps for the usual supervised loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from distengine.engine.engine import Engine


def prepare_batch(batch: Sequence[Any], device: torch.device | None, non_blocking: bool):
    """Split ``(x, y)`` and move both to ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            "the default prepare_batch expects batches of (x, y); got "
            f"{type(batch).__name__}; pass prepare_batch=fn(batch, device, non_blocking)"
        )
    x, y = batch
    if device is None:
        return x, y
    return x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)


def _model_device(model: torch.nn.Module) -> torch.device | None:
    param = next(model.parameters(), None)
    return param.device if param is not None else None


def _autocast(amp_mode: str | None, device: torch.device | None):
    if amp_mode is None:
        return contextlib.nullcontext
    if amp_mode != "amp":
        raise ValueError(f"amp_mode must be None or 'amp', got {amp_mode!r}")
    device_type = device.type if device is not None else "cpu"
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    return lambda: torch.autocast(device_type=device_type, dtype=dtype)


def _make_scaler(scaler: bool | torch.amp.GradScaler, amp_mode, device) -> Any:
    if isinstance(scaler, torch.amp.GradScaler):
        return scaler
    if scaler is True:
        if amp_mode != "amp" or device is None or device.type != "cuda":
            raise ValueError(
                "scaler=True needs amp_mode='amp' on a CUDA device (fp16); on CPU, AMP uses "
                f"bf16 and needs no scaler (amp_mode={amp_mode!r}, device={device})"
            )
        return torch.amp.GradScaler("cuda")
    if scaler is not False:
        raise ValueError(f"scaler must be False, True or a GradScaler, got {scaler!r}")
    if amp_mode == "amp" and device is not None and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def supervised_training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: torch.device | str | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = prepare_batch,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = lambda x, y, y_pred, loss: (
        loss.detach()
    ),
    amp_mode: str | None = None,
    scaler: bool | torch.amp.GradScaler = False,
    gradient_accumulation_steps: int = 1,
    clip_grad_norm: float | None = None,
) -> Callable[[Engine, Any], Any]:
    """The ``(engine, batch) -> output`` function behind :func:`create_supervised_trainer`."""
    if not isinstance(gradient_accumulation_steps, int) or gradient_accumulation_steps < 1:
        raise ValueError(
            f"gradient_accumulation_steps must be an int >= 1, got {gradient_accumulation_steps!r}"
        )
    device = torch.device(device) if device is not None else _model_device(model)
    autocast = _autocast(amp_mode, device)
    grad_scaler = _make_scaler(scaler, amp_mode, device)
    steps = gradient_accumulation_steps

    def step(engine: Engine, batch: Any) -> Any:
        if not model.training:
            model.train()
        x, y = prepare_batch(batch, device, non_blocking)
        last_micro_step = engine.state.iteration % steps == 0
        sync = (
            contextlib.nullcontext()
            if last_micro_step or not hasattr(model, "no_sync")
            else (model.no_sync())
        )
        with sync:
            with autocast():
                y_pred = model(x)
                loss = loss_fn(y_pred, y)
            scaled = loss / steps if steps > 1 else loss
            (grad_scaler.scale(scaled) if grad_scaler else scaled).backward()
        if last_micro_step:
            _optimizer_step(model, optimizer, grad_scaler, clip_grad_norm)
        return output_transform(x, y, y_pred, loss)

    return step


def _optimizer_step(model, optimizer, grad_scaler, clip_grad_norm) -> None:
    if grad_scaler is not None:
        if clip_grad_norm is not None:
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def create_supervised_trainer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: torch.device | str | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = prepare_batch,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = lambda x, y, y_pred, loss: (
        loss.detach()
    ),
    amp_mode: str | None = None,
    scaler: bool | torch.amp.GradScaler = False,
    gradient_accumulation_steps: int = 1,
    clip_grad_norm: float | None = None,
) -> Engine:
    """An engine that trains ``model`` on ``(x, y)`` batches; its output is the loss.

    ``device`` defaults to the model's device. ``amp_mode="amp"`` autocasts to
    bf16 on CPU and fp16 on CUDA (with a GradScaler, or pass ``scaler``).
    With ``gradient_accumulation_steps=k`` the optimizer steps every k
    iterations on the mean of k micro-batch gradients (DDP syncs only then).
    The output is the detached loss tensor: no host-device sync per step.

    Example::

        trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
        trainer.run(train_loader, max_epochs=5)
    """
    step = supervised_training_step(
        model,
        optimizer,
        loss_fn,
        device,
        non_blocking,
        prepare_batch,
        output_transform,
        amp_mode,
        scaler,
        gradient_accumulation_steps,
        clip_grad_norm,
    )
    return Engine(step)


def supervised_evaluation_step(
    model: torch.nn.Module,
    device: torch.device | str | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = prepare_batch,
    output_transform: Callable[[Any, Any, Any], Any] = lambda x, y, y_pred: (y_pred, y),
    amp_mode: str | None = None,
) -> Callable[[Engine, Any], Any]:
    """The ``(engine, batch) -> (y_pred, y)`` step of :func:`create_supervised_evaluator`."""
    device = torch.device(device) if device is not None else _model_device(model)
    autocast = _autocast(amp_mode, device)

    def step(engine: Engine, batch: Any) -> Any:
        if model.training:
            model.eval()
        with torch.no_grad(), autocast():
            x, y = prepare_batch(batch, device, non_blocking)
            y_pred = model(x)
        return output_transform(x, y, y_pred)

    return step


def create_supervised_evaluator(
    model: torch.nn.Module,
    metrics: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = prepare_batch,
    output_transform: Callable[[Any, Any, Any], Any] = lambda x, y, y_pred: (y_pred, y),
    amp_mode: str | None = None,
) -> Engine:
    """An engine that runs ``model`` without gradients and feeds ``metrics`` ``(y_pred, y)``.

    Example::

        evaluator = create_supervised_evaluator(model, {"accuracy": Accuracy()})
        evaluator.run(val_loader)
        print(evaluator.state.metrics["accuracy"])
    """
    engine = Engine(
        supervised_evaluation_step(
            model, device, non_blocking, prepare_batch, output_transform, amp_mode
        )
    )
    for name, metric in (metrics or {}).items():
        metric.attach(engine, name)
    return engine
