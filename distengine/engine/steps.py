"""The training step as a stateful object: precision, GradScaler and gradient accumulation.

Its state (the GradScaler's, and the gradients of an unfinished accumulation
window) is part of the engine's state dict, so ``{"trainer": trainer}`` in a
checkpoint resumes AMP and accumulation exactly.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from distengine.distributed.env import get_world_size
from distengine.distributed.sharding import (
    check_optimizer_after_sharding,
    is_fsdp_module,
    mixed_precision_dtype,
    no_gradient_sync,
)
from distengine.distributed.sharding import clip_grad_norm as clip_gradients
from distengine.distributed.shards import check_training_shards

if TYPE_CHECKING:
    from distengine.engine.engine import Engine

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


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


def copies_overlap(device: torch.device | None) -> bool:
    """The default ``non_blocking``: True for a CUDA device (a host-to-device copy from
    pinned memory then overlaps with the GPU's work; from pageable memory it is as before)."""
    return device is not None and device.type == "cuda"


def model_device(model: torch.nn.Module) -> torch.device | None:
    """The device of the model's first parameter (None for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else None


def autocast_dtype(
    amp_mode: str | None, amp_dtype: torch.dtype | str | None, device: torch.device | None
) -> torch.dtype | None:
    """The dtype autocast runs in: None without AMP; bf16 on CPU and fp16 on CUDA by default."""
    if amp_mode not in (None, "amp"):
        raise ValueError(f"amp_mode must be None or 'amp', got {amp_mode!r}")
    if amp_mode is None:
        if amp_dtype is not None:
            raise ValueError(f"amp_dtype={amp_dtype!r} needs amp_mode='amp'")
        return None
    if amp_dtype is None:
        return torch.float16 if device is not None and device.type == "cuda" else torch.bfloat16
    dtype = _DTYPES.get(amp_dtype, amp_dtype) if isinstance(amp_dtype, str) else amp_dtype
    if dtype not in _DTYPES.values():
        raise ValueError(
            f"amp_dtype must be torch.float16, torch.bfloat16 or their names, got {amp_dtype!r}"
        )
    return dtype


def autocast(dtype: torch.dtype | None, device: torch.device | None):
    """A context manager factory: autocast to ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext
    device_type = device.type if device is not None else "cpu"
    return lambda: torch.autocast(device_type=device_type, dtype=dtype)


def _grad_scaler(scaler: bool | torch.amp.GradScaler, dtype, device) -> Any:
    """The GradScaler to use: the one given, or one exactly where fp16 needs it."""
    if isinstance(scaler, torch.amp.GradScaler):
        return scaler
    if scaler not in (True, False):
        raise ValueError(f"scaler must be False, True or a GradScaler, got {scaler!r}")
    if dtype != torch.float16:
        if scaler:
            raise ValueError(
                "scaler=True needs amp_mode='amp' with float16 (the default on CUDA); "
                f"bfloat16 and float32 need no scaler (autocast dtype: {dtype}, device: {device})"
            )
        return None
    return torch.amp.GradScaler(device.type if device is not None else "cpu")


def _loss_output(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> Any:
    return loss.detach()


def _identity(output: Any) -> Any:
    return output


def _call_model(model: torch.nn.Module, x: Any) -> Any:
    return model(x)


class TrainStep:
    """``(engine, batch) -> output``: one supervised training iteration, and its state.

    Moves each batch to ``device`` (``non_blocking`` by default on CUDA), runs
    ``loss_fn(model(x), y)`` under autocast (``amp_mode="amp"``: bf16 on
    CPU, fp16 with a GradScaler on CUDA, or ``amp_dtype``), backpropagates and
    steps ``optimizer``. With ``gradient_accumulation_steps=k`` the epoch is
    cut into windows of k iterations that restart each epoch; the optimizer
    steps at each window's end and at the epoch's (and the run's) last
    iteration, on the mean of the window's micro-batch gradients; DDP
    synchronises only then (``no_sync`` in between). An epoch cut short by
    ``terminate_epoch`` drops its unfinished window. Gradients are cleared when
    a window starts, so handlers after an iteration see the gradients the
    optimizer stepped on (PyTorch-Ignite's ``GradsScalarHandler`` does).

    ``model_fn(model, x)`` runs the model (default ``model(x)``) and
    ``model_transform`` turns its output into ``y_pred`` for the loss, as in
    PyTorch-Ignite.

    ``state_dict`` holds the GradScaler's state and, when saved inside a
    window, this rank's pending gradients (so it is per rank:
    ``checkpoint_per_rank``). Accumulation needs the epoch length: data with
    ``len`` or ``run(..., epoch_length=n)``.

    Example::

        step = TrainStep(model, optimizer, nn.CrossEntropyLoss(), amp_mode="amp",
                         gradient_accumulation_steps=4)
        trainer = Engine(step)
        checkpoint = {"model": model, "optimizer": optimizer, "trainer": trainer}
    """

    checkpoint_per_rank = True

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        device: torch.device | str | None = None,
        non_blocking: bool | None = None,
        prepare_batch: Callable = prepare_batch,
        output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_output,
        amp_mode: str | None = None,
        scaler: bool | torch.amp.GradScaler = False,
        gradient_accumulation_steps: int = 1,
        clip_grad_norm: float | None = None,
        amp_dtype: torch.dtype | str | None = None,
        model_transform: Callable[[Any], Any] = _identity,
        model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
    ) -> None:
        steps = gradient_accumulation_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be an int >= 1, got {steps!r}")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self._module = model.module if isinstance(model, DistributedDataParallel) else model
        self.device = torch.device(device) if device is not None else model_device(model)
        self.non_blocking = copies_overlap(self.device) if non_blocking is None else non_blocking
        self.prepare_batch = prepare_batch
        self.output_transform = output_transform
        self.model_transform, self.model_fn = model_transform, model_fn
        if is_fsdp_module(model):
            check_optimizer_after_sharding(optimizer)
        self.dtype = autocast_dtype(amp_mode, amp_dtype, self.device)
        policy = mixed_precision_dtype(model)
        if policy is not None and self.dtype is not None:
            if amp_dtype is not None and self.dtype != policy:
                raise ValueError(
                    f"amp_dtype={amp_dtype!r} differs from the FSDP model's mixed-precision "
                    f"policy ({policy}): leave amp_dtype unset, or shard with "
                    f"mp_dtype={amp_dtype!r}"
                )
            self.dtype = policy  # the policy casts; autocast on top would only cost
        self._autocast = autocast(None if policy is not None else self.dtype, self.device)
        self.scaler = _grad_scaler(scaler, self.dtype, self.device)
        self.accumulation_steps = steps
        self.clip_grad_norm = clip_grad_norm
        self._pending = False
        self._iteration = 0
        self._checked_data: Any = None

    def __call__(self, engine: Engine, batch: Any) -> Any:
        model = self.model
        if not self._module.training:  # an evaluator may have switched the inner module
            model.train()
        if engine.state.dataloader is not self._checked_data:
            self._check_data(engine)
        first, last, size = self._window(engine)
        if first:  # the last window's gradients (left for handlers, as in PyTorch-Ignite) or
            self.optimizer.zero_grad(set_to_none=True)  # an unfinished window's go
        x, y = self.prepare_batch(batch, self.device, self.non_blocking)
        self._iteration = engine.state.iteration
        with contextlib.nullcontext() if last else no_gradient_sync(model):
            with self._autocast():
                y_pred = self.model_transform(self.model_fn(model, x))
                loss = self.loss_fn(y_pred, y)
            scaled = loss / size if size > 1 else loss
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self._pending = not last
        if last:
            self._optimizer_step()
        return self.output_transform(x, y, y_pred, loss)

    def _check_data(self, engine: Engine) -> None:
        if isinstance(self.model, DistributedDataParallel) or is_fsdp_module(self.model):
            check_training_shards(engine.state.dataloader)
        self._checked_data = engine.state.dataloader
        k, length = self.accumulation_steps, engine.state.epoch_length
        if k > 1 and length and length % k:
            warnings.warn(
                f"gradient_accumulation_steps={k} does not divide the epoch length {length}: "
                "each epoch ends with a shorter window whose mean gradient steps the optimizer "
                "(PyTorch-Ignite carries the window into the next epoch, dividing by k)",
                stacklevel=2,
            )

    def _window(self, engine: Engine) -> tuple[bool, bool, int]:
        """(first micro-step of its window, last one, micro-steps in the window)."""
        k = self.accumulation_steps
        if k == 1:
            return True, True, 1
        s = engine.state
        if s.epoch_length is None:
            raise ValueError(
                f"gradient_accumulation_steps={k} needs the epoch length to find each epoch's "
                "last window: give the data a len or pass run(..., epoch_length=n)"
            )
        position = engine.epoch_iteration  # 1-based
        start = (position - 1) // k * k + 1
        end = min(start + k - 1, s.epoch_length)
        if s.max_iters is not None:
            end = min(end, position + s.max_iters - s.iteration)
        return position == start, position >= end, end - start + 1

    def _optimizer_step(self) -> None:
        params = self.model.parameters
        if self.scaler is not None:
            if self.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                clip_gradients(params(), self.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.clip_grad_norm is not None:
                clip_gradients(params(), self.clip_grad_norm)
            self.optimizer.step()

    @property
    def checkpointable(self) -> bool:
        """Whether :meth:`state_dict` can be taken now: False inside an accumulation window of
        an FSDP model (a stop then waits for the window's end: see ``Preemption``)."""
        return not (self._pending and is_fsdp_module(self.model))

    def state_dict(self) -> dict[str, Any]:
        """The GradScaler's state, and this rank's gradients when saved inside a window."""
        grads = None
        if not self.checkpointable:
            raise ValueError(
                f"cannot save the training step at iteration {self._iteration}, inside a "
                f"gradient-accumulation window of {self.accumulation_steps} iterations: FSDP "
                "keeps the window's unreduced gradients inside the sharded model, where no "
                "checkpoint reaches them. Save at window ends (e.g. "
                f"Events.ITERATION_COMPLETED(every={self.accumulation_steps})) or epoch ends"
            )
        if self._pending:
            grads = [
                p.grad.detach().clone() if p.grad is not None else None for p in self._params()
            ]
        return {
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "pending_grads": grads,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the scaler, and the gradients of an open window."""
        saved_scaler, grads = state_dict["scaler"], state_dict["pending_grads"]
        if (saved_scaler is None) != (self.scaler is None):
            raise ValueError(
                "the checkpoint's training step "
                f"{'had no' if saved_scaler is None else 'had a'} GradScaler, this one "
                f"{'has none' if self.scaler is None else 'has one'}: resume with the same "
                "amp_mode/amp_dtype/scaler"
            )
        params = self._params()
        if grads is not None and len(grads) != len(params):
            raise ValueError(
                f"the checkpoint holds pending gradients of {len(grads)} parameters, "
                f"the model has {len(params)}"
            )
        if self.scaler is not None:
            self.scaler.load_state_dict(saved_scaler)
        for param, grad in zip(params, grads or []):
            param.grad = None if grad is None else grad.to(param.device, param.dtype)
        self._pending = grads is not None

    def load_per_rank_state_dicts(self, states: list[dict[str, Any]]) -> None:
        """Resume from states saved on another number of ranks (contract C1).

        Outside an accumulation window every rank's state is the GradScaler's,
        the same on all ranks: rank 0's is loaded. Pending gradients (saved
        inside a window) belong to their ranks' shares of the batch and are
        refused by name.
        """
        if any(state["pending_grads"] is not None for state in states):
            raise ValueError(
                f"the training step was saved by {len(states)} rank(s) inside a gradient-"
                f"accumulation window: their pending gradients cannot be shared among "
                f"{get_world_size()} rank(s). Resume with {len(states)} rank(s), or from a "
                "checkpoint taken at a window's end"
            )
        self.load_state_dict(states[0])

    def _params(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())
