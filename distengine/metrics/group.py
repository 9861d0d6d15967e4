"""All metrics attached to one engine: updated by one handler, reduced together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from distengine.engine import Engine, Events
from distengine.metrics.metric import Metric
from distengine.metrics.metrics_lambda import MetricsLambda
from distengine.metrics.reduction import reduced_states

if TYPE_CHECKING:
    from distengine.engine.handlers import RemovableEventHandle

_ATTR = "_distengine_metrics"
_RESET_AT = {"epoch_wise": "epoch", "running": "epoch", "batch_wise": "iteration"}
_DONE_AT = {"epoch_wise": "epoch", "running": "iteration", "batch_wise": "iteration"}


def _leaves(metric: Metric) -> list[Metric]:
    """The metrics that really accumulate data under ``metric`` (lambdas are looked through)."""
    found: list[Metric] = []
    stack = [metric]
    while stack:
        current = stack.pop()
        if not isinstance(current, MetricsLambda) and all(current is not m for m in found):
            found.append(current)
        stack.extend(current.dependencies())
    return found


def _unique(metrics: list[Metric]) -> list[Metric]:
    seen: dict[int, Metric] = {}
    for metric in metrics:
        seen.setdefault(id(metric), metric)
    return list(seen.values())


def publishable(value: Any, per_epoch: bool) -> Any:
    """Metric values as users expect them: 0-d tensors become floats once per epoch."""
    if per_epoch and isinstance(value, torch.Tensor) and value.dim() == 0:
        return value.item()
    return value


class MetricGroup:
    """The metrics of one engine: one update handler, one reduction per completion.

    Made by ``Metric.attach``; users do not create it. It is registered as
    the engine's ``"metrics"`` state, so an engine's state dict carries this
    rank's metric states and a mid-epoch resume keeps epoch-wise values whole.
    """

    checkpoint_per_rank = True

    def __init__(self, engine: Engine) -> None:
        self._members: list[tuple[str | None, Metric, str]] = []
        self._handles: list[RemovableEventHandle] = []
        self._engine_ref = engine
        self._plan()

    @classmethod
    def of(cls, engine: Engine) -> MetricGroup:
        """The engine's group, made on first use."""
        group = engine.__dict__.get(_ATTR)
        if group is None:
            group = cls(engine)
            setattr(engine, _ATTR, group)
        return group

    def add(self, metric: Metric, name: str | None, usage: str) -> None:
        if any(m is metric for _, m, _ in self._members):
            raise ValueError(f"{type(metric).__name__} is already attached to this engine")
        if not self._members:
            self._register()
            self._engine_ref.register_stateful("metrics", self)
        self._members.append((name, metric, usage))
        self._plan()

    def remove(self, metric: Metric) -> None:
        for name, member, _ in self._members:
            if member is metric and name is not None:
                self._engine_ref.state.metrics.pop(name, None)
        self._members = [entry for entry in self._members if entry[1] is not metric]
        self._plan()
        if not self._members:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def has(self, metric: Metric) -> bool:
        return any(m is metric for _, m, _ in self._members)

    def _register(self) -> None:
        engine = self._engine_ref
        self._handles = [
            engine.add_event_handler(Events.EPOCH_STARTED, self._reset, "epoch"),
            engine.add_event_handler(Events.ITERATION_STARTED, self._reset, "iteration"),
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._update),
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._complete, "epoch"),
        ]

    def _plan(self) -> None:
        """Precompute who is reset, updated and completed when (not per iteration)."""
        members = self._members
        self._to_update = _unique([leaf for _, m, _ in members for leaf in _leaves(m)])
        self._to_reset = {
            when: _unique(
                [leaf for _, m, u in members if _RESET_AT[u] == when for leaf in _leaves(m)]
            )
            for when in ("epoch", "iteration")
        }
        self._to_complete = {
            when: [(name, m) for name, m, u in members if _DONE_AT[u] == when]
            for when in ("epoch", "iteration")
        }

    def _reset(self, engine: Engine, when: str) -> None:
        for leaf in self._to_reset[when]:
            leaf.reset()

    def _update(self, engine: Engine) -> None:
        output = engine.state.output
        for leaf in self._to_update:
            leaf.update(leaf._output_transform(output))
        if self._to_complete["iteration"]:
            self._complete(engine, "iteration")

    def _complete(self, engine: Engine, when: str) -> None:
        done = self._to_complete[when]
        if not done:
            return
        with reduced_states([m for _, m in done]):
            for name, metric in done:
                value = metric.compute()
                if name is not None:
                    engine.state.metrics[name] = publishable(value, when == "epoch")

    def state_dict(self) -> dict[str, Any]:
        """This rank's state of every metric that accumulates, and the values published."""
        published = self._engine_ref.state.metrics
        return {
            "states": [
                {"metric": type(m).__name__, "state": m.state_dict()} for m in self._to_update
            ],
            "values": {
                name: _portable(published[name])
                for name, _, _ in self._members
                if name is not None and name in published
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the attached metrics must be those that were saved."""
        saved = [entry["metric"] for entry in state_dict["states"]]
        here = [type(m).__name__ for m in self._to_update]
        if saved != here:
            raise ValueError(
                f"the checkpoint holds the states of metrics {saved}, this engine has {here} "
                "attached: attach the same metrics, in the same order, before loading"
            )
        for metric, entry in zip(self._to_update, state_dict["states"]):
            metric.load_state_dict(entry["state"])
        self._engine_ref.state.metrics.update(state_dict["values"])


def _portable(value: Any) -> Any:
    """A metric value that loads with ``weights_only=True`` (NumPy values become torch's)."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_portable(v) for v in value)
    kind = type(value).__module__
    if kind == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if kind == "numpy":
        return torch.from_numpy(value)
    return value
