"""Schedulers made of schedulers: one after another, or one per param group."""

from __future__ import annotations

import copy
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

from distengine.engine import Engine
from distengine.handlers.scheduler_base import ParamScheduler, _check_count


class _SchedulersHistory:
    """``save_history`` of a scheduler made of ``self.schedulers``: theirs, set on all."""

    schedulers: list[Any]

    @property
    def save_history(self) -> bool:
        """Whether the schedulers record ``engine.state.param_history``."""
        return self.schedulers[0].save_history

    @save_history.setter
    def save_history(self, value: bool) -> None:
        for scheduler in self.schedulers:
            scheduler.save_history = value


class ParamGroupScheduler(_SchedulersHistory):
    """Several schedulers called together, typically one per param group.

    ``names`` (default: each scheduler's ``param_name``) key their history
    in ``engine.state.param_history``.

    Example::

        scheduler = ParamGroupScheduler([
            LinearCyclicalScheduler(opt, "lr", 0.0, 0.1, 10, param_group_index=0),
            LinearCyclicalScheduler(opt, "lr", 0.0, 0.01, 10, param_group_index=1),
        ], names=["lr (base)", "lr (head)"])
        trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    """

    def __init__(
        self,
        schedulers: Sequence[ParamScheduler],
        names: Sequence[str] | None = None,
        save_history: bool = False,
    ) -> None:
        if not isinstance(schedulers, Sequence) or not schedulers:
            raise TypeError(f"schedulers must be a non-empty list, got {schedulers!r}")
        if not all(isinstance(s, ParamScheduler) for s in schedulers):
            raise ValueError(f"schedulers must be parameter schedulers, got {schedulers!r}")
        names = [s.param_name for s in schedulers] if names is None else names
        if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"names must be a list of strings, got {names!r}")
        if len(names) != len(schedulers):
            raise ValueError(f"{len(schedulers)} schedulers but {len(names)} names")
        self.schedulers = list(schedulers)
        self.names = list(names)
        self.save_history = save_history
        self.optimizer = [s.optimizer for s in self.schedulers]
        self.param_name = [s.param_name for s in self.schedulers]

    @property
    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """The param groups of every scheduler."""
        return [group for s in self.schedulers for group in s.optimizer_param_groups]

    def __call__(self, engine: Engine | None = None, name: str | None = None) -> None:
        for scheduler, own_name in zip(self.schedulers, self.names):
            scheduler(engine, own_name)

    def get_param(self) -> list[Any]:
        """Each scheduler's current value."""
        return [scheduler.get_param() for scheduler in self.schedulers]

    def state_dict(self) -> dict[str, Any]:
        """``{"schedulers": [(name, state), ...]}``."""
        return {"schedulers": [(n, s.state_dict()) for n, s in zip(self.names, self.schedulers)]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; names and count must match."""
        states = state_dict.get("schedulers")
        if states is None or len(states) != len(self.schedulers):
            raise ValueError(
                f"ParamGroupScheduler state dict needs 'schedulers' with {len(self.schedulers)} "
                f"entries, got {state_dict!r:.200}"
            )
        for name, scheduler, (saved_name, state) in zip(self.names, self.schedulers, states):
            if saved_name != name:
                raise ValueError(f"scheduler {name!r} got the state saved as {saved_name!r}")
            scheduler.load_state_dict(state)

    @classmethod
    def simulate_values(
        cls, num_events: int, schedulers: Sequence[ParamScheduler], **kwargs: Any
    ) -> list[list[Any]]:
        """``[[event_index, value_1, value_2, ...], ...]``; the schedulers are left as they were.

        Example: ``ParamGroupScheduler.simulate_values(50, [sched_a, sched_b])``.
        """
        _check_count(num_events)
        with _restored(schedulers):
            scheduler = cls(schedulers=schedulers, **kwargs)
            values = []
            for i in range(num_events):
                values.append([i, *scheduler.get_param()])
                scheduler(None)
        return values


class ConcatScheduler(_SchedulersHistory, ParamScheduler):
    """Schedulers one after another: ``schedulers[i]`` runs for ``durations[i]`` calls.

    The last one runs for as long as it is called. All set the same
    parameter of the same optimizer.

    Example::

        warmup = LinearCyclicalScheduler(opt, "lr", 0.0, 0.1, cycle_size=20, monotonic=True)
        decay = CosineAnnealingScheduler(opt, "lr", 0.1, 0.0, cycle_size=100)
        ConcatScheduler([warmup, decay], durations=[10]).attach(trainer)
    """

    def __init__(
        self,
        schedulers: Sequence[ParamScheduler | ParamGroupScheduler],
        durations: Sequence[int],
        save_history: bool = False,
    ) -> None:
        if not isinstance(schedulers, Sequence) or len(schedulers) < 2:
            raise ValueError(
                f"schedulers must be a list of 2 or more schedulers, got {schedulers!r}"
            )
        if not isinstance(durations, (list, tuple)) or any(
            not isinstance(d, numbers.Integral) or d < 0 for d in durations
        ):
            raise ValueError(f"durations must be a list of ints >= 0, got {durations!r}")
        if len(durations) != len(schedulers) - 1:
            raise ValueError(
                f"{len(schedulers)} schedulers need {len(schedulers) - 1} durations, "
                f"got {len(durations)}"
            )
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, (ParamScheduler, ParamGroupScheduler)):
                raise TypeError(f"schedulers[{i}] is not a parameter scheduler: {scheduler!r}")
        optimizers = _flat([s.optimizer for s in schedulers])
        if any(o is not optimizers[0] for o in optimizers):
            raise ValueError("the schedulers must set parameters of one optimizer")
        param_names = sorted(set(_flat([s.param_name for s in schedulers])))
        if len(param_names) != 1:
            raise ValueError(f"the schedulers must set one parameter, got {param_names}")
        self.schedulers = list(schedulers)
        self.durations = list(durations)
        self._scheduler_index = 0
        self._setup_scheduler()
        super().__init__(optimizers[0], param_names[0], save_history)
        self._state_attrs += ["_current_duration", "durations", "_scheduler_index"]

    @property
    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        return self._current_scheduler.optimizer_param_groups

    def _setup_scheduler(self) -> None:
        self._current_scheduler = self.schedulers[self._scheduler_index]
        index = self._scheduler_index
        self._current_duration = self.durations[index] if index < len(self.durations) else -1

    def __call__(self, engine: Engine | None = None, name: str | None = None) -> None:
        while self._current_duration == 0:
            self._scheduler_index += 1
            self._setup_scheduler()
        self._current_scheduler(engine, name)
        self._current_duration -= 1

    def get_param(self) -> Any:
        return self._current_scheduler.get_param()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("schedulers")
        if states is None or len(states) != len(self.schedulers):
            raise ValueError(
                f"ConcatScheduler state dict needs 'schedulers' with {len(self.schedulers)} "
                f"entries, got keys {sorted(state_dict)}"
            )
        for scheduler, state in zip(self.schedulers, states):
            scheduler.load_state_dict(state)
        super().load_state_dict(state_dict)
        self._current_scheduler = self.schedulers[self._scheduler_index]

    @classmethod
    def simulate_values(  # type: ignore[override]
        cls,
        num_events: int,
        schedulers: Sequence[ParamScheduler | ParamGroupScheduler],
        durations: Sequence[int],
        param_names: Sequence[str] | None = None,
    ) -> list[list[Any]]:
        """``[[event_index, value per param group...], ...]``; the schedulers are left as they were.

        Example: ``ConcatScheduler.simulate_values(100, [warmup, decay], durations=[10])``.
        """
        _check_count(num_events)
        if param_names is not None and (
            not isinstance(param_names, (list, tuple))
            or not all(isinstance(n, str) for n in param_names)
        ):
            raise ValueError(f"param_names must be a list of strings, got {param_names!r}")
        with _restored(schedulers):
            scheduler = cls(schedulers=schedulers, durations=durations, save_history=False)
            names = list(param_names) if param_names is not None else [scheduler.param_name]
            values = []
            for i in range(num_events):
                scheduler(None)
                groups = scheduler.optimizer_param_groups
                values.append([i, *[group[n] for n in names for group in groups]])
        return values


def _flat(values: list[Any]) -> list[Any]:
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


class _restored:
    """Put the schedulers' and their optimizers' states back after a simulation."""

    def __init__(self, schedulers: Sequence[Any]) -> None:
        self.schedulers = list(schedulers)

    def __enter__(self) -> None:
        flat = _flat([s.optimizer for s in self.schedulers])
        self.optimizers = [o for i, o in enumerate(flat) if all(o is not p for p in flat[:i])]
        self.saved = [copy.deepcopy(s.state_dict()) for s in self.schedulers]
        self.saved_optimizers = [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")  # torch warns when a scheduler steps before its optimizer

    def __exit__(self, *exc: Any) -> None:
        self.warnings.__exit__(*exc)
        for scheduler, state in zip(self.schedulers, self.saved):
            scheduler.load_state_dict(state)
        for optimizer, state in zip(self.optimizers, self.saved_optimizers):
            optimizer.load_state_dict(state)
