"""An exponential moving average of a model's weights, updated on engine events (EMAHandler)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from distengine.engine import Engine, Events
from distengine.engine.events import EventEnum, EventsList, FilteredEvent
from distengine.handlers.state_param_scheduler import LambdaStateScheduler

_BUFFER_MODES = ("copy", "update", "ema_train")


class _LinearWarmUp:
    """The momentum at event ``n`` (from 1): a line from ``start`` to ``end`` over ``steps``."""

    def __init__(self, start: float, steps: int, end: float) -> None:
        self.start, self.steps, self.end = start, steps, end

    def __call__(self, event_index: int) -> float:
        now = self.start + (self.end - self.start) * (event_index - 1) / max(1, self.steps - 1)
        return min(self.end, now) if self.end >= self.start else max(self.end, now)


class EMAHandler:
    """Keeps ``ema_model``: ``ema = (1 - momentum) * ema + momentum * weights`` at each event.

    ``model`` may be wrapped in DistributedDataParallel (its ``module`` is
    followed). Every rank updates its own copy from its own weights, which
    DDP keeps equal (sharded weights: each rank its shard); no collective.
    The momentum is ``engine.state.<name>`` (:meth:`attach`); with
    ``momentum_warmup`` and ``warmup_iters`` it goes linearly from the first
    to ``momentum`` over the first ``warmup_iters`` events. ``handle_buffers``:
    ``"copy"`` the model's buffers, ``"update"`` average them too (integer
    buffers are copied), or ``"ema_train"`` leave them and keep the EMA model
    in train mode (else it is in eval mode).

    Exact resume: save the handler itself (``to_save={"ema": ema_handler,
    ...}``): its state dict holds the EMA weights and where the warm-up
    stands. Saving ``ema_model`` alone, as PyTorch-Ignite's docs do, keeps
    the weights but starts the warm-up again.

    Example::

        ema = EMAHandler(model, momentum=0.002, momentum_warmup=0.2, warmup_iters=100)
        ema.attach(trainer)                       # every ITERATION_COMPLETED
        evaluator = create_supervised_evaluator(ema.ema_model, metrics)
    """

    def __init__(
        self,
        model: nn.Module,
        momentum: float = 0.0002,
        momentum_warmup: float | None = None,
        warmup_iters: int | None = None,
        handle_buffers: str = "copy",
    ) -> None:
        if not 0 < momentum < 1:
            raise ValueError(f"Invalid momentum: {momentum!r}, it must be in (0, 1)")
        if not isinstance(model, nn.Module):
            raise ValueError(
                "model should be an instance of nn.Module or its subclasses, "
                f"but given {type(model).__name__}"
            )
        if handle_buffers not in _BUFFER_MODES:
            raise ValueError(
                f"handle_buffers can only be one of {_BUFFER_MODES}, but given {handle_buffers!r}"
            )
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        self.model, self.momentum, self.handle_buffers = model, momentum, handle_buffers
        self.ema_model = copy.deepcopy(model)
        for param in self.ema_model.parameters():
            param.detach_()
        self.ema_model.train(handle_buffers == "ema_train")
        self._momentum_lambda_obj: _LinearWarmUp | None = None
        self.momentum_scheduler: LambdaStateScheduler | None = None
        if momentum_warmup is not None and warmup_iters is not None:
            self._momentum_lambda_obj = _LinearWarmUp(momentum_warmup, warmup_iters, momentum)
            self.momentum_scheduler = LambdaStateScheduler(
                self._momentum_lambda_obj, param_name="ema_momentum"
            )

    def attach(
        self,
        engine: Engine,
        name: str = "ema_momentum",
        warn_if_exists: bool = True,
        event: EventEnum | FilteredEvent | EventsList = Events.ITERATION_COMPLETED,
    ) -> None:
        """Update the EMA model on ``event``; the momentum is ``engine.state.<name>``.

        An existing ``engine.state.<name>`` (a resumed engine, or another
        handler's) is kept, with a warning unless ``warn_if_exists=False``.

        Example: ``ema.attach(trainer, "ema_momentum", event=Events.ITERATION_COMPLETED(every=5))``.
        """
        if hasattr(engine.state, name):
            if warn_if_exists:
                warnings.warn(
                    f"Attribute '{name}' already exists in Engine.state: the engine loaded its "
                    "state dict, or another handler made it. Pass warn_if_exists=False if it "
                    "is the former, else choose another name.",
                    UserWarning,
                    stacklevel=2,
                )
        else:
            setattr(engine.state, name, self.momentum)
        if self.momentum_scheduler is not None:
            self.momentum_scheduler.param_name = name
            self.momentum_scheduler.attach(engine, event)  # the momentum first, then the EMA
        engine.add_event_handler(event, self._update_ema_model, name)

    @torch.no_grad()
    def _update_ema_model(self, engine: Engine, name: str) -> None:
        momentum = getattr(engine.state, name)
        for ema_p, p in zip(self.ema_model.parameters(), self.model.parameters()):
            ema_p.mul_(1.0 - momentum).add_(p.detach(), alpha=momentum)
        if self.handle_buffers == "ema_train":
            return
        for ema_b, b in zip(self.ema_model.buffers(), self.model.buffers()):
            if self.handle_buffers == "update" and ema_b.is_floating_point():
                ema_b.mul_(1.0 - momentum).add_(b, alpha=momentum)
            else:
                ema_b.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        """The EMA weights and the warm-up's position (plain tensors and values)."""
        schedule = self.momentum_scheduler
        return {
            "ema_model": self.ema_model.state_dict(),
            "momentum_scheduler": schedule.state_dict() if schedule is not None else None,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; a warm-up resumes where it stood."""
        self.ema_model.load_state_dict(state_dict["ema_model"])
        saved = state_dict.get("momentum_scheduler")
        if self.momentum_scheduler is not None and saved is not None:
            self.momentum_scheduler.load_state_dict(saved)
