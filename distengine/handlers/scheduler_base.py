"""The base of every parameter scheduler: set an optimizer parameter once per event."""

from __future__ import annotations

import copy
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
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


class ParamScheduler(ABC):
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
                f"optimizer must be a torch Optimizer (or have param_groups), "
                f"got {type(optimizer).__name__}"
            )
        if param_group_index is not None and not (
            isinstance(param_group_index, int) and 0 <= param_group_index < len(groups)
        ):
            raise ValueError(
                f"param_group_index must be None or an int in [0, {len(groups)}), "
                f"got {param_group_index!r}"
            )
        self.optimizer = optimizer
        self.param_name = param_name
        self.param_group_index = param_group_index
        self.save_history = save_history
        self.event_index = 0
        missing = [i for i, g in enumerate(self.optimizer_param_groups) if param_name not in g]
        if missing:
            raise ValueError(f"param groups {missing} have no {param_name!r}")
        self._state_attrs = ["event_index", "param_name", "save_history", "param_group_index"]

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

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the schedule."""
        state = {}
        for name in self._state_attrs:
            value = getattr(self, name)
            state[name] = value.state_dict() if hasattr(value, "state_dict") else copy.copy(value)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; an error names missing keys."""
        missing = [name for name in self._state_attrs if name not in state_dict]
        if missing:
            raise ValueError(
                f"{type(self).__name__} state dict: missing {missing} (has {sorted(state_dict)})"
            )
        for name in self._state_attrs:
            current = getattr(self, name)
            if hasattr(current, "load_state_dict"):
                current.load_state_dict(state_dict[name])
            else:
                setattr(self, name, copy.copy(state_dict[name]))

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

    @classmethod
    def plot_values(cls, num_events: int, **scheduler_kwargs: Any) -> Any:
        """Plot :meth:`simulate_values` with matplotlib (which must be installed).

        Example: ``PiecewiseLinear.plot_values(100, param_name="lr", milestones_values=[...])``.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ModuleNotFoundError(
                "plot_values needs matplotlib: pip install matplotlib"
            ) from error
        values = cls.simulate_values(num_events=num_events, **scheduler_kwargs)
        label = scheduler_kwargs.get("param_name", "learning rate")
        lines = plt.plot([v[0] for v in values], [v[1] for v in values], label=label)
        plt.legend()
        plt.grid(which="both")
        return lines


def _check_count(num_events: Any) -> None:
    if not isinstance(num_events, numbers.Integral) or num_events < 0:
        raise ValueError(f"num_events must be an int >= 0, got {num_events!r}")
