"""PyTorch-Ignite's TensorBoard log handlers, for ``TensorboardLogger.attach``.

Each handler is called as ``handler(engine, logger, event_name)`` and writes
through ``logger.writer`` (a ``SummaryWriter`` on rank 0). The logger
attaches them on rank 0 only, except a weights or gradients handler over
sharded (DTensor) parameters: measuring those whole is a collective, so that
one runs on every rank and rank 0 writes.

Example::

    tb = TensorboardLogger("runs/exp1/tb")
    tb.attach(trainer, log_handler=WeightsScalarHandler(model, whitelist=["fc1"]),
              event_name=Events.ITERATION_COMPLETED(every=100))
    tb.attach(evaluator, log_handler=OutputHandler("validation", metric_names="all",
                                                   global_step_transform=global_step_from_engine(trainer)),
              event_name=Events.COMPLETED)
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from distengine.distributed.sharding import is_dtensor
from distengine.engine import Engine

__all__ = [
    "BaseHandler",
    "GradsHistHandler",
    "GradsScalarHandler",
    "OptimizerParamsHandler",
    "OutputHandler",
    "WeightsHistHandler",
    "WeightsScalarHandler",
    "global_step_from_engine",
]


def global_step_from_engine(
    engine: Engine, custom_event_name: Any = None, fallback_attr: str = "epoch"
) -> Callable[[Engine, Any], int]:
    """A ``global_step_transform`` reading ``engine``'s counter, as PyTorch-Ignite's.

    The counter is the one of the event the handler fires on (an evaluator's
    ``COMPLETED`` or ``EPOCH_COMPLETED``: the trainer's epoch), or of
    ``custom_event_name``; an event no counter is registered for gives
    ``engine.state.<fallback_attr>``. To put validation points on the same x
    axis as per-iteration training curves, name the iteration:

    Example::

        tb.attach_output_handler(evaluator, Events.COMPLETED, "validation", metric_names="all",
                                 global_step_transform=global_step_from_engine(
                                     trainer, Events.ITERATION_COMPLETED))
    """

    def transform(_: Engine, event_name: Any = None) -> int:
        event = custom_event_name if custom_event_name is not None else event_name
        base = getattr(event, "event", event)
        if base is None or engine.state.counter_for(base) is None:
            return getattr(engine.state, fallback_attr)
        return engine.state.get_event_attrib_value(base)

    return transform


def event_step(engine: Engine, event: Any) -> int:
    """The counter of ``event`` in ``engine``'s state (its iteration for an uncounted event)."""
    return global_step_from_engine(engine, fallback_attr="iteration")(engine, event)


class BaseHandler:
    """What ``TensorboardLogger.attach`` calls: ``handler(engine, logger, event_name)``.

    ``every_rank()`` says whether it must run on every rank (it takes
    part in a collective); otherwise it runs on rank 0 only.
    """

    def every_rank(self) -> bool:
        return False

    def __call__(self, engine: Engine, logger: Any, event_name: Any) -> None:
        raise NotImplementedError

    def check_logger(self, logger: Any) -> None:
        """Refuse a logger other than a TensorboardLogger (these handlers write to its writer)."""
        from distengine.handlers.tensorboard_logger import TensorboardLogger

        if not isinstance(logger, TensorboardLogger):
            raise RuntimeError(
                f"Handler '{type(self).__name__}' works only with TensorboardLogger, "
                f"got {type(logger).__name__}"
            )


class OutputHandler(BaseHandler):
    """Logs metrics, the transformed output and state attributes as ``<tag>/<name>`` scalars.

    Values may be numbers, 0-d or 1-d tensors (``<tag>/<name>/<i>``) and
    dicts or sequences of them (``<tag>/<name>/<key>``); anything else is
    skipped with a warning, as in PyTorch-Ignite. The step is the counter of
    the event it fires on, unless ``global_step_transform(engine, event)``
    gives another (see :func:`global_step_from_engine`).

    Example::

        tb.attach(trainer, OutputHandler("train", output_transform=lambda loss: {"loss": loss}),
                  Events.ITERATION_COMPLETED(every=50))
    """

    def __init__(
        self,
        tag: str,
        metric_names: str | Sequence[str] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        global_step_transform: Callable[[Engine, Any], int] | None = None,
        state_attributes: Sequence[str] | None = None,
    ) -> None:
        if metric_names is not None and not (
            metric_names == "all" or isinstance(metric_names, (list, tuple))
        ):
            raise TypeError(f"metric_names must be a list of names or 'all', got {metric_names!r}")
        for name, fn in (
            ("output_transform", output_transform),
            ("global_step_transform", global_step_transform),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a function, got {fn!r}")
        if metric_names is None and output_transform is None and state_attributes is None:
            raise ValueError(
                "give metric_names, output_transform or state_attributes: nothing to log"
            )
        self.tag = tag
        self.metric_names = metric_names
        self.output_transform = output_transform
        self.global_step_transform = global_step_transform or event_step
        self.state_attributes = state_attributes
        self._written: dict[str, int] = {}  # board values: the iteration of the last one written

    def values(self, engine: Engine) -> dict[str, Any]:
        """What to log, before flattening: the chosen metrics, output and state attributes."""
        metrics = engine.state.metrics
        values: dict[str, Any] = {}
        if self.metric_names == "all":
            values.update(metrics)
        elif self.metric_names is not None:
            board = getattr(engine, "board", None)
            for name in self.metric_names:
                if name not in metrics and board is not None and board.shares(name):
                    continue  # a running value the ranks have not agreed on yet: no point
                if name not in metrics:
                    warnings.warn(
                        f"metric {name!r} is not in the engine's metrics {sorted(metrics)}",
                        stacklevel=2,
                    )
                    continue
                values[name] = metrics[name]
        if self.output_transform is not None:
            out = self.output_transform(engine.state.output)
            values.update(out if isinstance(out, dict) else {"output": out})
        for name in self.state_attributes or ():
            values[name] = getattr(engine.state, name, None)
        return values

    def __call__(self, engine: Engine, logger: Any, event_name: Any) -> None:
        self.check_logger(logger)
        step = self.global_step_transform(engine, event_name)
        if not isinstance(step, numbers.Integral):
            raise TypeError(
                f"global_step must be int, got {step!r}: global_step_transform must return an int"
            )
        values = self.values(engine)
        steps = {name: int(step) for name in values if name in engine.state.metrics}
        own_step = self.global_step_transform is event_step
        stale = fresh_steps(engine, event_name, own_step, steps, self._written)
        by_step: dict[int, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in stale:
                by_step.setdefault(steps.get(name, int(step)), {})[name] = value
        for at, group in by_step.items():
            for key, value in flatten(group, self.tag).items():
                logger.writer.add_scalar(key, value, at)


def fresh_steps(
    engine: Engine, event: Any, own_step: bool, steps: dict[str, int], written: dict[str, int]
) -> set[str]:
    """The board values in ``steps`` already written (a stale value is never a new point);
    the others move to the iteration they hold for when the step counts ``engine``'s
    iterations (``own_step``: the event's own counter)."""
    board = getattr(engine, "board", None)
    if board is None:
        return set()
    by_iteration = own_step and engine.state.counter_for(event) in ("iteration", None)
    stale = set()
    for name in steps:
        as_of = board.as_of(name)
        if as_of is None:
            continue
        if written.get(name) == as_of:
            stale.add(name)
            continue
        written[name] = as_of
        if by_iteration:
            steps[name] = as_of
    return stale


def flatten(values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """``{"<prefix>/<name>[/<key or index>...]": number}`` from nested dicts, sequences and
    0-d/1-d tensors; other values are skipped with a warning."""
    flat: dict[str, float] = {}
    for name, value in values.items():
        key = f"{prefix}/{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, key))
        elif isinstance(value, Sequence) and not isinstance(value, str):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, key))
        elif isinstance(value, torch.Tensor) and value.dim() == 1:
            flat.update(flatten({str(i): v for i, v in enumerate(value.tolist())}, key))
        elif isinstance(value, torch.Tensor) and value.dim() == 0:
            flat[key] = value.item()
        elif isinstance(value, numbers.Number):
            flat[key] = value  # type: ignore[assignment]
        else:
            warnings.warn(f"cannot log {key} of type {type(value).__name__}", stacklevel=3)
    return flat


class OptimizerParamsHandler(BaseHandler):
    """Logs each param group's ``param_name`` as ``[<tag>/]<param_name>/group_<i>``.

    Example::

        tb.attach(trainer, OptimizerParamsHandler(optimizer), Events.ITERATION_STARTED)
    """

    def __init__(self, optimizer: Any, param_name: str = "lr", tag: str | None = None) -> None:
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(optimizer, torch.optim.Optimizer) and not isinstance(groups, Sequence):
            raise TypeError(
                f"optimizer must have param_groups (a torch optimizer), got {optimizer!r}"
            )
        self.optimizer, self.param_name, self.tag = optimizer, param_name, tag

    def __call__(self, engine: Engine, logger: Any, event_name: Any) -> None:
        self.check_logger(logger)
        step = event_step(engine, event_name)
        prefix = f"{self.tag}/" if self.tag else ""
        for i, group in enumerate(self.optimizer.param_groups):
            logger.writer.add_scalar(
                f"{prefix}{self.param_name}/group_{i}", float(group[self.param_name]), step
            )


class _ParametersHandler(BaseHandler):
    """The parameters of ``model`` chosen by ``whitelist``: name prefixes, or
    ``whitelist(name, parameter) -> bool``; all of them without one."""

    kind = ""  # "weights" or "grads"

    def __init__(
        self,
        model: nn.Module,
        tag: str | None = None,
        whitelist: Sequence[str] | Callable[[str, nn.Parameter], bool] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        named = list(model.named_parameters())
        if callable(whitelist):
            named = [(n, p) for n, p in named if whitelist(n, p)]
        elif whitelist is not None:
            named = [(n, p) for n, p in named if n.startswith(tuple(whitelist))]
        self.model, self.tag, self.weights = model, tag, tuple(named)

    def every_rank(self) -> bool:
        return any(is_dtensor(p) for _, p in self.weights)

    def tensors(self) -> list[tuple[str, torch.Tensor]]:
        """``(name with '/', tensor)`` to log, whole (a sharded one is gathered: a collective)."""
        chosen = [(n, p.grad if self.kind == "grads" else p.data) for n, p in self.weights]
        return [
            (n.replace(".", "/"), t.full_tensor() if is_dtensor(t) else t)
            for n, t in chosen
            if t is not None
        ]

    def key(self, name: str, what: str) -> str:
        return f"{self.tag}/{what}/{name}" if self.tag else f"{what}/{name}"


class _ScalarHandler(_ParametersHandler):
    def __init__(
        self,
        model: nn.Module,
        reduction: Callable[[torch.Tensor], Any] = torch.norm,
        tag: str | None = None,
        whitelist: Sequence[str] | Callable[[str, nn.Parameter], bool] | None = None,
    ) -> None:
        super().__init__(model, tag, whitelist)
        if not callable(reduction):
            raise TypeError(f"reduction must be a function, got {reduction!r}")
        out = reduction(torch.ones(4, 2))
        if not (
            isinstance(out, numbers.Number) or (isinstance(out, torch.Tensor) and out.dim() == 0)
        ):
            raise TypeError(f"reduction must return a scalar, got {type(out).__name__}")
        self.reduction = reduction

    def __call__(self, engine: Engine, logger: Any, event_name: Any) -> None:
        self.check_logger(logger)
        step = event_step(engine, event_name)
        what = f"{self.kind}_{getattr(self.reduction, '__name__', 'reduction')}"
        for name, tensor in self.tensors():
            logger.writer.add_scalar(self.key(name, what), self.reduction(tensor), step)


class _HistHandler(_ParametersHandler):
    def __call__(self, engine: Engine, logger: Any, event_name: Any) -> None:
        self.check_logger(logger)
        step = event_step(engine, event_name)
        for name, tensor in self.tensors():
            values = tensor.cpu().numpy()
            logger.writer.add_histogram(
                tag=self.key(name, self.kind), values=values, global_step=step
            )


class WeightsScalarHandler(_ScalarHandler):
    """Logs ``reduction`` (default ``torch.norm``) of each parameter as
    ``[<tag>/]weights_<reduction>/<name>``.

    Example::

        tb.attach(trainer, WeightsScalarHandler(model, whitelist=["fc1"]),
                  Events.ITERATION_COMPLETED(every=100))
    """

    kind = "weights"


class GradsScalarHandler(_ScalarHandler):
    """Logs ``reduction`` (default ``torch.norm``) of each gradient as
    ``[<tag>/]grads_<reduction>/<name>`` (parameters without one are skipped).

    Example::

        tb.attach(trainer, GradsScalarHandler(model), Events.ITERATION_COMPLETED(every=100))
    """

    kind = "grads"


class WeightsHistHandler(_HistHandler):
    """Logs a histogram of each parameter as ``[<tag>/]weights/<name>``.

    Example::

        tb.attach(trainer, WeightsHistHandler(model, whitelist=lambda n, p: "conv" in n),
                  Events.EPOCH_COMPLETED)
    """

    kind = "weights"


class GradsHistHandler(_HistHandler):
    """Logs a histogram of each gradient as ``[<tag>/]grads/<name>``.

    Example::

        tb.attach(trainer, GradsHistHandler(model, whitelist=["fc2.weight"]),
                  Events.EPOCH_COMPLETED)
    """

    kind = "grads"
