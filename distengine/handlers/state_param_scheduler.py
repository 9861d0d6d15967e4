"""Schedules of an attribute of ``engine.state`` (PyTorch-Ignite's state parameter schedulers).

A handler that reads ``engine.state.<name>`` (an EMA decay, a loss weight,
a temperature) gets a value that follows a schedule: one per event the
scheduler is attached to.

Example::

    from distengine.handlers.state_param_scheduler import PiecewiseLinearStateScheduler

    warmup = PiecewiseLinearStateScheduler(
        milestones_values=[(0, 0.0), (100, 1.0)], param_name="kl_weight", create_new=True)
    warmup.attach(trainer, Events.ITERATION_COMPLETED)   # trainer.state.kl_weight
"""

from __future__ import annotations

import numbers
import warnings
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from distengine.engine import Engine, Events
from distengine.engine.events import EventEnum, EventsList, FilteredEvent
from distengine.engine.state import State
from distengine.handlers.scheduler_base import BaseParamScheduler, _check_count, record_history

__all__ = [
    "ExpStateScheduler",
    "LambdaStateScheduler",
    "MultiStepStateScheduler",
    "PiecewiseLinearStateScheduler",
    "StateParamScheduler",
    "StepStateScheduler",
]


class StateParamScheduler(BaseParamScheduler):
    """Sets ``engine.state.<param_name>`` to ``get_param()`` on each call.

    The n-th call (n from 1) sets the value for ``event_index`` n. Attached
    (:meth:`attach`) to an engine that has no such attribute, it creates it
    (``None`` until the first event) and warns unless ``create_new=True``;
    with ``create_new=True`` an attribute that exists already is refused, so
    two handlers do not fight over one name. ``save_history=True`` appends
    the values to ``engine.state.param_history[param_name]``. Every rank
    computes the same values from the same event count.

    Exact resume: :meth:`state_dict` holds the event count; loaded (with the
    trainer, e.g. in one Checkpoint), the scheduler puts the value of the
    last event back on ``engine.state`` when the run goes on, so the first
    iteration after the resume reads what the uninterrupted run read.

    Example::

        class Temperature(StateParamScheduler):
            def get_param(self):
                return max(0.1, 1.0 - 0.01 * self.event_index)

        Temperature("temperature", create_new=True).attach(trainer, Events.EPOCH_COMPLETED)
    """

    def __init__(self, param_name: str, save_history: bool = False, create_new: bool = False):
        if not isinstance(param_name, str) or not param_name.isidentifier():
            raise ValueError(f"param_name must name an attribute (a str), got {param_name!r}")
        super().__init__(param_name, save_history)
        self.create_new = create_new
        self._put_back_pending = False

    def attach(
        self,
        engine: Engine,
        event: EventEnum | FilteredEvent | EventsList = Events.ITERATION_COMPLETED,
    ) -> None:
        """Call this scheduler on ``event`` of ``engine`` (default: every ``ITERATION_COMPLETED``).

        Example: ``scheduler.attach(trainer, Events.EPOCH_COMPLETED)``.
        """
        name = self.param_name
        if hasattr(engine.state, name):
            if self.create_new:
                raise ValueError(
                    f"Attribute '{name}' already exists in the engine.state. This may be a "
                    "conflict between multiple handlers. Please choose another name."
                )
        else:
            if not self.create_new:
                warnings.warn(
                    f"Attribute '{name}' is not defined in the engine.state. "
                    f"{type(self).__name__} will create it. Remove this warning by setting "
                    "create_new=True.",
                    stacklevel=2,
                )
            setattr(engine.state, name, None)
        if self.save_history:
            history = getattr(engine.state, "param_history", None)
            if history is None:
                history = engine.state.param_history = {}
            history.setdefault(name, [])
        engine.add_event_handler(event, self)
        engine.add_event_handler(Events.STARTED, self._put_back)

    def __call__(self, engine: Engine) -> None:
        self.event_index += 1
        value = self.get_param()
        setattr(engine.state, self.param_name, value)
        if self.save_history:
            record_history(engine, self.param_name, value)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the value goes back on ``engine.state`` when it runs."""
        super().load_state_dict(state_dict)
        self._put_back_pending = True

    def _put_back(self, engine: Engine) -> None:
        """At STARTED after a load: the value of the last event, as the saved run had it."""
        if self._put_back_pending:
            self._put_back_pending = False
            if self.event_index > 0:
                setattr(engine.state, self.param_name, self.get_param())

    @classmethod
    def simulate_values(cls, num_events: int, **scheduler_kwargs: Any) -> list[list[Any]]:
        """``[[event_index, value], ...]`` for ``num_events`` calls, on a throw-away state.

        Example::

            ExpStateScheduler.simulate_values(3, param_name="p", initial_value=1, gamma=0.5)
            # [[0, 0.5], [1, 0.25], [2, 0.125]]
        """
        _check_count(num_events)
        kwargs = {k: v for k, v in scheduler_kwargs.items() if k != "save_history"}
        scheduler = cls(save_history=False, **kwargs)
        stand_in = SimpleNamespace(state=State())
        values = []
        for i in range(num_events):
            scheduler(stand_in)  # type: ignore[arg-type]
            values.append([i, getattr(stand_in.state, scheduler.param_name)])
        return values


class LambdaStateScheduler(StateParamScheduler):
    """The value ``lambda_obj(event_index)``: a schedule of your own.

    The callable itself is not part of :meth:`state_dict` (a checkpoint holds
    plain values): make it again when resuming. One with ``state_dict`` and
    ``load_state_dict`` of its own is saved and restored through them.

    Example::

        LambdaStateScheduler(lambda e: 0.99 ** e, param_name="decay", create_new=True)
    """

    def __init__(
        self,
        lambda_obj: Callable[[int], Any],
        param_name: str,
        save_history: bool = False,
        create_new: bool = False,
    ):
        if not callable(lambda_obj):
            raise ValueError(
                f"Expected lambda_obj to be callable. Got {type(lambda_obj).__name__}, which is not"
            )
        super().__init__(param_name, save_history, create_new)
        self.lambda_obj = lambda_obj
        if hasattr(lambda_obj, "state_dict") and hasattr(lambda_obj, "load_state_dict"):
            self._state_attrs.append("lambda_obj")

    def get_param(self) -> Any:
        return self.lambda_obj(self.event_index)


def _milestones_values(pairs: Any) -> tuple[list[int], list[float]]:
    if not isinstance(pairs, Sequence):
        raise TypeError(
            f"Argument milestones_values should be a list or tuple, but given {type(pairs)}"
        )
    if len(pairs) < 1:
        raise ValueError(
            f"Argument milestones_values should be with at least one value, but given {pairs}"
        )
    milestones: list[int] = []
    values: list[float] = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValueError(
                "Argument milestones_values should be a list of pairs (milestone, param_value), "
                f"got {pair!r}"
            )
        if not isinstance(pair[0], numbers.Integral):
            raise TypeError(f"Value of a milestone should be integer, but given {type(pair[0])}")
        if milestones and pair[0] < milestones[-1]:
            raise ValueError(
                f"Milestones should be increasing integers, but given {pair[0]} is smaller "
                f"than the previous milestone {milestones[-1]}"
            )
        milestones.append(int(pair[0]))
        values.append(pair[1])
    return milestones, values


class PiecewiseLinearStateScheduler(StateParamScheduler):
    """Straight lines between ``(event_index, value)`` milestones; flat before and after.

    Example::

        PiecewiseLinearStateScheduler([(0, 0.0), (10, 0.999)], param_name="ema_decay")
    """

    def __init__(
        self,
        milestones_values: list[tuple[int, float]],
        param_name: str,
        save_history: bool = False,
        create_new: bool = False,
    ):
        super().__init__(param_name, save_history, create_new)
        self.milestones, self.values = _milestones_values(milestones_values)
        self._state_attrs += ["milestones", "values"]

    def get_param(self) -> float:
        milestones, values, now = self.milestones, self.values, self.event_index
        if now < milestones[0] or now >= milestones[-1]:  # flat, as a float like the lines
            flat = values[0] if now < milestones[0] else values[-1]
            return flat + (flat - flat) * 0.0
        i = bisect_right(milestones, now) - 1  # milestones[i] <= now < milestones[i + 1]
        start, end = milestones[i], milestones[i + 1]
        return values[i] + (values[i + 1] - values[i]) * (now - start) / (end - start)


def _check_gamma(gamma: Any) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"gamma must be a number, got {gamma!r}")


class ExpStateScheduler(StateParamScheduler):
    """``initial_value * gamma ** event_index`` (torch's ExponentialLR, in closed form).

    Example::

        ExpStateScheduler(initial_value=1.0, gamma=0.9, param_name="noise", create_new=True)
    """

    def __init__(
        self,
        initial_value: float,
        gamma: float,
        param_name: str,
        save_history: bool = False,
        create_new: bool = False,
    ):
        _check_gamma(gamma)
        super().__init__(param_name, save_history, create_new)
        self.initial_value = initial_value
        self.gamma = gamma
        self._state_attrs += ["initial_value", "gamma"]

    def get_param(self) -> float:
        return self.initial_value * self.gamma**self.event_index


class StepStateScheduler(StateParamScheduler):
    """``initial_value * gamma ** (event_index // step_size)`` (torch's StepLR).

    Example::

        StepStateScheduler(1.0, gamma=0.5, step_size=10, param_name="weight", create_new=True)
    """

    def __init__(
        self,
        initial_value: float,
        gamma: float,
        step_size: int,
        param_name: str,
        save_history: bool = False,
        create_new: bool = False,
    ):
        _check_gamma(gamma)
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be an int >= 1, got {step_size!r}")
        super().__init__(param_name, save_history, create_new)
        self.initial_value = initial_value
        self.gamma = gamma
        self.step_size = step_size
        self._state_attrs += ["initial_value", "gamma", "step_size"]

    def get_param(self) -> float:
        return self.initial_value * self.gamma ** (self.event_index // self.step_size)


class MultiStepStateScheduler(StateParamScheduler):
    """``initial_value * gamma ** (milestones passed)`` (torch's MultiStepLR).

    Example::

        MultiStepStateScheduler(1.0, 0.1, milestones=[30, 80], param_name="w", create_new=True)
    """

    def __init__(
        self,
        initial_value: float,
        gamma: float,
        milestones: list[int],
        param_name: str,
        save_history: bool = False,
        create_new: bool = False,
    ):
        _check_gamma(gamma)
        if not isinstance(milestones, Sequence) or list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be a list of increasing ints, got {milestones!r}")
        super().__init__(param_name, save_history, create_new)
        self.initial_value = initial_value
        self.gamma = gamma
        self.milestones = list(milestones)
        self._state_attrs += ["initial_value", "gamma", "milestones"]

    def get_param(self) -> float:
        return self.initial_value * self.gamma ** bisect_right(self.milestones, self.event_index)
