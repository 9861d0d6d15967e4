"""All metrics attached to one engine: updated by one handler, reduced together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from distengine.engine import Engine, Events
from distengine.engine.events import EventEnum, FilteredEvent
from distengine.metrics.metric import Metric
from distengine.metrics.metrics_lambda import MetricsLambda
from distengine.metrics.reduction import reduced_states
from distengine.metrics.usage import RESET_EVENTS, MetricUsage

if TYPE_CHECKING:
    from distengine.engine.handlers import RemovableEventHandle

_ATTR = "_distengine_metrics"


class _Member(NamedTuple):
    name: str | None
    metric: Metric
    usage: MetricUsage


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


def _same_usage(a: MetricUsage, b: MetricUsage) -> bool:
    def base(event: Any) -> EventEnum:
        return event.event if isinstance(event, FilteredEvent) else event

    return (
        type(a) is type(b)
        and a.STARTED is b.STARTED
        and a.COMPLETED is b.COMPLETED
        and base(a.ITERATION_COMPLETED) is base(b.ITERATION_COMPLETED)
    )


def publishable(value: Any, per_epoch: bool) -> Any:
    """Metric values as users expect them: once per epoch, 0-d tensors become floats and
    other tensors move to the CPU (per iteration they stay put: no sync per batch)."""
    if per_epoch and isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 else value.cpu()
    return value


def publish(
    engine: Engine, name: str | None, value: Any, per_epoch: bool, mode: str = "both"
) -> None:
    """Put ``value`` in ``engine.state.metrics[name]``; a mapping value goes under ``name``
    (``mode`` "named"), under each of its keys ("flatten") or both ("both")."""
    if not isinstance(value, Mapping):
        if name is not None:
            engine.state.metrics[name] = publishable(value, per_epoch)
        return
    named = name is not None and mode in ("named", "both")
    if named and name in value:
        raise ValueError(
            f"Argument name {name!r} is conflicting with mapping keys: {list(value)} "
            "(the metric's value is a mapping published under its name and each key)"
        )
    if mode in ("flatten", "both"):
        for key, item in value.items():
            engine.state.metrics[key] = publishable(item, per_epoch)
    if named:
        engine.state.metrics[name] = publishable(value, per_epoch)


class MetricGroup:
    """The metrics of one engine: one update handler, one reduction per completion.

    Made by ``Metric.attach``; users do not create it. It is registered as
    the engine's ``"metrics"`` state, so an engine's state dict carries this
    rank's metric states and a mid-epoch resume keeps epoch-wise values whole.
    """

    checkpoint_per_rank = True

    def __init__(self, engine: Engine) -> None:
        self._members: list[_Member] = []
        self._handles: dict[EventEnum, RemovableEventHandle] = {}
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

    def add(self, metric: Metric, name: str | None, usage: MetricUsage) -> None:
        if any(m is metric and n == name for n, m, _ in self._members):
            raise ValueError(
                f"{type(metric).__name__} is already attached to this engine as {name!r}"
            )
        if not self._members:
            self._engine_ref.register_stateful("metrics", self)
        self._members.append(_Member(name, metric, usage))
        self._plan()
        self._register()

    def remove(self, metric: Metric, usage: MetricUsage | None = None) -> None:
        def matches(member: _Member) -> bool:
            return member.metric is metric and (usage is None or _same_usage(member.usage, usage))

        for member in filter(matches, self._members):
            if member.name is not None:
                self._engine_ref.state.metrics.pop(member.name, None)
        self._members = [member for member in self._members if not matches(member)]
        self._plan()
        if not self._members:
            for handle in self._handles.values():
                handle.remove()
            self._handles = {}

    def has(self, metric: Metric, usage: MetricUsage | None = None) -> bool:
        return any(
            m is metric and (usage is None or _same_usage(u, usage)) for _, m, u in self._members
        )

    def _register(self) -> None:
        """Add the handlers the members need; each once, never moved (users' handlers
        registered after an attach see its values)."""
        needed = {
            Events.ITERATION_COMPLETED: self._iteration_completed,
            Events.EPOCH_COMPLETED: self._epoch_completed,
        }
        needed.update({event: self._reset for event in RESET_EVENTS if self._to_reset[event]})
        engine = self._engine_ref
        for event, handler in needed.items():
            if event not in self._handles:
                args = (event,) if handler == self._reset else ()
                self._handles[event] = engine.add_event_handler(event, handler, *args)

    def _plan(self) -> None:
        """Precompute who is reset, updated and completed when (not per iteration)."""
        members = self._members

        def leaves(selected: list[_Member], fed: bool = True) -> list[Metric]:
            found = _unique([leaf for member in selected for leaf in _leaves(member.metric)])
            # a metric computed from others (RunningAverage(src)) is not fed: they are
            return [leaf for leaf in found if not leaf.dependencies()] if fed else found

        self._to_reset = {
            event: leaves([m for m in members if m.usage.STARTED is event], fed=False)
            for event in RESET_EVENTS
        }
        plain = [m for m in members if m.usage.ITERATION_COMPLETED is Events.ITERATION_COMPLETED]
        self._to_update = leaves(plain)
        always = {id(leaf) for leaf in self._to_update}
        self._to_update_filtered = [
            (m.usage.ITERATION_COMPLETED.filter, [x for x in leaves([m]) if id(x) not in always])
            for m in members
            if isinstance(m.usage.ITERATION_COMPLETED, FilteredEvent)
        ]
        self._to_update_at_epoch_end = leaves(
            [m for m in members if m.usage.ITERATION_COMPLETED is Events.EPOCH_COMPLETED]
        )
        self._to_complete = {
            event: [(m.name, m.metric) for m in members if m.usage.COMPLETED is event]
            for event in (Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED)
        }

    def _reset(self, engine: Engine, event: EventEnum) -> None:
        for leaf in self._to_reset[event]:
            leaf.reset()

    def _iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        for leaf in self._to_update:
            leaf._feed(output)
        if self._to_update_filtered:
            self._update_filtered(engine, output)
        if self._to_complete[Events.ITERATION_COMPLETED]:
            self._complete(engine, Events.ITERATION_COMPLETED)

    def _update_filtered(self, engine: Engine, output: Any) -> None:
        done: set[int] = set()
        for event_filter, leaves in self._to_update_filtered:
            if event_filter(engine, engine.state.iteration):
                for leaf in leaves:
                    if id(leaf) not in done:
                        done.add(id(leaf))
                        leaf._feed(output)

    def _epoch_completed(self, engine: Engine) -> None:
        for leaf in self._to_update_at_epoch_end:
            leaf._feed(engine.state.output)
        self._complete(engine, Events.EPOCH_COMPLETED)

    def _complete(self, engine: Engine, event: EventEnum) -> None:
        done = self._to_complete[event]
        if not done:
            return
        with reduced_states([m for _, m in done]):
            for name, metric in done:
                publish(
                    engine,
                    name,
                    metric.compute(),
                    event is Events.EPOCH_COMPLETED,
                    getattr(metric, "_metrics_result_mode", "both"),
                )

    def _accumulating(self) -> list[Metric]:
        """Every metric that holds state, in attachment order (lambdas looked through)."""
        return _unique([leaf for member in self._members for leaf in _leaves(member.metric)])

    def state_dict(self) -> dict[str, Any]:
        """This rank's state of every attached metric, and the engine's published values."""
        return {
            "states": [
                {"metric": type(m).__name__, "state": m.state_dict()} for m in self._accumulating()
            ],
            "values": _portable(dict(self._engine_ref.state.metrics)),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the attached metrics must be those that were saved."""
        saved = [entry["metric"] for entry in state_dict["states"]]
        metrics = self._accumulating()
        here = [type(m).__name__ for m in metrics]
        if saved != here:
            raise ValueError(
                f"the checkpoint holds the states of metrics {saved}, this engine has {here} "
                "attached: attach the same metrics, in the same order, before loading"
            )
        for metric, entry in zip(metrics, state_dict["states"]):
            metric.load_state_dict(entry["state"])
        self._engine_ref.state.metrics.update(state_dict["values"])

    def load_per_rank_state_dicts(self, states: list[dict[str, Any]]) -> None:
        """Restore states saved on another number of ranks: each metric merges its ranks'
        (see :meth:`Metric.load_per_rank_state_dicts`); published values are rank 0's."""
        self.load_state_dict(states[0])  # checks the metrics are those saved
        for i, metric in enumerate(self._accumulating()):
            metric.load_per_rank_state_dicts([state["states"][i]["state"] for state in states])


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
