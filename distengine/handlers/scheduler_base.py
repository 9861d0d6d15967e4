"""The base of every parameter scheduler: set an optimizer parameter once per event."""

from __future__ import annotations

import copy
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from distengine.engine import Engine, Events
from distengine.engine.events import EventEnum, EventsList, FilteredEvent


def fake_optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    """A one-parameter SGD optimizer for simulating schedules."""
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def record_history(engine: Engine | None, name: str, values: list[Any]) -> None:
    """Append ``values`` to ``engine.state.param_history[name]`` (PyTorch-Ignite's place)."""
    if engine is None:
        return
    history = getattr(engine.state, "param_history", None)
    if history is None:
        history = engine.state.param_history = {}
    history.setdefault(name, []).append(values)


class BaseParamScheduler(ABC):
    """The base of every scheduler: a value per event, a count of events, a state dict.

    ``event_index`` counts the calls so far; ``get_param()`` is the value for
    it. What a checkpoint needs to continue the schedule is listed in
    ``_state_attrs`` (a subclass adds its own names); :meth:`state_dict` holds
    plain values (an attribute with a ``state_dict`` is saved through it), so
    it loads with ``torch.load(..., weights_only=True)``. Subclasses set an
    optimizer's parameter (:class:`ParamScheduler`), an attribute of
    ``engine.state`` (``StateParamScheduler``) or a DataLoader's batch size
    (``BatchSizeScheduler``).

    Example::

        class Countdown(BaseParamScheduler):
            def get_param(self):
                return 10 - self.event_index

            @classmethod
            def simulate_values(cls, num_events, **kwargs):
                return [[i, 10 - i] for i in range(num_events)]
    """

    def __init__(self, param_name: str, save_history: bool = False) -> None:
        self.param_name = param_name
        self.save_history = save_history
        self.event_index = 0
        self._state_attrs = ["event_index", "param_name", "save_history"]

    @abstractmethod
    def get_param(self) -> Any:
        """The value for the current ``event_index``."""

    @classmethod
    @abstractmethod
    def simulate_values(cls, num_events: int, **scheduler_kwargs: Any) -> list[list[Any]]:
        """``[[event_index, value], ...]`` for ``num_events`` calls, touching nothing of yours."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the schedule."""
        state = {}
        for name in self._state_attrs:
            value = getattr(self, name)
            state[name] = value.state_dict() if hasattr(value, "state_dict") else copy.copy(value)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; an error names missing keys."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"Argument state_dict should be a dictionary, but given {type(state_dict)}"
            )
        missing = [name for name in self._state_attrs if name not in state_dict]
        if missing:
            raise ValueError(
                f"Required state attribute '{missing[0]}' is absent in provided state_dict of "
                f"{type(self).__name__} (missing {missing}, has {sorted(state_dict)})"
            )
        for name in self._state_attrs:
            current = getattr(self, name)
            if hasattr(current, "load_state_dict"):
                current.load_state_dict(state_dict[name])
            else:
                setattr(self, name, copy.copy(state_dict[name]))

    @classmethod
    def plot_values(cls, num_events: int, **scheduler_kwargs: Any) -> Any:
        """Plot :meth:`simulate_values` with matplotlib (which must be installed).

        Example: ``PiecewiseLinear.plot_values(100, param_name="lr", milestones_values=[...])``.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ModuleNotFoundError(
                "This method requires matplotlib to be installed: pip install matplotlib"
            ) from error
        values = cls.simulate_values(num_events=num_events, **scheduler_kwargs)
        label = scheduler_kwargs.get("param_name", "learning rate")
        lines = plt.plot([v[0] for v in values], [v[1] for v in values], label=label)
        plt.legend()
        plt.grid(which="both")
        return lines


class ParamScheduler(BaseParamScheduler):
    """Sets ``param_name`` of the optimizer's param groups to ``get_param()`` on each call.

    The n-th call (``event_index`` n, from 0) applies the schedule's n-th
    value, so attached to ``Events.ITERATION_STARTED`` (the default of
    :meth:`attach`) iteration n + 1 runs with it, as in PyTorch-Ignite.
    ``param_group_index`` limits it to one param group; ``get_param`` may
    return one value per group. ``save_history=True`` appends the values to
    ``engine.state.param_history[param_name]``. Every rank computes the same
    values from the same event count: no collective is needed.

    Example::

        class Halving(ParamScheduler):
            def get_param(self):
                return 0.1 * 0.5 ** (self.event_index // 100)

        Halving(optimizer, "lr").attach(trainer)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        param_name: str = "lr",
        save_history: bool = False,
        param_group_index: int | None = None,
    ) -> None:
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(optimizer, torch.optim.Optimizer) and not isinstance(groups, Sequence):
            raise TypeError(
                "Argument optimizer should be torch.optim.Optimizer (or have param_groups), "
                f"but given {type(optimizer).__name__}"
            )
        if param_group_index is not None and not (
            isinstance(param_group_index, int) and 0 <= param_group_index < len(groups)
        ):
            raise ValueError(
                f"param_group_index must be None or an int in [0, {len(groups)}), "
                f"got {param_group_index!r}"
            )
        super().__init__(param_name, save_history)
        self.optimizer = optimizer
        self.param_group_index = param_group_index
        missing = [i for i, g in enumerate(self.optimizer_param_groups) if param_name not in g]
        if missing:
            raise ValueError(f"param groups {missing} have no {param_name!r}")
        self._state_attrs.append("param_group_index")

    @property
    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """The param groups this scheduler sets."""
        groups = self.optimizer.param_groups
        return groups if self.param_group_index is None else [groups[self.param_group_index]]

    @abstractmethod
    def get_param(self) -> float | list[float]:
        """The value for the current ``event_index`` (or one per param group)."""

    def _value(self) -> float | list[float]:
        return self.get_param()

    def __call__(self, engine: Engine | None = None, name: str | None = None) -> None:
        value = self._value()
        groups = self.optimizer_param_groups
        if isinstance(value, (list, tuple)):
            if len(value) != len(groups):
                raise ValueError(
                    "size of value is different than optimizer_param_groups: "
                    f"{type(self).__name__} gave {len(value)} values for {len(groups)} param groups"
                )
            for group, item in zip(groups, value):
                group[self.param_name] = item
        else:
            for group in groups:
                group[self.param_name] = value
        if self.save_history:
            values = [group[self.param_name] for group in groups]
            record_history(engine, name or self.param_name, values)
        self.event_index += 1

    def attach(
        self,
        engine: Engine,
        event: EventEnum | FilteredEvent | EventsList = Events.ITERATION_STARTED,
    ) -> None:
        """Call this scheduler on ``event`` of ``engine``.

        Example: ``scheduler.attach(trainer, Events.EPOCH_STARTED)``.
        """
        engine.add_event_handler(event, self)

    @classmethod
    def simulate_values(cls, num_events: int, **scheduler_kwargs: Any) -> list[list[Any]]:
        """``[[event_index, value], ...]`` for ``num_events`` calls, on a throw-away optimizer.

        Example::

            CosineAnnealingScheduler.simulate_values(
                100, param_name="lr", start_value=0.1, end_value=0.0, cycle_size=50)
        """
        _check_count(num_events)
        kwargs = {
            k: v for k, v in scheduler_kwargs.items() if k not in ("optimizer", "save_history")
        }
        scheduler = cls(optimizer=fake_optimizer(), save_history=False, **kwargs)
        values = []
        for i in range(num_events):
            scheduler(None)
            values.append([i, scheduler.optimizer_param_groups[0][scheduler.param_name]])
        return values


def _check_count(num_events: Any) -> None:
    if not isinstance(num_events, numbers.Integral) or num_events < 0:
        raise ValueError(f"num_events must be an int >= 0, got {num_events!r}")
