"""The Metric base class: declared state, updates without syncs, one reduction per compute."""

from __future__ import annotations

import functools
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from distengine.distributed import get_rank, get_world_size
from distengine.metrics.ignite_state import (
    PER_RANK,
    attribute_keys,
    attribute_state,
    restore_attributes,
    this_ranks,
)
from distengine.metrics.ignite_style import (
    declare_shadows,
    reinit__is_reduced,
    restore_from_shadows,
    sync_all_reduce,
)
from distengine.metrics.inputs import moved, picked, unrolled
from distengine.metrics.reduction import reduced_states
from distengine.metrics.state import REDUCTIONS, StateSpec
from distengine.metrics.usage import (
    BatchFiltered,
    BatchWise,
    EpochWise,
    MetricUsage,
    RunningBatchWise,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
)

__all__ = [
    "BatchFiltered",
    "BatchWise",
    "EpochWise",
    "Metric",
    "MetricUsage",
    "RunningBatchWise",
    "RunningEpochWise",
    "SingleEpochRunningBatchWise",
    "reinit__is_reduced",
    "sync_all_reduce",
]

if TYPE_CHECKING:
    from distengine.engine import Engine

_RESULT_MODES = ("flatten", "named", "both")
#: The base class's own attributes, as its constructor makes them.
_BOOKKEEPING: dict[str, Callable[[], Any]] = {
    "_specs": dict,
    "_host_counts": dict,
    "_cache": dict,
    "_synced": lambda: False,
    "_device": lambda: None,
}


def _reducing(compute: Callable[[Metric], Any]) -> Callable[[Metric], Any]:
    """Make ``compute`` see reduced states, and compute once per reduction."""

    @functools.wraps(compute)
    def wrapper(self: Metric) -> Any:
        if not self._synced:
            with reduced_states([self]):
                return wrapper(self)
        key = id(wrapper)
        if key not in self._cache:
            self._cache[key] = compute(self)
        return self._cache[key]

    return wrapper


def _on_device(update: Callable[[Metric, Any], None]) -> Callable[[Metric, Any], None]:
    """Make ``update`` see its inputs on the metric's device, when one was given."""

    @functools.wraps(update)
    def wrapper(self: Metric, output: Any) -> None:
        if self._input_device is not None:
            output = moved(output, self._input_device)
        update(self, output)

    wrapper._moves_inputs = True  # type: ignore[attr-defined]
    return wrapper


class Metric(ABC):
    """A quantity accumulated over batches and reduced across ranks.

    A subclass declares its state with :meth:`add_state` (a tensor and how
    ranks combine it: ``sum``, ``max``, ``min`` or ``cat``), updates it in
    ``update(output)`` without host-device syncs, and reads it in ``compute``.
    ``compute`` always sees states reduced over all ranks: either the
    engine reduces every metric attached to it in one go, or ``compute``
    does it itself when called directly.

    ``device``: where the state lives; inputs on another device are moved
    there (by default the state follows the first batch's device, so nothing
    is copied). An output that is a mapping is read at the keys in
    ``required_output_keys``; an output of two lists (of tensors or numbers)
    is fed one item at a time unless ``skip_unrolling=True``, as in
    PyTorch-Ignite. A value that is a mapping is published in
    ``engine.state.metrics`` under the metric's name and each of its keys
    (``metrics_result_mode="both"``), or only under the name (``"named"``) or
    the keys (``"flatten"``).

    Example::

        class MeanAbsolute(Metric):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.add_state("total", torch.tensor(0.0, dtype=torch.float64))
                self.add_state("n", torch.tensor(0))

            def update(self, output):
                y_pred, y = output
                self.total += (y_pred - y).abs().sum()
                self.tally("n", y.numel())      # a count known on the host

            def compute(self):
                return (self.total / self.n).item()

        MeanAbsolute().attach(evaluator, "mae")

    A metric written PyTorch-Ignite's way (state in plain attributes set by
    ``reset``, ``compute`` decorated with ``@sync_all_reduce(...)``, see
    :mod:`distengine.metrics.ignite_style`) works too: as in Ignite, the
    constructor calls ``reset()`` and such a metric's ``device`` defaults to
    the CPU (its inputs are left where they are).
    """

    #: Each rank accumulates its own state: a checkpoint keeps every rank's.
    checkpoint_per_rank = True
    #: Attributes (PyTorch-Ignite's convention) that :meth:`state_dict` saves besides the states.
    _state_dict_all_req_keys: tuple[str, ...] = ()
    #: The key of PyTorch-Ignite's per-rank form, which :meth:`load_state_dict` also takes.
    __state_dict_key_per_rank = PER_RANK
    #: Keys read, in this order, from an engine output that is a mapping.
    required_output_keys: tuple[str, ...] | None = ("y_pred", "y")

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
        metrics_result_mode: str = "both",
    ) -> None:
        if not callable(output_transform):
            raise TypeError(
                f"Argument output_transform should be callable, got {output_transform!r}"
            )
        if metrics_result_mode not in _RESULT_MODES:
            raise ValueError(
                f"Argument metrics_result_mode should be one of {_RESULT_MODES}, "
                f"got {metrics_result_mode!r}"
            )
        self._metrics_result_mode = metrics_result_mode
        self._output_transform = output_transform
        if device is None and self._ignite_style:
            device = "cpu"  # Ignite's default, which its style of metric relies on
        self._device = torch.device(device) if device is not None else None
        self._input_device = None if self._ignite_style else self._device
        self._double_dtype = torch.float64  # as Ignite's metrics read it
        self._skip_unrolling = skip_unrolling
        self._specs: dict[str, StateSpec] = {}
        self._synced = False
        self._cache: dict[int, Any] = {}
        self._host_counts: dict[str, int] = {}
        if self._reset_on_init and type(self).reset is not Metric.reset:
            self.reset()  # as Ignite's constructor does: a subclass's reset sets its state

    #: Whether the constructor calls an overridden ``reset`` (as Ignite's does).
    _reset_on_init = True
    #: Whether a subclass uses Ignite's decorators (its state lives in plain attributes).
    _ignite_style = False
    #: The ``@sync_all_reduce`` compute whose attributes join the engine's one reduction.
    _ignite_sync_method: Callable[..., Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods = [cls.__dict__.get(name) for name in ("reset", "update", "compute")]
        if any(getattr(method, "_decorated", False) for method in methods):
            cls._ignite_style = True
        if getattr(cls.__dict__.get("compute"), "_sync_all_reduce", None):
            cls._ignite_sync_method = cls.__dict__["compute"]
        elif "compute" in cls.__dict__:
            cls._ignite_sync_method = None
        if "compute" in cls.__dict__ and not getattr(
            cls.__dict__["compute"], "__isabstractmethod__", False
        ):
            cls.compute = _reducing(cls.__dict__["compute"])
        update = cls.__dict__.get("update")
        if update is not None and not getattr(update, "__isabstractmethod__", False):
            if not getattr(update, "_moves_inputs", False):
                cls.update = _on_device(update)

    # ------------------------------------------------------------------ state
    def add_state(
        self, name: str, default: torch.Tensor | None = None, reduce: str = "sum"
    ) -> None:
        """Declare ``self.<name>``: reset to ``default``, combined across ranks by ``reduce``.

        ``reduce="cat"`` makes a list that ``update`` appends tensors to;
        ``compute`` sees them concatenated over updates and ranks.
        ``default=None`` (sum only) is a state shaped by the first update.
        """
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if default is None and reduce not in ("sum", "cat"):
            raise ValueError(f"state {name!r}: only 'sum' states may start as None (lazy)")
        spec = StateSpec(name, reduce, default)
        self._specs[name] = spec
        setattr(self, name, spec.fresh(self._device))

    def reset(self) -> None:
        """Forget everything seen: every declared state back to its default."""
        for spec in self._specs.values():
            setattr(self, spec.name, spec.fresh(self._device))
        self._host_counts.clear()

    def tally(self, name: str, n: int) -> None:
        """Add ``n`` to the sum state ``name`` on the host: counts known from shapes
        (examples seen) cost no device operation per batch."""
        self._host_counts[name] = self._host_counts.get(name, 0) + n

    def flush_counts(self) -> None:
        """Fold host-side counts into their state tensors (before a reduction or a save)."""
        declare_shadows(self)  # Ignite-style attributes, as states the reduction carries
        for name, n in self._host_counts.items():
            setattr(self, name, getattr(self, name) + n)
        self._host_counts.clear()

    def _follow(self, tensor: torch.Tensor) -> None:
        """Move fixed states to the data's device on first use (when no device was given)."""
        if self._device is not None:
            return
        self._device = tensor.device
        for spec in self._specs.values():
            value = getattr(self, spec.name)
            if isinstance(value, torch.Tensor):
                setattr(self, spec.name, value.to(self._device))

    def dependencies(self) -> list[Metric]:
        """Metrics this one is computed from (reduced and updated with it)."""
        return []

    @abstractmethod
    def update(self, output: Any) -> None:
        """Accumulate one batch's (transformed) engine output."""

    @abstractmethod
    def compute(self) -> Any:
        """The metric's value from the (reduced) state."""

    def state_dict(self) -> dict[str, Any]:
        """This rank's accumulated (unreduced) state, for checkpoints (one per rank): the
        declared states and the attributes named in ``_state_dict_all_req_keys`` (Ignite's)."""
        self.flush_counts()
        state = {}
        for spec in self._specs.values():
            value = getattr(self, spec.name)
            state[spec.name] = list(value) if isinstance(value, list) else value
        state.update(attribute_state(self))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (or this rank's entry of PyTorch-Ignite's per-rank
        form); errors name missing or unexpected keys."""
        state_dict = this_ranks(state_dict, self)
        declare_shadows(self)
        attributes = attribute_keys(self)
        missing = (set(self._specs) | set(attributes)) - set(state_dict)
        listed = getattr(type(self), "_state_dict_all_req_keys", ())  # carried ones: ignored
        unexpected = set(state_dict) - set(self._specs) - set(attributes) - set(listed)
        if missing or unexpected:
            raise ValueError(
                "Incorrect state_dict object. Argument state_dict should be a dictionary "
                f"provided by Metric.state_dict(): {type(self).__name__} state dict: missing "
                f"{sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        restore_attributes(self, state_dict)
        device = self._device
        for name in self._specs:
            value = state_dict[name]
            if isinstance(value, list):
                value = [v.to(device) if device is not None else v for v in value]
            elif isinstance(value, torch.Tensor) and device is not None:
                value = value.to(device)
            setattr(self, name, value)
        self._host_counts.clear()
        restore_from_shadows(self)

    def load_per_rank_state_dicts(self, states: list[dict[str, Any]]) -> None:
        """Restore the states of another number of ranks (contract C1), so the value is kept.

        Rank 0 takes every saved rank's state combined by each state's
        reduction (sums added, lists joined, max/min taken); the other ranks
        start their sum and ``cat`` states empty and share the max/min, so the
        reduced value over the new ranks is the one over the saved ranks.
        """
        declare_shadows(self)  # Ignite-style attributes travel as declared states too
        attributes = attribute_keys(self)
        if attributes:
            raise ValueError(
                f"{type(self).__name__} keeps {attributes} (its _state_dict_all_req_keys) per "
                f"rank: a state saved by {len(states)} ranks cannot be loaded on "
                f"{get_world_size()}; resume with {len(states)} ranks"
            )
        merged = {}
        for name, spec in self._specs.items():
            values = [state[name] for state in states if state.get(name) is not None]
            if get_rank() != 0 and spec.reduce in ("sum", "cat"):
                merged[name] = spec.fresh(None)
            elif spec.reduce == "cat":
                merged[name] = [item for value in values for item in value]
            elif not values:
                merged[name] = None
            else:
                combine = {"sum": operator.add, "max": torch.maximum, "min": torch.minimum}
                merged[name] = functools.reduce(combine[spec.reduce], values)
        self.load_state_dict(merged)

    # ------------------------------------------------------------- engine use
    def attach(
        self,
        engine: Engine,
        name: str | None = None,
        usage: str | MetricUsage = "epoch_wise",
    ) -> None:
        """Update on ``engine``'s iterations and publish in ``engine.state.metrics[name]``.

        ``usage`` (a :class:`~distengine.metrics.MetricUsage` or its name):
        ``epoch_wise`` (reset each epoch, value at epoch end), ``batch_wise``
        (value of each batch), ``running`` (the epoch so far, after each
        batch), or PyTorch-Ignite's ``running_batch_wise``,
        ``running_epoch_wise``, ``single_epoch_running_batch_wise`` and
        ``BatchFiltered(every=k)``. All metrics of one engine are reduced
        together.

        Example::

            Accuracy().attach(evaluator, "accuracy")
            Accuracy().attach(trainer, "acc_so_far", usage=RunningBatchWise())
        """
        from distengine.metrics.group import MetricGroup
        from distengine.metrics.usage import as_usage

        MetricGroup.of(engine).add(self, name, as_usage(usage))

    def detach(self, engine: Engine, usage: str | MetricUsage | None = None) -> None:
        """Stop updating on ``engine`` and remove its value from ``state.metrics``.

        With ``usage``, only an attachment with that usage is removed.
        """
        from distengine.metrics.group import MetricGroup
        from distengine.metrics.usage import as_usage

        MetricGroup.of(engine).remove(self, None if usage is None else as_usage(usage))

    def is_attached(self, engine: Engine, usage: str | MetricUsage | None = None) -> bool:
        """Whether this metric is attached to ``engine`` (with ``usage``, if given)."""
        from distengine.metrics.group import MetricGroup
        from distengine.metrics.usage import as_usage

        return MetricGroup.of(engine).has(self, None if usage is None else as_usage(usage))

    def started(self, engine: Engine) -> None:
        """Reset (PyTorch-Ignite's handler name): ``engine.add_event_handler(e, m.started)``."""
        self.reset()

    @torch.no_grad()
    def iteration_completed(self, engine: Engine) -> None:
        """Update with ``engine.state.output``, transformed as ``attach`` would feed it.

        Example::

            engine.add_event_handler(Events.ITERATION_COMPLETED, metric.iteration_completed)
        """
        self._feed(engine.state.output)

    def completed(self, engine: Engine, name: str) -> None:
        """Compute (reduced over ranks) and publish in ``engine.state.metrics[name]``.

        A mapping value also publishes each of its keys; a 0-d tensor becomes a float.

        Example::

            engine.add_event_handler(Events.EPOCH_COMPLETED, metric.completed, "acc")
        """
        from distengine.metrics.group import publish

        publish(engine, name, self.compute(), True, getattr(self, "_metrics_result_mode", "both"))

    def _feed(self, output: Any) -> None:
        """``update`` with the engine's output: transformed, keys picked, lists unrolled."""
        value = self._output_transform(output)
        if type(value) is tuple and value and type(value[0]) is torch.Tensor:
            self.update(value)  # the usual (y_pred, y): nothing to pick or unroll
            return
        if isinstance(value, Mapping):
            value = picked(value, self.required_output_keys, type(self).__name__)
        pairs = None if self._skip_unrolling else unrolled(value)
        if pairs is None:
            self.update(value)
            return
        for pair in pairs:
            self.update(pair)

    # ------------------------------------------------------------- arithmetic
    def _combine(self, other: Any, op: Callable[[Any, Any], Any], reverse: bool = False):
        from distengine.metrics.metrics_lambda import MetricsLambda

        return MetricsLambda((lambda a, b: op(b, a)) if reverse else op, self, other)

    def __add__(self, other):
        return self._combine(other, operator.add)

    def __radd__(self, other):
        return self._combine(other, operator.add, reverse=True)

    def __sub__(self, other):
        return self._combine(other, operator.sub)

    def __rsub__(self, other):
        return self._combine(other, operator.sub, reverse=True)

    def __mul__(self, other):
        return self._combine(other, operator.mul)

    def __rmul__(self, other):
        return self._combine(other, operator.mul, reverse=True)

    def __truediv__(self, other):
        return self._combine(other, operator.truediv)

    def __rtruediv__(self, other):
        return self._combine(other, operator.truediv, reverse=True)

    def __pow__(self, other):
        return self._combine(other, operator.pow)

    def __rpow__(self, other):
        return self._combine(other, operator.pow, reverse=True)

    def __mod__(self, other):
        return self._combine(other, operator.mod)

    def __floordiv__(self, other):
        return self._combine(other, operator.floordiv)

    def __getitem__(self, index):
        return self._combine(index, operator.getitem)

    def __neg__(self):
        from distengine.metrics.metrics_lambda import MetricsLambda

        return MetricsLambda(operator.neg, self)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name in _BOOKKEEPING:  # a subclass whose __init__ never called Metric's (as Ignite's
            value = _BOOKKEEPING[name]()  # tests do): an empty one of its own, made once
            self.__dict__[name] = value
            return value
        # a method of the metric's tensor value, e.g. (precision * 2).mean(), cm.diag();
        # anything else (a typo such as .atach) is an error, not a silent new metric
        if name.startswith("_") or not callable(getattr(torch.Tensor, name, None)):
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r} (only methods of "
                "torch.Tensor, such as .mean() or .item(), make a new metric from a metric's value)"
            )
        from distengine.metrics.metrics_lambda import MetricsLambda

        def method(*args: Any, **kwargs: Any) -> MetricsLambda:
            return MetricsLambda(lambda value: getattr(value, name)(*args, **kwargs), self)

        return method
